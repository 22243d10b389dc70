"""One real node on this machine for the kubelet tests: a local docker-registry holding the demo images,
the runtime daemon (``minikube-py runtime`` with the registry-backed image store) on a private socket,
dirs, bridge and pod CIDR, and ``minikube-py kubelet`` against a real API server.

Everything a test leaves (pods, netns, veths, mounts, runc state, the bridge, cgroups) is swept by
``RegistryRuntime.sweep`` (inherited from the runtime tests' harness), even when the test failed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.runtime.runtime_fixtures import CNI_BIN_DIR, REPO, RuntimeDaemon

# Never routed anywhere: the pods of these tests talk only over the test bridge to this machine.
POD_CIDR = "10.244.251.0/24"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RegistryRuntime(RuntimeDaemon):
    """The runtime daemon as deployed: the real CLI, images pulled from ``registry``."""

    registry: str = ""

    def start(self, timeout: float = 20.0) -> None:
        args = ["--root-dir", str(self.root_dir), "--state-dir", str(self.state_dir), "--socket", str(self.socket),
                "--cni-conf-dir", str(self.conf_dir), "--cni-bin-dir", str(CNI_BIN_DIR), "--cni-bridge", self.bridge,
                "--cni-network", self.network, "--cgroup-parent", self.cgroup_parent, "--runc", self.runc,
                "--default-registry", self.registry, "-v"]
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "minikube_py", "runtime", *args],
                                         stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
                                         cwd=REPO)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if "serving on" in line or not line:
                break
        if "serving on" not in line:
            self.stop()
            raise RuntimeError(f"runtime daemon did not start: {self.log_path.read_text()[-3000:]}")


@dataclass
class KubeletProcess:
    base: Path
    kubeconfig: Path
    runtime_socket: Path
    node_name: str
    extra: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen[str] | None = None

    @property
    def root_dir(self) -> Path:
        return self.base / "kubelet"

    @property
    def log_dir(self) -> Path:
        return self.base / "pods-logs"

    @property
    def log_path(self) -> Path:
        return self.base / "kubelet.log"

    def start(self, timeout: float = 30.0) -> None:
        self.port = free_port()
        args = ["--kubeconfig", str(self.kubeconfig), "--hostname-override", self.node_name,
                "--node-ip", "127.0.0.1", "--runtime-endpoint", str(self.runtime_socket),
                "--root-dir", str(self.root_dir), "--pod-log-dir", str(self.log_dir), "--bind-address", "127.0.0.1",
                "--port", str(self.port), "--healthz-port", "0", "--insecure-http", "--host-gw-routes=false",
                # Plain HTTP carries no client certificate: the API server's calls come in anonymously, so
                # this test kubelet opens its API (the secured one is tests/security/test_kubelet_auth.py).
                "--anonymous-auth=true", "--authorization-mode", "AlwaysAllow",
                "--node-status-update-frequency", "1s", "--sync-frequency", "0.5s",
                "--housekeeping-interval", "2s", "-v", *self.extra]
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "minikube_py", "kubelet", *args],
                                         stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
                                         cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if "serving on port" in line or not line:
                break
        if "serving on port" not in line:
            self.stop()
            raise RuntimeError(f"kubelet did not start: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None
