"""One scheduling cycle end to end, and the FailedScheduling message word for word."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from minikube_py.scheduler.filters import Status
from minikube_py.scheduler.framework import FitError, fit_error_message, num_feasible_nodes_to_find, schedule
from minikube_py.scheduler.nodeinfo import ClusterState
from minikube_py.scheduler.podinfo import pod_info

from .objects import anti_affinity, cluster_of, node, pod, taint

CONTROL_PLANE = taint("node-role.kubernetes.io/control-plane")


def failure(c: ClusterState, p: dict) -> str:
    with pytest.raises(FitError) as e:
        schedule(pod_info(p), c)
    return e.value.message


def test_message_taint_and_insufficient_cpu_as_kubernetes_words_it() -> None:
    c = cluster_of(node("cp", taints=[CONTROL_PLANE]), node("w1", cpu="1"), node("w2", cpu="1"))
    assert failure(c, pod("big", cpu="2")) == (
        "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
        "2 Insufficient cpu. preemption: 0/3 nodes are available: "
        "1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
    )


def test_message_lists_every_reason_of_every_node() -> None:
    c = cluster_of(
        node("a", cpu="1", memory="1Gi"),
        node("b", cpu="1", memory="1Gi"),
        node("c", labels={"disk": "hdd"}, unschedulable=True),
    )
    assert failure(c, pod("p", cpu="2", memory="2Gi")) == (
        "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu, 2 Insufficient memory. "
        "preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, "
        "2 No preemption victims found for incoming pod."
    )


def test_message_node_selector_and_anti_affinity() -> None:
    c = cluster_of(node("a", labels={"disk": "ssd"}), node("b", labels={"disk": "ssd"}), node("c"))
    c.set_bound_pod(pod_info(pod("w1", labels={"app": "w"}, node_name="a")))
    c.set_bound_pod(pod_info(pod("w2", labels={"app": "w"}, node_name="b")))
    p = pod("w3", labels={"app": "w"}, nodeSelector={"disk": "ssd"}, affinity=anti_affinity({"app": "w"}))
    assert failure(c, p) == (
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
        "2 node(s) didn't match pod anti-affinity rules. preemption: 0/3 nodes are available: "
        "1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
    )


def test_reasons_sort_as_strings_like_kube_scheduler() -> None:
    # sort.Strings on "<count> <reason>": "10 ..." sorts before "2 ...".
    statuses = {f"n{i}": Status(("Insufficient cpu",)) for i in range(10)}
    statuses |= {
        "m1": Status(("node(s) were unschedulable",), True),
        "m2": Status(("node(s) were unschedulable",), True),
    }
    assert fit_error_message(12, statuses) == (
        "0/12 nodes are available: 10 Insufficient cpu, 2 node(s) were unschedulable. preemption: 0/12 nodes "
        "are available: 10 No preemption victims found for incoming pod, 2 Preemption is not helpful for "
        "scheduling."
    )


def test_message_without_nodes_and_with_preemption_never() -> None:
    assert failure(ClusterState(), pod("p")) == "no nodes available to schedule pods"
    c = cluster_of(node("a", cpu="1"))
    assert failure(c, pod("p", cpu="2", preemptionPolicy="Never")) == (
        "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
    )


def test_assumed_pods_count_at_once() -> None:
    c = cluster_of(node("a", cpu="1"), node("b", cpu="1"))
    placed = []
    for i in range(2):
        info = pod_info(pod(f"p{i}", cpu="1"))
        name = schedule(info, c)
        c.assume(info, name)
        placed.append(name)
    assert sorted(placed) == ["a", "b"]
    assert "2 Insufficient cpu" in failure(c, pod("p2", cpu="1"))
    c.forget("default/p0")
    assert schedule(pod_info(pod("p2", cpu="1")), c) == placed[0]


def test_replicas_spread_evenly_over_equal_nodes() -> None:
    c = cluster_of(*(node(f"n{i}") for i in range(5)))
    rng = random.Random(1)
    counts: Counter[str] = Counter()
    for i in range(50):
        info = pod_info(pod(f"p{i}", owner="rs"))
        name = schedule(info, c, rng)
        c.assume(info, name)
        counts[name] += 1
    assert set(counts.values()) == {10}


def test_equal_nodes_share_the_first_pod_at_random() -> None:
    picks = Counter()
    for seed in range(40):
        c = cluster_of(*(node(f"n{i}") for i in range(4)))
        picks[schedule(pod_info(pod("p")), c, random.Random(seed))] += 1
    assert len(picks) == 4


def test_tainted_node_gets_pods_only_when_tolerated() -> None:
    c = cluster_of(node("cp", taints=[CONTROL_PLANE]), node("w"))
    for i in range(5):
        info = pod_info(pod(f"p{i}"))
        assert schedule(info, c) == "w"
        c.assume(info, "w")
    tolerant = pod("t", tolerations=[{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}])
    assert schedule(pod_info(tolerant), c) == "cp"  # least allocated now prefers the empty node


def test_preferred_node_affinity_decides() -> None:
    c = cluster_of(node("a"), node("b", labels={"disk": "ssd"}), node("c"))
    pref = {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "preference": {
                        "matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]
                    },
                }
            ]
        }
    }
    assert all(schedule(pod_info(pod(f"p{i}", affinity=pref)), c) == "b" for i in range(5))


def test_only_part_of_a_big_cluster_is_examined_but_every_node_gets_its_turn() -> None:
    assert num_feasible_nodes_to_find(50) == 50
    assert num_feasible_nodes_to_find(500) == 230
    assert num_feasible_nodes_to_find(5000) == 500
    c = cluster_of(*(node(f"n{i:03d}") for i in range(300)))
    used: Counter[str] = Counter()
    for i in range(600):
        info = pod_info(pod(f"p{i}", owner="rs"))
        name = schedule(info, c)
        c.assume(info, name)
        used[name] += 1
    # within each examined window replicas spread; across windows the rotation keeps it close
    assert len(used) == 300 and max(used.values()) <= 3


def test_pods_on_unknown_nodes_are_kept_until_the_node_appears() -> None:
    c = cluster_of(node("a", cpu="1"))
    c.set_bound_pod(pod_info(pod("early", cpu="1", node_name="late")))
    c.set_node(node("late", cpu="1"))
    assert schedule(pod_info(pod("p", cpu="1")), c) == "a"
    c.remove_pod("default/early")
    assert c.nodes["late"].req_cpu == 0
