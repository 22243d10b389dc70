"""Fixtures for the workload controller and garbage collector tests: a real API server process, the
Deployment, ReplicaSet, DaemonSet and garbage collector controllers running in the test's event loop
on shared informers, and a stand-in kubelet that makes pods Running and Ready and finishes graceful
deletions (there is no kubelet in these tests).

Import ``cluster_fixture`` (the fixture ``cluster``) and ``workload_apiserver`` into a test module.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from minikube_py.client.informer import Informer, key_of
from minikube_py.client.rest import APIClient, ApiStatusError
from minikube_py.controllers.base import Controller, ControllerContext, SharedInformers
from minikube_py.controllers.daemonset import DaemonSetController
from minikube_py.controllers.deployment import DeploymentController
from minikube_py.controllers.events import EventRecorder
from minikube_py.controllers.garbagecollector import GarbageCollector
from minikube_py.controllers.podutil import is_ready, is_terminating
from minikube_py.controllers.replicaset import ReplicaSetController
from tests import helpers
from tests.apiserver.conftest import LocalAPIServer, running_apiserver

# Pods with this label are left Pending and not ready by the stand-in kubelet.
UNREADY_LABEL = "test.minikube-py/unready"

__all__ = ["UNREADY_LABEL", "Cluster", "cluster_fixture", "eventually", "workload_apiserver"]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StandInKubelet:
    """Makes every pod of one namespace Running and Ready ``ready_delay`` seconds after it first sees
    it (a slow start makes the controllers' availability decisions matter), and deletes pods whose
    graceful deletion started (as a kubelet does once the containers stopped)."""

    def __init__(self, client: APIClient, namespace: str, ready_delay: float = 0.0) -> None:
        self.client = client
        self.ready_delay = ready_delay
        self.pods = Informer(client, "pods", namespace)
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._first_seen: dict[str, float] = {}
        self._ip = 0

    async def start(self) -> None:
        self.pods.add_handlers(lambda p: self._queue.put_nowait(key_of(p)),
                               lambda _o, p: self._queue.put_nowait(key_of(p)))
        await self.pods.start()
        self._task = asyncio.create_task(self._work())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.pods.stop()

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            pod = self.pods.get(key)
            if pod is None:
                continue
            try:
                await self._handle(pod)
            except ApiStatusError as e:
                if e.code == 409:
                    self._queue.put_nowait(key)  # changed meanwhile: the newer version comes as an event
                elif e.code != 404:
                    logging.getLogger(__name__).warning("stand-in kubelet: %s: %s", key, e)

    async def _handle(self, pod: dict[str, Any]) -> None:
        m = pod["metadata"]
        if is_terminating(pod):
            await self.client.delete("pods", m["name"], m["namespace"], grace_period_seconds=0)
            return
        if is_ready(pod) or (m.get("labels") or {}).get(UNREADY_LABEL) or \
                (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        loop = asyncio.get_running_loop()
        seen = self._first_seen.setdefault(m["uid"], loop.time())
        wait = seen + self.ready_delay - loop.time()
        if wait > 0:
            loop.call_later(wait, self._queue.put_nowait, key_of(pod))
            return
        now = _now()
        self._ip += 1
        new = copy.deepcopy(pod)
        containers = (pod.get("spec") or {}).get("containers") or []
        new["status"] = {
            **(pod.get("status") or {}), "phase": "Running", "startTime": now,
            "podIP": f"10.244.0.{self._ip % 250 + 2}", "hostIP": "127.0.0.1",
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": now}
                           for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [{"name": c.get("name"), "image": c.get("image"), "imageID": "",
                                   "ready": True, "started": True, "restartCount": 0,
                                   "state": {"running": {"startedAt": now}}} for c in containers],
        }
        await self.client.update_status("pods", new)


@dataclass
class Cluster:
    server: LocalAPIServer
    client: APIClient
    ns: str
    ctx: ControllerContext
    controllers: dict[str, Controller] = field(default_factory=dict)
    kubelet: StandInKubelet | None = None
    nodes: list[str] = field(default_factory=list)

    async def create_node(self, name: str, labels: dict[str, str] | None = None,
                          taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
                "spec": {"taints": taints} if taints else {},
                "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                           "lastHeartbeatTime": _now(), "lastTransitionTime": _now()}],
                           "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}
        self.nodes.append(name)
        return await self.client.create("nodes", node)

    def deployment(self, name: str, replicas: int, image: str = "demo/web:1", **spec: Any) -> dict[str, Any]:
        return {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": self.ns},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                         "template": pod_template(name, image), **spec}}

    async def pods(self, label_selector: str | None = None, *, active: bool = True) -> list[dict[str, Any]]:
        items, _ = await self.client.list_all("pods", self.ns, label_selector=label_selector)
        return [p for p in items if not active or not is_terminating(p)]

    async def rollout_done(self, name: str) -> dict[str, Any] | None:
        """The Deployment once ``kubectl rollout status`` would call it successfully rolled out."""
        d = await self.client.get("deployments.apps", name, self.ns)
        st, want = d.get("status") or {}, d["spec"]["replicas"]
        if (int(st.get("observedGeneration") or 0) >= d["metadata"]["generation"]
                and st.get("updatedReplicas", 0) == want and st.get("replicas", 0) == want
                and st.get("availableReplicas", 0) == want):
            return d
        return None


def pod_template(app: str, image: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": app}},
            "spec": {"containers": [{"name": "main", "image": image}], "terminationGracePeriodSeconds": 5}}


eventually = functools.partial(helpers.eventually, timeout=30.0, interval=0.05)


@pytest.fixture(scope="module")
def workload_apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAPIServer]:
    with running_apiserver(tmp_path_factory.mktemp("workloads") / "data") as server:
        yield server


@pytest.fixture(name="cluster")
async def cluster_fixture(workload_apiserver: LocalAPIServer) -> AsyncIterator[Cluster]:
    """A fresh namespace with every workload controller and the stand-in kubelet running."""
    server = workload_apiserver
    client = server.api_client()
    ns = f"wl-{uuid.uuid4().hex[:8]}"
    informers = SharedInformers(client)
    ctx = ControllerContext(client, informers, EventRecorder(client, "kube-controller-manager"))
    c = Cluster(server, client, ns, ctx)
    tasks: list[asyncio.Task[None]] = []
    try:
        await client.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for cls in (ReplicaSetController, DeploymentController, DaemonSetController, GarbageCollector):
            ctrl = cls(ctx)
            c.controllers[ctrl.name] = ctrl
        await informers.start()
        assert await informers.wait_synced(30), "informers did not sync"
        tasks = [asyncio.create_task(ctrl.run(), name=name) for name, ctrl in c.controllers.items()]
        c.kubelet = StandInKubelet(client, ns)
        await c.kubelet.start()
        yield c
    finally:
        for ctrl in c.controllers.values():
            ctrl.shutdown()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if c.kubelet is not None:
            await c.kubelet.stop()
        await informers.stop()
        await _clean(client, ns, c.nodes)
        await client.close()


async def _clean(client: APIClient, ns: str, nodes: list[str]) -> None:
    """Leave nothing that a later test's controllers would act on (there is no namespace controller)."""
    for res in ("deployments.apps", "daemonsets.apps", "replicasets.apps", "pods"):
        with contextlib.suppress(ApiStatusError):
            items, _ = await client.list_all(res, ns)
            for obj in items:
                m = obj["metadata"]
                with contextlib.suppress(ApiStatusError):
                    if m.get("finalizers"):
                        await client.patch(res, m["name"], {"metadata": {"finalizers": None}}, ns)
                    await client.delete(res, m["name"], ns, grace_period_seconds=0,
                                        propagation_policy="Background")
    for name in nodes:
        with contextlib.suppress(ApiStatusError):
            await client.delete("nodes", name)
