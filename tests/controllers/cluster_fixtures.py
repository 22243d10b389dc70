"""Fixtures for the cluster controller tests: a real API server process, a controller-manager running
in the test's event loop (or as processes), and helpers that play the kubelet's part on the wire —
node status and Lease heartbeats, pods made Running/Ready — since no kubelet runs in these tests.

Import into a test module: ``from tests.controllers.cluster_fixtures import *``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from minikube_py.client.rest import APIClient, ApiStatusError
from minikube_py.controllers.manager import ControllerManager
from tests import helpers
from tests.apiserver.conftest import REPO, LocalAPIServer, running_apiserver

__all__ = [
    "CMProcess",
    "Heartbeat",
    "ManagerFactory",
    "cluster_api",
    "cluster_client",
    "eventually",
    "make_managers",
    "make_namespace",
    "make_node",
    "make_pod",
    "node_taints",
    "now",
    "post_node_status",
    "set_pod_status",
    "start_cm_process",
    "stop_cm_process",
    "uid",
]


def uid() -> str:
    return uuid.uuid4().hex[:6]


def now(micro: bool = False) -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


# These checks may assert on what they read: an AssertionError is retried, and the last one reported.
eventually = functools.partial(helpers.eventually, timeout=15.0, interval=0.1, retry_assertions=True)


# ---- the API server and clients -----------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAPIServer]:
    with running_apiserver(tmp_path_factory.mktemp("cluster-controllers") / "data") as server:
        yield server


@pytest.fixture
async def cluster_client(cluster_api: LocalAPIServer) -> AsyncIterator[APIClient]:
    client = APIClient.from_kubeconfig(cluster_api.kubeconfig)
    try:
        yield client
    finally:
        await client.close()


ManagerFactory = Callable[..., Awaitable[ControllerManager]]


@pytest.fixture
async def make_managers(cluster_client: APIClient) -> AsyncIterator[ManagerFactory]:
    """``await make(controllers, **options)``: a controller-manager (no leader election) running in
    this event loop until the test ends; stop one early with ``await stop(mgr)`` via ``make.stop``."""
    running: list[tuple[ControllerManager, asyncio.Task[int]]] = []

    async def make(controllers: str = "*", **options: Any) -> ControllerManager:
        mgr = ControllerManager(cluster_client, controllers=controllers, options=options, leader_elect=False,
                                secure_port=0)
        task = asyncio.create_task(mgr.run())
        running.append((mgr, task))
        waiter = asyncio.create_task(mgr.leading.wait())
        await asyncio.wait([waiter, task], timeout=15, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():
            task.result()  # raise what went wrong
        assert mgr.leading.is_set(), "controller-manager did not start its controllers"
        return mgr

    async def stop(mgr: ControllerManager) -> None:
        for m, task in running:
            if m is mgr:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    make.stop = stop  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        for _, task in running:
            task.cancel()
        await asyncio.gather(*(t for _, t in running), return_exceptions=True)


# ---- objects ------------------------------------------------------------------------------------

async def make_namespace(client: APIClient, prefix: str = "cc") -> str:
    name = f"{prefix}-{uid()}"
    await client.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


async def make_node(client: APIClient, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return await client.create("nodes", {"apiVersion": "v1", "kind": "Node",
                                         "metadata": {"name": name, "labels": labels or {}}})


async def post_node_status(client: APIClient, name: str, ready: str = "True") -> dict[str, Any]:
    """What a kubelet posts: its conditions with a fresh heartbeat."""
    node = await client.get("nodes", name)
    stamp = now()
    pressure = [(t, "False") for t in ("MemoryPressure", "DiskPressure", "PIDPressure")]
    node["status"] = {**(node.get("status") or {}), "conditions": [
        {"type": t, "status": s, "reason": f"Kubelet{t}", "lastHeartbeatTime": stamp,
         "lastTransitionTime": stamp}
        for t, s in [("Ready", ready), *pressure]]}
    return await client.update_status("nodes", node)


def node_taints(node: dict[str, Any]) -> set[tuple[str, str]]:
    return {(t["key"], t["effect"]) for t in (node.get("spec") or {}).get("taints") or ()}


@dataclass
class Heartbeat:
    """A node's Lease in kube-node-lease, renewed every ``period`` while running (the kubelet's node
    lease controller)."""

    client: APIClient
    node: str
    period: float = 0.3
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    async def renew(self) -> None:
        lease = await self.client.get_or_none("leases", self.node, "kube-node-lease")
        spec = {"holderIdentity": self.node, "leaseDurationSeconds": 40, "renewTime": now(micro=True)}
        if lease is None:
            meta = {"name": self.node, "namespace": "kube-node-lease"}
            await self.client.create("leases", {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                                "metadata": meta, "spec": spec}, "kube-node-lease")
        else:
            lease["spec"] = {**lease.get("spec", {}), **spec}
            await self.client.update("leases", lease)

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(ApiStatusError):
                await self.renew()
            await asyncio.sleep(self.period)

    async def start(self) -> None:
        await self.renew()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


async def make_pod(client: APIClient, ns: str, name: str, *, labels: dict[str, str] | None = None,
                   node: str | None = None, tolerations: list[dict[str, Any]] | None = None,
                   ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "demo/web", "ports": ports or []}]}
    if node:
        spec["nodeName"] = node
    if tolerations is not None:
        spec["tolerations"] = tolerations
    return await client.create("pods", {"apiVersion": "v1", "kind": "Pod",
                                        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
                                        "spec": spec}, ns)


async def set_pod_status(client: APIClient, ns: str, name: str, *, ip: str | None,
                         ready: bool) -> dict[str, Any]:
    """Running with ``ip``, Ready or not — what a kubelet reports."""
    pod = await client.get("pods", name, ns)
    stamp = now()
    flag = "True" if ready else "False"
    pod["status"] = {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}] if ip else [], "startTime": stamp,
        "conditions": [{"type": t, "status": flag if t in ("Ready", "ContainersReady") else "True",
                        "lastTransitionTime": stamp} for t in ("Initialized", "Ready", "ContainersReady",
                                                               "PodScheduled")],
        "containerStatuses": [{"name": "c", "ready": ready, "restartCount": 0, "image": "demo/web",
                               "imageID": "", "started": True, "state": {"running": {"startedAt": stamp}}}],
    }
    if ip is None:
        del pod["status"]["podIP"]
    return await client.update_status("pods", pod)


# ---- controller-manager processes ---------------------------------------------------------------

@dataclass
class CMProcess:
    proc: subprocess.Popen[str]
    identity: str
    port: int
    log_path: Path


def start_cm_process(kubeconfig: Path, log_path: Path, *args: str, timeout: float = 30.0) -> CMProcess:
    """``minikube-py controller-manager`` as its own process; returns once its health port listens."""
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "minikube_py", "controller-manager", "--kubeconfig", str(kubeconfig),
         "--secure-port", "0", *args],
        stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    log.close()
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "serving health on port" in line or not line:
            break
    if "serving health on port" not in line:
        stop_cm_process(proc)
        raise RuntimeError(f"controller-manager did not start: {log_path.read_text()}")
    identity = line.split("identity ")[1].split(";")[0]
    port = int(line.rsplit(" ", 1)[1])
    return CMProcess(proc, identity, port, log_path)


def stop_cm_process(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
    helpers.stop_process(proc, sig, timeout)
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode
