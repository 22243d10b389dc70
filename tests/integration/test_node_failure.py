"""A node whose heartbeats stop: the node lifecycle controller marks it Unknown and taints it, its pods
are evicted and the Deployment recreates them on the other nodes; when heartbeats resume the node is
Ready and untainted again. The cluster runs with --node-monitor-grace-period 3s and
--pod-eviction-timeout 2s (passed through ``up``)."""

from __future__ import annotations

from typing import Any

from minikube_py.client import APIClient
from minikube_py.kubelet.fake_nodes import STOP_HEARTBEAT_ANNOTATION
from tests.integration.conftest import condition, deployment_manifest, eventually, pod_ready, pods_of, wait_available

VICTIM = "fake-node-2"
UNREACHABLE = "node.kubernetes.io/unreachable"


def taints(node: dict[str, Any]) -> set[tuple[str, str]]:
    return {(t["key"], t["effect"]) for t in node["spec"].get("taints") or ()}


async def set_heartbeats(api: APIClient, node: str, stopped: bool) -> None:
    await api.patch("nodes", node, {"metadata": {"annotations": {STOP_HEARTBEAT_ANNOTATION: "true" if stopped
                                                                 else None}}})


async def test_a_silent_node_is_tainted_and_its_pods_move(api: APIClient, namespace: str) -> None:
    replicas = 6
    await api.create("deployments.apps", deployment_manifest("survivor", replicas), namespace)
    await wait_available(api, namespace, "survivor", replicas)
    pods = await pods_of(api, namespace, "survivor")
    on_victim = {p["metadata"]["name"] for p in pods if p["spec"]["nodeName"] == VICTIM}
    assert on_victim, f"no pod landed on {VICTIM}: {[p['spec']['nodeName'] for p in pods]}"

    await set_heartbeats(api, VICTIM, stopped=True)
    try:
        async def tainted() -> dict[str, Any] | None:
            node = await api.get("nodes", VICTIM)
            ok = condition(node, "Ready") == "Unknown" and {(UNREACHABLE, "NoExecute"),
                                                           (UNREACHABLE, "NoSchedule")} <= taints(node)
            return node if ok else None

        node = await eventually(tainted, f"{VICTIM} to turn Unknown and get the unreachable taints", timeout=60)
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "NodeStatusUnknown"

        async def moved() -> list[dict[str, Any]] | None:
            pods = [p for p in await pods_of(api, namespace, "survivor") if not p["metadata"].get("deletionTimestamp")]
            ok = (len(pods) == replicas and all(pod_ready(p) and p["spec"]["nodeName"] != VICTIM for p in pods)
                  and not on_victim & {p["metadata"]["name"] for p in pods})
            return pods if ok else None

        await eventually(moved, f"the pods of {VICTIM} to be recreated on the other nodes", timeout=60)
        await wait_available(api, namespace, "survivor", replicas)
    finally:
        await set_heartbeats(api, VICTIM, stopped=False)

    async def recovered() -> bool:
        node = await api.get("nodes", VICTIM)
        return condition(node, "Ready") == "True" and not {k for k, _ in taints(node)} & {UNREACHABLE}

    # Later tests expect all three nodes back.
    await eventually(recovered, f"{VICTIM} to be Ready and untainted again", timeout=60)
