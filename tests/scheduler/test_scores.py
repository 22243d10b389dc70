"""Each score plugin on its own, 0-100 per node."""

from __future__ import annotations

from minikube_py.scheduler.filters import prefilter
from minikube_py.scheduler.nodeinfo import ClusterState
from minikube_py.scheduler.podinfo import pod_info
from minikube_py.scheduler.scores import (
    balanced_allocation,
    least_allocated,
    owner_spread,
    preferred_inter_pod_affinity,
    preferred_node_affinity,
    resource_allocation,
    taint_toleration,
)

from .objects import cluster_of, node, pod, taint


def run(fn, c: ClusterState, p: dict) -> dict[str, int]:  # type: ignore[no-untyped-def]
    info = pod_info(p)
    nodes = list(c.node_order)
    return dict(zip([n.name for n in nodes], fn(info, nodes, prefilter(info, c)), strict=True))


def test_least_allocated_prefers_free_nodes() -> None:
    c = cluster_of(
        node("empty", cpu="4", memory="4Gi"),
        node("half", cpu="4", memory="4Gi"),
        pods=(pod("a", cpu="2", memory="2Gi", node_name="half"),),
    )
    scores = run(least_allocated, c, pod("p", cpu="1", memory="1Gi"))
    assert scores == {"empty": 75, "half": 25}


def test_least_allocated_counts_request_less_pods_with_defaults() -> None:
    c = cluster_of(
        node("a", cpu="1", memory="1Gi"),
        node("b", cpu="1", memory="1Gi"),
        pods=(pod("x", cpu=None, memory=None, node_name="b"),),
    )
    scores = run(least_allocated, c, pod("p", cpu=None, memory=None))
    assert scores["a"] > scores["b"]


def test_balanced_allocation_prefers_even_use() -> None:
    c = cluster_of(
        node("cpu-heavy", cpu="4", memory="4Gi"),
        node("even", cpu="4", memory="4Gi"),
        pods=(
            pod("a", cpu="3", memory="0", node_name="cpu-heavy"),
            pod("b", cpu="1", memory="2Gi", node_name="even"),
        ),
    )
    scores = run(balanced_allocation, c, pod("p", cpu="1", memory="1Gi"))
    assert scores["even"] == 87 and scores["cpu-heavy"] == 62


def test_owner_spread_counts_pods_of_the_same_controller() -> None:
    c = cluster_of(
        node("a"),
        node("b"),
        node("c"),
        pods=(
            pod("r1", owner="rs", node_name="a"),
            pod("r2", owner="rs", node_name="a"),
            pod("r3", owner="rs", node_name="b"),
            pod("other", owner="rs2", node_name="c"),
        ),
    )
    assert run(owner_spread, c, pod("p", owner="rs")) == {"a": 0, "b": 50, "c": 100}


def test_owner_spread_weighs_zones() -> None:
    c = cluster_of(
        node("a1", labels={"topology.kubernetes.io/zone": "a"}),
        node("a2", labels={"topology.kubernetes.io/zone": "a"}),
        node("b1", labels={"topology.kubernetes.io/zone": "b"}),
        pods=(pod("r1", owner="rs", node_name="a1"),),
    )
    scores = run(owner_spread, c, pod("p", owner="rs"))
    assert scores["b1"] > scores["a2"] > scores["a1"]


def test_taint_toleration_prefers_fewer_prefer_no_schedule_taints() -> None:
    c = cluster_of(
        node("clean"),
        node("one", taints=[taint("a", effect="PreferNoSchedule")]),
        node("two", taints=[taint("a", effect="PreferNoSchedule"), taint("b", effect="PreferNoSchedule")]),
    )
    assert run(taint_toleration, c, pod("p")) == {"clean": 100, "one": 50, "two": 0}
    tolerant = pod("p", tolerations=[{"key": "a", "operator": "Exists", "effect": "PreferNoSchedule"}])
    assert run(taint_toleration, c, tolerant) == {"clean": 100, "one": 100, "two": 0}


def test_preferred_node_affinity_weights() -> None:
    c = cluster_of(
        node("ssd", labels={"disk": "ssd", "zone": "a"}),
        node("hdd", labels={"disk": "hdd", "zone": "a"}),
        node("none"),
    )
    pref = {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 80,
                    "preference": {
                        "matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]
                    },
                },
                {"weight": 20, "preference": {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}},
            ]
        }
    }
    assert run(preferred_node_affinity, c, pod("p", affinity=pref)) == {"ssd": 100, "hdd": 20, "none": 0}


def test_preferred_pod_affinity_and_anti_affinity() -> None:
    c = cluster_of(
        node("a"),
        node("b"),
        node("c"),
        pods=(
            pod("cache", labels={"app": "cache"}, node_name="a"),
            pod("noisy", labels={"app": "noisy"}, node_name="b"),
        ),
    )
    pref = {
        "podAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 50,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": {"app": "cache"}},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        },
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 50,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": {"app": "noisy"}},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        },
    }
    info = pod_info(pod("p", affinity=pref))
    nodes = list(c.node_order)
    scores = dict(zip("abc", preferred_inter_pod_affinity(info, nodes, prefilter(info, c), c), strict=True))
    assert scores == {"a": 100, "b": 0, "c": 50}


def test_fused_resource_score_equals_the_two_plugins() -> None:
    c = cluster_of(
        node("a", cpu="4", memory="4Gi"),
        node("b", cpu="2", memory="8Gi"),
        node("c", cpu="1", memory="1Gi"),
        node("zero", cpu="0", memory="1Gi"),
        pods=(
            pod("x", cpu="1500m", memory="3Gi", node_name="a"),
            pod("y", cpu=None, memory="1Gi", node_name="b"),
            pod("z", cpu="2", memory="2Gi", node_name="c"),
        ),
    )
    for p in (
        pod("p", cpu="250m", memory="256Mi"),
        pod("q", cpu=None, memory=None),
        pod("r", cpu="3", memory="7Gi"),
    ):
        least, balanced = run(least_allocated, c, p), run(balanced_allocation, c, p)
        assert run(resource_allocation, c, p) == {n: least[n] + balanced[n] for n in least}
