"""Real etcd members on loopback that speak only TLS and require client certificates.

Each member serves clients on ``https://127.0.0.1:PORT`` with ``--client-cert-auth`` and talks to its
peers over TLS with ``--peer-client-cert-auth``, every certificate from ``minikube-py pki etcd``
(etcd's own CA). A cluster CA (``pki init``) is made beside it, so tests have a certificate that is
valid for the API server but must be refused by etcd. Only processes started here are signalled, by
PID; ports come from the kernel, so a system etcd on 2379/2380 is never touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
from aetcd import rpc

from minikube_py.localcluster import free_port
from minikube_py.pki import EtcdMember, ensure_etcd_pki, ensure_pki

from .etcd_harness import ELECTION_TIMEOUT_MS, ETCD_BINARY, HEARTBEAT_MS, MAX_REQUEST_BYTES


@dataclass
class _TLSMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"https://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://127.0.0.1:{self.peer_port}"


class TLSEtcdCluster:
    """``members`` etcd processes on 127.0.0.1 with client and peer TLS; PKI in ``workdir/pki``."""

    def __init__(self, workdir: Path, members: int = 1) -> None:
        self.workdir = Path(workdir)
        self.pki_dir = self.workdir / "pki"
        self.size = members
        self._members: list[_TLSMember] = []

    # -- the PKI ---------------------------------------------------------------------------------

    @property
    def etcd_ca(self) -> Path:
        return self.pki_dir / "etcd" / "ca.crt"

    @property
    def cluster_ca(self) -> Path:
        return self.pki_dir / "ca.crt"

    def pair(self, stem: str) -> tuple[Path, Path]:
        """(cert, key) of a pair under the PKI dir, e.g. ``"apiserver-etcd-client"``, ``"admin"``."""
        return self.pki_dir / f"{stem}.crt", self.pki_dir / f"{stem}.key"

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        names = [f"m{i}" for i in range(self.size)]
        ensure_etcd_pki(self.pki_dir, [EtcdMember(n, ("127.0.0.1",)) for n in names])
        ensure_pki(self.pki_dir)  # the cluster CA and its admin pair: valid, but not for etcd
        for name in names:
            base = self.workdir / name
            base.mkdir(parents=True, exist_ok=True)
            self._members.append(_TLSMember(name, free_port(), free_port(), base / "data", base / "etcd.log"))
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self._members)
        token = f"minikube-py-tls-{uuid.uuid4().hex[:12]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        etcd = self.pki_dir / "etcd"
        try:
            for m in self._members:
                flags = {
                    "name": m.name,
                    "data-dir": str(m.data_dir),
                    "listen-client-urls": m.client_url,
                    "advertise-client-urls": m.client_url,
                    "listen-peer-urls": m.peer_url,
                    "initial-advertise-peer-urls": m.peer_url,
                    "initial-cluster": initial,
                    "initial-cluster-state": "new",
                    "initial-cluster-token": token,
                    "heartbeat-interval": str(HEARTBEAT_MS),
                    "election-timeout": str(ELECTION_TIMEOUT_MS),
                    "max-request-bytes": str(MAX_REQUEST_BYTES),
                    "client-cert-auth": "true",
                    "trusted-ca-file": str(etcd / "ca.crt"),
                    "cert-file": str(etcd / f"server-{m.name}.crt"),
                    "key-file": str(etcd / f"server-{m.name}.key"),
                    "peer-client-cert-auth": "true",
                    "peer-trusted-ca-file": str(etcd / "ca.crt"),
                    "peer-cert-file": str(etcd / f"peer-{m.name}.crt"),
                    "peer-key-file": str(etcd / f"peer-{m.name}.key"),
                    "logger": "zap",
                    "log-outputs": "stderr",
                    "log-level": "warn",
                }
                with open(m.log_path, "wb") as log:
                    m.process = subprocess.Popen(
                        [ETCD_BINARY, *(f"--{k}={v}" for k, v in flags.items())],
                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                    )
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for m in self._members:
                if m.process is not None and m.process.poll() is not None:
                    raise RuntimeError(f"etcd {m.name} exited with {m.process.returncode}: {self.log_tail(m.name)}")
            leaders = {self._leader(i) for i in range(self.size)}
            if len(leaders) == 1 and None not in leaders and 0 not in leaders:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"TLS etcd not healthy after {timeout}s: "
                                   + "; ".join(self.log_tail(m.name) for m in self._members))
            time.sleep(0.1)

    def _leader(self, index: int) -> int | None:
        cert, key = self.pair("etcd/healthcheck-client")
        creds = grpc.ssl_channel_credentials(self.etcd_ca.read_bytes(), key.read_bytes(), cert.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{self._members[index].client_port}", creds) as channel:
            try:
                return int(rpc.MaintenanceStub(channel).Status(rpc.StatusRequest(), timeout=0.5).leader)
            except grpc.RpcError:
                return None

    def stop(self) -> None:
        """SIGKILL every member still running (by PID) and reap it. Safe to call twice."""
        for m in self._members:
            if m.process is not None and m.process.poll() is None:
                os.kill(m.process.pid, signal.SIGKILL)
            if m.process is not None:
                m.process.wait(timeout=10)

    def kill(self, index: int) -> None:
        proc = self._members[index].process
        assert proc is not None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    # -- inspection ------------------------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        """``https://127.0.0.1:PORT`` per member."""
        return [m.client_url for m in self._members]

    def log_tail(self, name: str) -> str:
        m = next(m for m in self._members if m.name == name)
        try:
            return m.log_path.read_text(errors="replace")[-600:]
        except OSError:
            return "(no log)"
