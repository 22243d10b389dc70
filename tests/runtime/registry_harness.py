"""Debian's docker-registry (distribution 2.8) on 127.0.0.1 for tests: a free port, a private temp
storage directory, and a stop by the PID this harness started (a registry service installed on the
machine is never touched)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

REGISTRY_BINARY = "docker-registry"

_CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: minikube-py-tests
"""


def registry_available() -> bool:
    return shutil.which(REGISTRY_BINARY) is not None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRegistry:
    """``with LocalRegistry(tmp) as reg:`` -> ``reg.address`` is ``127.0.0.1:PORT``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.storage = self.workdir / "storage"
        self.log_path = self.workdir / "registry.log"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def blob_data(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes (to corrupt it in tests)."""
        hexpart = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"

    def start(self, timeout: float = 15.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Another process may grab the free port between our probe and the registry's bind: retry.
        for _ in range(3):
            self.port = _free_port()
            config = self.workdir / "config.yml"
            config.write_text(_CONFIG.format(storage=self.storage, port=self.port))
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen([REGISTRY_BINARY, "serve", str(config)],
                                              stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            if self._wait_ready(timeout):
                return
            self.stop()
        raise RuntimeError(f"docker-registry did not start; log:\n{self.log_path.read_text()[-2000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> LocalRegistry:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
