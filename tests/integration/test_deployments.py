"""Deployments on the whole local cluster (real scheduler, controller-manager and fake nodes): spreading,
a rolling update that never drops below its availability bound, rollout status and undo, and deletion
with Background and Orphan propagation."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from typing import Any

from minikube_py.client import APIClient
from tests.integration.conftest import (
    UpCluster,
    deployment_manifest,
    eventually,
    needs_kubectl,
    pod_ready,
    pods_of,
    wait_available,
)


async def test_ten_replicas_spread_over_the_three_nodes(api: APIClient, namespace: str) -> None:
    await api.create("deployments.apps", deployment_manifest("spread", 10), namespace)
    await wait_available(api, namespace, "spread", 10)
    pods = [p for p in await pods_of(api, namespace, "spread") if pod_ready(p)]
    assert len(pods) == 10
    per_node = collections.Counter(p["spec"]["nodeName"] for p in pods)
    assert set(per_node) == {"fake-node-0", "fake-node-1", "fake-node-2"}, per_node
    assert max(per_node.values()) <= 6, per_node
    assert len({p["status"]["podIP"] for p in pods}) == 10


class AvailabilityWatch:
    """Follows pods and the Deployment through one rolling update and remembers the worst moment."""

    def __init__(self, api: APIClient, namespace: str, app: str) -> None:
        self.api, self.namespace, self.app = api, namespace, app
        self.ready: dict[str, bool] = {}
        self.min_ready_pods: int | None = None
        self.min_available: int | None = None
        self.deployment_events = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        pods, pods_rv = await self.api.list_all("pods", self.namespace, label_selector=f"app={self.app}")
        self.ready = {p["metadata"]["name"]: pod_ready(p) for p in pods}
        self.min_ready_pods = sum(self.ready.values())
        deps = await self.api.list("deployments.apps", self.namespace)
        self._tasks = [asyncio.create_task(self._pods(pods_rv)),
                       asyncio.create_task(self._deployments(deps["metadata"]["resourceVersion"]))]

    async def _pods(self, rv: str) -> None:
        async for kind, pod in self.api.watch("pods", self.namespace, resource_version=rv,
                                              label_selector=f"app={self.app}"):
            if kind == "BOOKMARK":
                continue
            name = pod["metadata"]["name"]
            if kind == "DELETED":
                self.ready.pop(name, None)
            else:
                self.ready[name] = pod_ready(pod)
            count = sum(self.ready.values())
            self.min_ready_pods = count if self.min_ready_pods is None else min(self.min_ready_pods, count)

    async def _deployments(self, rv: str) -> None:
        async for kind, dep in self.api.watch("deployments.apps", self.namespace, resource_version=rv):
            if kind != "MODIFIED" or dep["metadata"]["name"] != self.app:
                continue
            self.deployment_events += 1
            available = (dep.get("status") or {}).get("availableReplicas", 0)
            self.min_available = available if self.min_available is None else min(self.min_available, available)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


def template_images(obj: dict[str, Any]) -> list[str]:
    return [c["image"] for c in obj["spec"]["template"]["spec"]["containers"]]


@needs_kubectl
async def test_rolling_update_keeps_the_availability_bound_and_undo_restores(
        local_cluster: UpCluster, api: APIClient, namespace: str) -> None:
    replicas = 10
    # 25% of 10: maxUnavailable rounds down to 2, maxSurge up to 3 — so at least 8 stay available.
    manifest = deployment_manifest("web", replicas, "demo/web:v1", maxSurge="25%", maxUnavailable="25%")
    await api.create("deployments.apps", manifest, namespace)
    await wait_available(api, namespace, "web", replicas)
    (old_rs,) = (await api.list("replicasets.apps", namespace))["items"]
    bound = replicas - 2

    watch = AvailabilityWatch(api, namespace, "web")
    await watch.start()
    try:
        local_cluster.kubectl("-n", namespace, "set", "image", "deployment/web", "web=demo/web:v2")
        res = await asyncio.to_thread(local_cluster.kubectl, "-n", namespace, "rollout", "status",
                                      "deployment/web", "--timeout=120s")
        assert "successfully rolled out" in res.stdout
        await wait_available(api, namespace, "web", replicas)
        await asyncio.sleep(0.5)  # the watches catch up with the last events
    finally:
        await watch.stop()
    assert watch.deployment_events > 0, "the deployment watch saw nothing"
    assert watch.min_ready_pods is not None and watch.min_ready_pods >= bound, \
        f"only {watch.min_ready_pods} ready pods at one moment (bound {bound})"
    assert watch.min_available is not None and watch.min_available >= bound, \
        f"status.availableReplicas fell to {watch.min_available} (bound {bound})"
    pods = [p for p in await pods_of(api, namespace, "web") if pod_ready(p)]
    assert len(pods) == replicas and {p["spec"]["containers"][0]["image"] for p in pods} == {"demo/web:v2"}
    sets = {rs["metadata"]["name"]: rs for rs in (await api.list("replicasets.apps", namespace))["items"]}
    assert sets[old_rs["metadata"]["name"]]["spec"]["replicas"] == 0

    history = local_cluster.kubectl("-n", namespace, "rollout", "history", "deployment/web").stdout
    assert "1 " in history and "2 " in history

    local_cluster.kubectl("-n", namespace, "rollout", "undo", "deployment/web")
    await asyncio.to_thread(local_cluster.kubectl, "-n", namespace, "rollout", "status", "deployment/web",
                            "--timeout=120s")
    dep = await wait_available(api, namespace, "web", replicas)
    assert template_images(dep) == ["demo/web:v1"]
    sets = {rs["metadata"]["name"]: rs for rs in (await api.list("replicasets.apps", namespace))["items"]}
    restored = sets[old_rs["metadata"]["name"]]  # the old ReplicaSet is reused, not a new one made
    assert restored["spec"]["replicas"] == replicas
    assert restored["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert sum(rs["spec"]["replicas"] for rs in sets.values()) == replicas
    pods = [p for p in await pods_of(api, namespace, "web") if pod_ready(p)]
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"demo/web:v1"}


async def test_background_deletion_removes_replicasets_and_pods(api: APIClient, namespace: str) -> None:
    await api.create("deployments.apps", deployment_manifest("bg", 3), namespace)
    await wait_available(api, namespace, "bg", 3)
    await api.delete("deployments.apps", "bg", namespace, propagation_policy="Background")

    async def all_gone() -> bool:
        sets = (await api.list("replicasets.apps", namespace))["items"]
        return not sets and not await pods_of(api, namespace, "bg")

    await eventually(all_gone, "the ReplicaSet and pods of a deleted deployment to go", timeout=60)


async def test_orphan_deletion_leaves_replicasets_and_pods(api: APIClient, namespace: str) -> None:
    await api.create("deployments.apps", deployment_manifest("orphan", 3), namespace)
    await wait_available(api, namespace, "orphan", 3)
    pods_before = {p["metadata"]["name"] for p in await pods_of(api, namespace, "orphan")}
    await api.delete("deployments.apps", "orphan", namespace, propagation_policy="Orphan")

    async def orphaned() -> list[dict[str, Any]] | None:
        if await api.get_or_none("deployments.apps", "orphan", namespace) is not None:
            return None
        sets = (await api.list("replicasets.apps", namespace))["items"]
        return sets if sets and all(not rs["metadata"].get("ownerReferences") for rs in sets) else None

    (rs,) = await eventually(orphaned, "the deployment gone and its ReplicaSet released", timeout=60)
    await asyncio.sleep(2)  # give a wrong garbage collector the time to do damage
    assert await api.get_or_none("replicasets.apps", rs["metadata"]["name"], namespace) is not None
    pods_after = {p["metadata"]["name"] for p in await pods_of(api, namespace, "orphan") if pod_ready(p)}
    assert pods_after == pods_before, json.dumps(sorted(pods_after ^ pods_before))
