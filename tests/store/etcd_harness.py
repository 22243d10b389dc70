"""Real etcd members on loopback for tests: one process per member, free ports, private data dirs.

Only processes this harness started are ever signalled, by their PID; a system etcd (the Debian
package installs a service on 2379/2380) is never touched because every member here listens on
ports the kernel handed out for this run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
from aetcd import rpc

from minikube_py.localcluster import free_port

ETCD_BINARY = "etcd"

# Tuned for loopback: a member is declared dead after 500 ms instead of 1 s, so a killed leader
# is replaced in well under a second (measured 0.24 s). The minimum lease TTL etcd enforces
# follows from these (1.5 election timeouts, rounded up: 1 s).
HEARTBEAT_MS = 50
ELECTION_TIMEOUT_MS = 500

# The store accepts values up to 1.5 MiB (MAX_VALUE_BYTES); etcd's default request limit is exactly
# 1.5 MiB including the key and framing, so give the members headroom as a deployment must too.
MAX_REQUEST_BYTES = 2 * 1024 * 1024


def etcd_available() -> bool:
    """True when an etcd server binary is on PATH."""
    return shutil.which(ETCD_BINARY) is not None


@dataclass
class _Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    scheme: str = "http"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.peer_port}"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"


class EtcdCluster:
    """``members`` etcd processes forming one cluster on 127.0.0.1."""

    scheme = "http"

    def __init__(self, workdir: Path, members: int = 1) -> None:
        if members < 1:
            raise ValueError("an etcd cluster needs at least one member")
        self.workdir = Path(workdir)
        self.size = members
        self._members: list[_Member] = []
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        """Start every member and wait until each reports the same leader."""
        if self._started:
            raise RuntimeError("cluster already started")
        if not etcd_available():
            raise RuntimeError("etcd binary not found on PATH")
        self._started = True
        token = f"minikube-py-test-{uuid.uuid4().hex[:12]}"
        self._members = []
        self._prepare([f"m{i}" for i in range(self.size)])
        for i in range(self.size):
            base = self.workdir / f"member{i}"
            base.mkdir(parents=True, exist_ok=True)
            self._members.append(
                _Member(
                    name=f"m{i}",
                    client_port=free_port(),
                    peer_port=free_port(),
                    data_dir=base / "data",
                    log_path=base / "etcd.log",
                    scheme=self.scheme,
                )
            )
        initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self._members)
        # Keep only what etcd needs from our environment: ETCD_* variables would override flags.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        try:
            for m in self._members:
                with open(m.log_path, "wb") as log:
                    flags = {
                        "name": m.name,
                        "data-dir": str(m.data_dir),
                        "listen-client-urls": m.client_url,
                        "advertise-client-urls": m.client_url,
                        "listen-peer-urls": m.peer_url,
                        "initial-advertise-peer-urls": m.peer_url,
                        "initial-cluster": initial_cluster,
                        "initial-cluster-state": "new",
                        "initial-cluster-token": token,
                        "heartbeat-interval": str(HEARTBEAT_MS),
                        "election-timeout": str(ELECTION_TIMEOUT_MS),
                        "max-request-bytes": str(MAX_REQUEST_BYTES),
                        "logger": "zap",
                        "log-outputs": "stderr",
                        "log-level": "warn",
                        **self._extra_flags(m),
                    }
                    m.process = subprocess.Popen(
                        [ETCD_BINARY, *(f"--{name}={value}" for name, value in flags.items())],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    # -- what a subclass changes (TLS) --------------------------------------------------------------

    def _prepare(self, names: list[str]) -> None:
        """Called before the members start, with their names."""

    def _extra_flags(self, m: _Member) -> dict[str, str]:
        return {}

    def _channel(self, endpoint: str) -> grpc.Channel:
        return grpc.insecure_channel(endpoint)

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for m in self._members:
                if m.process is not None and m.process.poll() is not None:
                    raise RuntimeError(f"etcd member {m.name} exited with {m.process.returncode}: {self._log_tail(m)}")
            leaders = {self._status(i, 0.5) for i in range(self.size)}
            if len(leaders) == 1 and None not in leaders and 0 not in leaders:
                return
            if time.monotonic() > deadline:
                logs = "; ".join(f"{m.name}: {self._log_tail(m)}" for m in self._members)
                raise TimeoutError(f"etcd cluster not healthy after {timeout}s ({logs})")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGKILL every member still running and remove their data. Safe to call twice."""
        for m in self._members:
            proc = m.process
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            if proc is not None:
                proc.wait(timeout=10)
        for m in self._members:
            shutil.rmtree(m.data_dir, ignore_errors=True)
        self._started = False

    def kill(self, index: int) -> None:
        """SIGKILL one member (by the PID we started) and reap it."""
        proc = self._members[index].process
        if proc is None:
            raise RuntimeError(f"member {index} was never started")
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    # -- inspection ------------------------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        """Client endpoints, ``127.0.0.1:PORT``, in member order."""
        return [m.endpoint for m in self._members]

    @property
    def urls(self) -> list[str]:
        """``SCHEME://127.0.0.1:PORT`` per member."""
        return [m.client_url for m in self._members]

    def alive(self, index: int) -> bool:
        proc = self._members[index].process
        return proc is not None and proc.poll() is None

    def leader_index(self, timeout: float = 10.0) -> int:
        """Index of the member that is leader now, as the live members agree."""
        deadline = time.monotonic() + timeout
        while True:
            ids = {i: self._member_id(i) for i in range(self.size) if self.alive(i)}
            leaders = {self._status(i, 0.5) for i in ids}
            if len(leaders) == 1:
                (leader,) = leaders
                for i, member_id in ids.items():
                    if leader and member_id == leader:
                        return i
            if time.monotonic() > deadline:
                raise TimeoutError("no agreed etcd leader")
            time.sleep(0.05)

    def _member_id(self, index: int) -> int | None:
        resp = self._status_response(index, 0.5)
        return None if resp is None else int(resp.header.member_id)

    def _status(self, index: int, timeout: float) -> int | None:
        resp = self._status_response(index, timeout)
        return None if resp is None else int(resp.leader)

    def _status_response(self, index: int, timeout: float) -> rpc.StatusResponse | None:
        with self._channel(self._members[index].endpoint) as channel:
            try:
                return rpc.MaintenanceStub(channel).Status(rpc.StatusRequest(), timeout=timeout)
            except grpc.RpcError:
                return None

    def log_tail(self, name: str) -> str:
        return self._log_tail(next(m for m in self._members if m.name == name))

    def _log_tail(self, m: _Member) -> str:
        try:
            return m.log_path.read_text(errors="replace")[-600:]
        except OSError:
            return "(no log)"
