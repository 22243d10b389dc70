"""A whole local cluster for the control-loop acceptance tests: ``minikube-py up --local`` as a
subprocess (API server, scheduler, controller-manager, 3 fake nodes), stopped with SIGTERM."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from minikube_py.client import APIClient, ApiStatusError
from tests import helpers
from tests.apiserver.conftest import KUBECTLS

REPO = Path(__file__).resolve().parents[2]
# Short enough that the node failure test takes seconds, long enough that a busy machine does not flap.
GRACE_FLAGS = ("--node-monitor-grace-period", "3s", "--pod-eviction-timeout", "2s")


def _kubectl_path() -> str | None:
    for version in ("1.33", "1.32", "1.31", "1.30", "pypi", "1.29", "1.28", "1.27"):
        if version in KUBECTLS:
            return KUBECTLS[version]
    return None


KUBECTL = _kubectl_path()
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="no kubectl binary on this machine")


@dataclass
class UpCluster:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    out_path: Path
    err_path: Path
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "admin.kubeconfig"

    def pids(self) -> dict[str, int]:
        return {name: int(c["pid"]) for name, c in self.state["children"].items()}

    def client(self) -> APIClient:
        return APIClient.from_kubeconfig(self.kubeconfig, user_agent="integration-tests")

    def kubectl(self, *args: str, check: bool = True, timeout: float = 90.0,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
        if KUBECTL is None:
            pytest.skip("no kubectl binary on this machine")
        cmd = [KUBECTL, f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.data_dir / 'kubectl-cache'}",
               *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n"
                                 f"{res.stderr}\n{self.logs_tail()}")
        return res

    def logs_tail(self, lines: int = 15) -> str:
        out = []
        for log in sorted((self.data_dir / "logs").glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(out)


def start_up(data_dir: Path, *extra: str, fake_nodes: int = 3, timeout: float = 90.0) -> UpCluster:
    """Run ``minikube-py up --local`` and wait for its "cluster ready" line."""
    data_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = data_dir.parent / f"{data_dir.name}.up.out", data_dir.parent / f"{data_dir.name}.up.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "minikube_py", "up", "--local", "--data-dir", str(data_dir), "--port", "0",
             "--fake-nodes", str(fake_nodes), *extra],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO)
    cluster = UpCluster(proc, data_dir, out_path, err_path)
    deadline = time.monotonic() + timeout
    try:
        while "cluster ready" not in out_path.read_text(errors="replace"):
            if proc.poll() is not None:
                raise RuntimeError(f"minikube-py up exited with {proc.returncode}:\n{err_path.read_text()}\n"
                                   f"{cluster.logs_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"minikube-py up did not get ready within {timeout}s:\n"
                                   f"{err_path.read_text()}\n{cluster.logs_tail()}")
            time.sleep(0.1)
        cluster.state = json.loads((data_dir / "cluster.json").read_text())
    except BaseException:
        stop_up(cluster)
        raise
    return cluster


def stop_up(cluster: UpCluster, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
    """Stop ``up`` the way a user does; kill it (and whatever children it left) if it hangs."""
    helpers.stop_process(cluster.proc, sig, timeout)
    for pid in cluster.pids().values() if cluster.state else ():
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    return int(cluster.proc.returncode)


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpCluster]:
    cluster = start_up(tmp_path_factory.mktemp("up") / "cluster", *GRACE_FLAGS)
    try:
        yield cluster
    finally:
        stop_up(cluster)


@pytest.fixture
async def api(local_cluster: UpCluster) -> AsyncIterator[APIClient]:
    async with local_cluster.client() as client:
        yield client


@pytest.fixture
async def namespace(api: APIClient) -> AsyncIterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting: the namespace controller empties it)."""
    name = f"it-{uuid.uuid4().hex[:8]}"
    await api.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    try:
        yield name
    finally:
        try:
            await api.delete("namespaces", name)
        except ApiStatusError as e:
            if e.code != 404:
                raise


eventually = functools.partial(helpers.eventually, timeout=60.0, interval=0.2)


# ---- small readers ------------------------------------------------------------------------------------

def condition(obj: dict[str, Any], ctype: str) -> str | None:
    return next((c.get("status") for c in (obj.get("status") or {}).get("conditions") or ()
                 if c.get("type") == ctype), None)


def pod_ready(pod: dict[str, Any]) -> bool:
    return condition(pod, "Ready") == "True" and not pod["metadata"].get("deletionTimestamp")


def deployment_manifest(name: str, replicas: int, image: str = "demo/web:v1", **strategy: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"containers": [{"name": "web", "image": image,
                                              "ports": [{"name": "http", "containerPort": 8080}]}]}},
    }
    if strategy:
        spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": strategy}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec}


async def pods_of(api: APIClient, namespace: str, app: str) -> list[dict[str, Any]]:
    items, _ = await api.list_all("pods", namespace, label_selector=f"app={app}")
    return items


async def wait_available(api: APIClient, namespace: str, name: str, replicas: int,
                         timeout: float = 60.0) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        d = await api.get("deployments.apps", name, namespace)
        st = d.get("status") or {}
        done = (st.get("observedGeneration", 0) >= d["metadata"].get("generation", 1)
                and st.get("availableReplicas", 0) == replicas and st.get("updatedReplicas", 0) == replicas
                and st.get("replicas", 0) == replicas)
        return d if done else None

    return await eventually(probe, f"deployment {namespace}/{name} to have {replicas} available", timeout=timeout)
