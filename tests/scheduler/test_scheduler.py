"""The scheduler against a real API server: binding, spreading, taints, selectors, anti-affinity,
FailedScheduling events and conditions, and waking up when a node that fits appears."""

from __future__ import annotations

import asyncio
from collections import Counter

from .conftest import Cluster
from .objects import anti_affinity, node, pod, taint


def owned(manifest: dict, owner_uid: str = "3f2f0b8e-0000-4000-8000-000000000001") -> dict:
    manifest["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": owner_uid, "controller": True}
    ]
    return manifest


async def test_pods_are_bound_spread_and_reported(cluster: Cluster) -> None:
    for i in range(3):
        await cluster.add_node(node(f"spread-{i}"))
    names = [f"web-{i}" for i in range(6)]
    for n in names:
        await cluster.add_pod(owned(pod(n)))
    placed = await cluster.bound(*names)
    assert sorted(Counter(placed.values()).values()) == [2, 2, 2]
    p = await cluster.pod("web-0")
    scheduled = [c for c in p["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert scheduled and scheduled[0]["status"] == "True"
    events = await cluster.wait_for(lambda: cluster.events("web-0", "Scheduled"), what="a Scheduled event")
    e = events[0]
    assert e["type"] == "Normal"
    assert e["message"] == f"Successfully assigned {cluster.namespace}/web-0 to {placed['web-0']}"
    assert e["source"]["component"] == "default-scheduler" and e["reportingComponent"] == "default-scheduler"
    assert e["involvedObject"]["kind"] == "Pod" and e["involvedObject"]["uid"] == p["metadata"]["uid"]


async def test_other_schedulers_pods_are_left_alone(cluster: Cluster) -> None:
    await cluster.add_node(node("lone"))
    await cluster.add_pod(pod("mine"))
    await cluster.add_pod(pod("theirs", schedulerName="my-own-scheduler"))
    await cluster.bound("mine")
    assert not (await cluster.pod("theirs"))["spec"].get("nodeName")


async def test_tainted_node_gets_only_tolerating_pods(cluster: Cluster) -> None:
    await cluster.add_node(node("worker"))
    await cluster.add_node(
        node("control", labels={"role": "cp"}, taints=[taint("node-role.kubernetes.io/control-plane")])
    )
    names = [f"p{i}" for i in range(4)]
    for n in names:
        await cluster.add_pod(pod(n))
    tolerant = pod(
        "tolerant",
        nodeSelector={"role": "cp"},
        tolerations=[
            {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}
        ],
    )
    await cluster.add_pod(tolerant)
    placed = await cluster.bound(*names, "tolerant")
    assert {placed[n] for n in names} == {"worker"}
    assert placed["tolerant"] == "control"


async def test_node_selector_and_anti_affinity(cluster: Cluster) -> None:
    for i in range(3):
        await cluster.add_node(node(f"zone-{i}", labels={"disk": "ssd" if i else "hdd"}))
    spec = {"nodeSelector": {"disk": "ssd"}, "affinity": anti_affinity({"app": "db"})}
    for i in range(3):
        await cluster.add_pod(pod(f"db-{i}", labels={"app": "db"}, **spec))
    # two ssd nodes, one replica each; the third has nowhere to go
    placed = await cluster.wait_for(lambda: _bound_count(cluster, 2), what="two db pods bound")
    assert sorted(placed.values()) == ["zone-1", "zone-2"]
    pending = next(n for n in ("db-0", "db-1", "db-2") if n not in placed)
    message = (
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
        "2 node(s) didn't match pod anti-affinity rules. preemption: 0/3 nodes are available: "
        "1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
    )
    events = await cluster.wait_for(
        lambda: cluster.events(pending, "FailedScheduling"), what="FailedScheduling"
    )
    assert events[0]["message"] == message


async def _bound_count(cluster: Cluster, count: int) -> dict[str, str] | None:
    pods, _ = await cluster.client.list_all("pods", cluster.namespace)
    placed = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods if p["spec"].get("nodeName")}
    return placed if len(placed) >= count else None


async def test_too_big_pod_waits_then_schedules_when_a_node_fits(cluster: Cluster) -> None:
    await cluster.add_node(node("small-0", cpu="2"))
    await cluster.add_node(node("small-1", cpu="2"))
    await cluster.add_node(node("cp", cpu="8", taints=[taint("node-role.kubernetes.io/control-plane")]))
    await cluster.add_pod(pod("big", cpu="4"))
    message = (
        "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
        "2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for "
        "scheduling, 2 No preemption victims found for incoming pod."
    )
    events = await cluster.wait_for(
        lambda: cluster.events("big", "FailedScheduling"), what="FailedScheduling"
    )
    assert events[0]["type"] == "Warning" and events[0]["message"] == message and events[0]["count"] == 1

    async def unschedulable_condition() -> bool:
        conds = (await cluster.pod("big")).get("status", {}).get("conditions") or []
        return any(
            c["type"] == "PodScheduled"
            and c["status"] == "False"
            and c["reason"] == "Unschedulable"
            and c["message"] == message
            for c in conds
        )

    await cluster.wait_for(unschedulable_condition, what="PodScheduled=False")
    # A change that cannot help is retried once (after back-off) and counted on the same event.
    small = await cluster.client.get("nodes", "small-0")
    small["metadata"]["labels"]["touched"] = "yes"
    await cluster.client.update("nodes", small)

    async def counted() -> bool:
        evs = await cluster.events("big", "FailedScheduling")
        return len(evs) == 1 and evs[0]["count"] >= 2

    await cluster.wait_for(counted, what="the FailedScheduling event to count the repeat")
    assert not (await cluster.pod("big"))["spec"].get("nodeName")
    await cluster.add_node(node("large", cpu="16"))
    assert (await cluster.bound("big"))["big"] == "large"


async def test_no_busy_loop_while_unschedulable(cluster: Cluster) -> None:
    await cluster.add_node(node("tiny", cpu="1"))
    await cluster.add_pod(pod("huge", cpu="64"))
    await cluster.wait_for(lambda: cluster.events("huge", "FailedScheduling"), what="FailedScheduling")
    attempts = cluster.scheduler.m_attempts.labels("unschedulable", "default-scheduler")
    before = attempts.value
    await asyncio.sleep(1.0)  # many back-off periods of this test's scheduler, but no cluster change
    assert attempts.value - before <= 1
    assert cluster.scheduler.queue.counts()["unschedulable"] == 1
