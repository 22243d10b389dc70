"""The garbage collector against a real API server: Background, Orphan and Foreground deletion of a
Deployment, and dependents whose owners never existed or are of kinds the collector does not watch."""

from __future__ import annotations

import asyncio
from typing import Any

from minikube_py.client.informer import Informer
from tests.controllers.workload_fixtures import (  # noqa: F401 -- fixtures
    Cluster,
    cluster_fixture,
    eventually,
    workload_apiserver,
)

DEPLOY, RS = "deployments.apps", "replicasets.apps"


async def _deployment_with_pods(c: Cluster, name: str, replicas: int = 2) -> dict[str, Any]:
    await c.client.create(DEPLOY, c.deployment(name, replicas))
    return await eventually(lambda: c.rollout_done(name), what=f"{name} rolled out")


async def _sets(c: Cluster, app: str) -> list[dict[str, Any]]:
    items, _ = await c.client.list_all(RS, c.ns, label_selector=f"app={app}")
    return items


async def test_background_deletion_removes_replicasets_and_pods(cluster: Cluster) -> None:
    c = cluster
    await _deployment_with_pods(c, "bg")
    await c.client.delete(DEPLOY, "bg", c.ns, propagation_policy="Background")

    async def gone() -> bool:
        return not await _sets(c, "bg") and not await c.pods("app=bg", active=False)

    await eventually(gone, what="ReplicaSet and pods collected")


async def test_orphan_deletion_leaves_dependents_without_owner(cluster: Cluster) -> None:
    c = cluster
    await _deployment_with_pods(c, "orph")
    [rs] = await _sets(c, "orph")
    await c.client.delete(DEPLOY, "orph", c.ns, propagation_policy="Orphan")
    await eventually(lambda: _absent(c, DEPLOY, "orph"), what="Deployment deleted")
    [after] = await _sets(c, "orph")
    assert after["metadata"]["uid"] == rs["metadata"]["uid"]
    assert not after["metadata"].get("ownerReferences")
    await asyncio.sleep(0.3)  # a collector that wrongly deletes orphans would do so by now
    assert [x["metadata"]["uid"] for x in await _sets(c, "orph")] == [rs["metadata"]["uid"]]
    pods = await c.pods("app=orph")
    assert len(pods) == 2
    assert all(p["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"] for p in pods)


async def _absent(c: Cluster, res: str, name: str) -> bool:
    return await c.client.get_or_none(res, name, c.ns) is None


async def test_foreground_deletion_deletes_dependents_first(cluster: Cluster) -> None:
    c = cluster
    d = await _deployment_with_pods(c, "fg", replicas=3)
    [rs] = await _sets(c, "fg")
    order: list[tuple[str, str]] = []
    watchers = [Informer(c.client, res, c.ns) for res in ("pods", RS, DEPLOY)]
    for w in watchers:
        w.add_handlers(on_delete=lambda obj: order.append((obj["kind"], obj["metadata"]["uid"])))
        await w.start()
        await w.wait_synced(30)
    try:
        deleting = await c.client.delete(DEPLOY, "fg", c.ns, propagation_policy="Foreground")
        assert deleting is not None and "foregroundDeletion" in deleting["metadata"]["finalizers"]
        await eventually(lambda: _absent(c, DEPLOY, "fg"), what="Deployment deleted after its dependents")
        await eventually(lambda: len(order) >= 5, what="every deletion observed")
    finally:
        for w in watchers:
            await w.stop()
    kinds = [k for k, _ in order]
    assert kinds.count("Pod") == 3 and kinds.count("ReplicaSet") == 1 and kinds.count("Deployment") == 1
    # Pods before their ReplicaSet, the ReplicaSet before the Deployment.
    assert kinds.index("ReplicaSet") > max(i for i, k in enumerate(kinds) if k == "Pod"), order
    assert kinds[-1] == "Deployment" and order[-1][1] == d["metadata"]["uid"], order
    assert ("ReplicaSet", rs["metadata"]["uid"]) in order


async def test_dangling_owner_reference_is_collected_live_owner_kept(cluster: Cluster) -> None:
    c = cluster
    cm = await c.client.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                              "metadata": {"name": "owner", "namespace": c.ns}})

    def pod(name: str, owner: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": c.ns, "labels": {"app": "gc"},
                             "ownerReferences": [owner]},
                "spec": {"containers": [{"name": "main", "image": "demo/web:1"}]}}

    ghost = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "ghost",
             "uid": "00000000-0000-0000-0000-000000000000"}
    # Owned by a kind the collector does not watch: found by a live GET, so the pod stays.
    live = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": cm["metadata"]["uid"]}
    stale_uid = {**live, "uid": "11111111-1111-1111-1111-111111111111"}
    await c.client.create("pods", pod("orphaned", ghost))
    await c.client.create("pods", pod("kept", live))
    await c.client.create("pods", pod("replaced-owner", stale_uid))
    half = pod("half", {**ghost, "name": "ghost2"})
    half["metadata"]["ownerReferences"].append(live)
    await c.client.create("pods", half)

    async def collected() -> list[str] | None:
        names = sorted(p["metadata"]["name"] for p in await c.pods("app=gc", active=False))
        return names if names == ["half", "kept"] else None

    await eventually(collected, what="pods with absent owners deleted")

    async def half_fixed() -> bool:
        refs = (await c.client.get("pods", "half", c.ns))["metadata"].get("ownerReferences") or []
        return [r["uid"] for r in refs] == [cm["metadata"]["uid"]]

    # A dependent with one live owner loses only the dangling reference.
    await eventually(half_fixed, what="dangling reference removed, live one kept")
    kept = await c.client.get("pods", "kept", c.ns)
    assert kept["metadata"]["ownerReferences"][0]["uid"] == cm["metadata"]["uid"]
