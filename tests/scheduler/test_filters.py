"""Each filter plugin on its own: what passes, what fails, and the exact reason."""

from __future__ import annotations

from typing import Any

import pytest

from minikube_py.scheduler.filters import prefilter, run_filters
from minikube_py.scheduler.nodeinfo import ClusterState
from minikube_py.scheduler.podinfo import pod_info

from .objects import affinity, anti_affinity, cluster_of, node, pod, taint


def verdict(cluster: ClusterState, p: dict[str, Any], node_name: str) -> tuple[str, ...] | None:
    """None when the pod fits the node, else the failing filter's reasons."""
    info = pod_info(p)
    status = run_filters(info, cluster.nodes[node_name], prefilter(info, cluster))
    return None if status is None else status.reasons


def test_unschedulable_node_unless_tolerated() -> None:
    c = cluster_of(node("n", unschedulable=True))
    assert verdict(c, pod("p"), "n") == ("node(s) were unschedulable",)
    tol = [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]
    assert verdict(c, pod("p", tolerations=tol), "n") is None


@pytest.mark.parametrize(
    ("ready", "key"),
    [
        ("False", "node.kubernetes.io/not-ready"),
        ("Unknown", "node.kubernetes.io/unreachable"),
        (None, "node.kubernetes.io/not-ready"),
    ],
)
def test_node_not_ready_is_an_untolerated_taint(ready: str | None, key: str) -> None:
    c = cluster_of(node("n", ready=ready))
    assert verdict(c, pod("p"), "n") == (f"node(s) had untolerated taint {{{key}: }}",)
    assert verdict(c, pod("p", tolerations=[{"key": key, "operator": "Exists"}]), "n") is None


def test_taints_noschedule_and_noexecute_block_prefer_does_not() -> None:
    c = cluster_of(
        node("a", taints=[taint("dedicated", "gpu")]),
        node("b", taints=[taint("evict", effect="NoExecute")]),
        node("c", taints=[taint("soft", effect="PreferNoSchedule")]),
    )
    assert verdict(c, pod("p"), "a") == ("node(s) had untolerated taint {dedicated: gpu}",)
    assert verdict(c, pod("p"), "b") == ("node(s) had untolerated taint {evict: }",)
    assert verdict(c, pod("p"), "c") is None
    equal = [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
    assert verdict(c, pod("p", tolerations=equal), "a") is None
    wrong_value = [{"key": "dedicated", "operator": "Equal", "value": "cpu"}]
    assert verdict(c, pod("p", tolerations=wrong_value), "a") is not None
    assert verdict(c, pod("p", tolerations=[{"operator": "Exists"}]), "b") is None


def test_resources_against_allocatable_minus_bound_pods() -> None:
    c = cluster_of(
        node("n", cpu="1", memory="1Gi", pods="3"),
        pods=(pod("a", cpu="600m", memory="512Mi", node_name="n"),),
    )
    assert verdict(c, pod("p", cpu="400m", memory="512Mi"), "n") is None
    assert verdict(c, pod("p", cpu="401m", memory="513Mi"), "n") == (
        "Insufficient cpu",
        "Insufficient memory",
    )
    c.set_bound_pod(pod_info(pod("b", cpu=None, memory=None, node_name="n")))
    c.set_bound_pod(pod_info(pod("c", cpu=None, memory=None, node_name="n")))
    assert verdict(c, pod("p", cpu=None, memory=None), "n") == ("Too many pods",)


def test_terminal_pods_free_their_resources() -> None:
    done = pod("a", cpu="1", node_name="n")
    done["status"] = {"phase": "Succeeded"}
    c = cluster_of(node("n", cpu="1"), pods=(done,))
    assert verdict(c, pod("p", cpu="1"), "n") is None


def test_extended_resources() -> None:
    c = cluster_of(node("gpu", extra={"nvidia.com/gpu": "2"}), node("plain"))
    want = pod("p")
    want["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] = "2"
    assert verdict(c, want, "gpu") is None
    assert verdict(c, want, "plain") == ("Insufficient nvidia.com/gpu",)


def test_node_selector() -> None:
    c = cluster_of(node("ssd", labels={"disk": "ssd"}), node("hdd", labels={"disk": "hdd"}))
    assert verdict(c, pod("p", nodeSelector={"disk": "ssd"}), "ssd") is None
    assert verdict(c, pod("p", nodeSelector={"disk": "ssd"}), "hdd") == (
        "node(s) didn't match Pod's node affinity/selector",
    )


def required_node_affinity(*terms: dict) -> dict:
    return {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}
    }


@pytest.mark.parametrize(
    ("expr", "matching"),
    [
        ({"key": "zone", "operator": "In", "values": ["a", "b"]}, {"n1", "n2"}),
        ({"key": "zone", "operator": "NotIn", "values": ["a"]}, {"n2", "n3"}),
        ({"key": "zone", "operator": "Exists"}, {"n1", "n2"}),
        ({"key": "zone", "operator": "DoesNotExist"}, {"n3"}),
        ({"key": "cores", "operator": "Gt", "values": ["8"]}, {"n2"}),
        ({"key": "cores", "operator": "Lt", "values": ["8"]}, {"n1"}),
    ],
)
def test_required_node_affinity_operators(expr: dict, matching: set[str]) -> None:
    c = cluster_of(
        node("n1", labels={"zone": "a", "cores": "4"}),
        node("n2", labels={"zone": "b", "cores": "16"}),
        node("n3", labels={"cores": "x"}),
    )
    p = pod("p", affinity=required_node_affinity({"matchExpressions": [expr]}))
    assert {n for n in ("n1", "n2", "n3") if verdict(c, p, n) is None} == matching


def test_node_affinity_terms_are_ored_and_match_fields_name() -> None:
    c = cluster_of(node("n1", labels={"zone": "a"}), node("n2"), node("n3"))
    p = pod(
        "p",
        affinity=required_node_affinity(
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n3"]}]},
        ),
    )
    assert {n for n in ("n1", "n2", "n3") if verdict(c, p, n) is None} == {"n1", "n3"}
    empty_term = pod("q", affinity=required_node_affinity({}))
    assert verdict(c, empty_term, "n1") == ("node(s) didn't match Pod's node affinity/selector",)


def with_ports(p: dict, *ports: dict) -> dict:
    p["spec"]["containers"][0]["ports"] = list(ports)
    return p


def test_host_port_conflicts_by_protocol_and_ip() -> None:
    c = cluster_of(
        node("n"),
        pods=(
            with_ports(pod("a", node_name="n"), {"containerPort": 80, "hostPort": 8080}),
            with_ports(
                pod("b", node_name="n"),
                {"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "10.0.0.1"},
            ),
        ),
    )
    reason = ("node(s) didn't have free ports for the requested pod ports",)
    assert verdict(c, with_ports(pod("p"), {"containerPort": 1, "hostPort": 8080}), "n") == reason
    assert (
        verdict(c, with_ports(pod("p"), {"containerPort": 1, "hostPort": 8080, "protocol": "UDP"}), "n")
        is None
    )
    assert verdict(c, with_ports(pod("p"), {"containerPort": 1, "hostPort": 8081}), "n") is None
    # a specific address conflicts with the wildcard and with itself, not with another address
    assert (
        verdict(c, with_ports(pod("p"), {"containerPort": 1, "hostPort": 8080, "hostIP": "10.0.0.2"}), "n")
        == reason
    )
    assert (
        verdict(
            c,
            with_ports(
                pod("p"), {"containerPort": 1, "hostPort": 53, "protocol": "UDP", "hostIP": "10.0.0.2"}
            ),
            "n",
        )
        is None
    )
    assert (
        verdict(c, with_ports(pod("p"), {"containerPort": 1, "hostPort": 53, "protocol": "UDP"}), "n")
        == reason
    )


def test_pod_anti_affinity_by_hostname() -> None:
    c = cluster_of(node("n1"), node("n2"), pods=(pod("web-1", labels={"app": "web"}, node_name="n1"),))
    p = pod("web-2", labels={"app": "web"}, affinity=anti_affinity({"app": "web"}))
    assert verdict(c, p, "n1") == ("node(s) didn't match pod anti-affinity rules",)
    assert verdict(c, p, "n2") is None


def test_anti_affinity_namespaces_default_to_the_pods_own() -> None:
    c = cluster_of(node("n1"), pods=(pod("web-1", namespace="other", labels={"app": "web"}, node_name="n1"),))
    p = pod("web-2", labels={"app": "web"}, affinity=anti_affinity({"app": "web"}))
    assert verdict(c, p, "n1") is None
    p["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0][
        "namespaces"
    ] = ["other"]
    assert verdict(c, p, "n1") == ("node(s) didn't match pod anti-affinity rules",)


def test_existing_pods_anti_affinity_is_symmetric() -> None:
    c = cluster_of(
        node("n1"),
        node("n2"),
        pods=(pod("db", labels={"app": "db"}, node_name="n1", affinity=anti_affinity({"app": "web"})),),
    )
    assert verdict(c, pod("web", labels={"app": "web"}), "n1") == (
        "node(s) didn't satisfy existing pods anti-affinity rules",
    )
    assert verdict(c, pod("web", labels={"app": "web"}), "n2") is None


def test_pod_affinity_by_zone_and_the_first_pod_of_a_group() -> None:
    c = cluster_of(
        node("n1", labels={"zone": "a"}),
        node("n2", labels={"zone": "a"}),
        node("n3", labels={"zone": "b"}),
        node("n4"),
    )
    first = pod("cache-1", labels={"app": "cache"}, affinity=affinity({"app": "cache"}, "zone"))
    # nobody matches yet and the pod matches its own term: allowed wherever the topology key exists
    assert {n for n in c.nodes if verdict(c, first, n) is None} == {"n1", "n2", "n3"}
    c.set_bound_pod(pod_info(pod("cache-0", labels={"app": "cache"}, node_name="n2")))
    assert {n for n in c.nodes if verdict(c, first, n) is None} == {"n1", "n2"}
    assert verdict(c, first, "n3") == ("node(s) didn't match pod affinity rules",)
    loner = pod("x", labels={"app": "x"}, affinity=affinity({"app": "nothing"}))
    assert verdict(c, loner, "n1") == ("node(s) didn't match pod affinity rules",)


def test_first_failing_filter_decides_in_kube_scheduler_order() -> None:
    c = cluster_of(node("n", cpu="1", unschedulable=True, taints=[taint("t")]))
    assert verdict(c, pod("p", cpu="2"), "n") == ("node(s) were unschedulable",)
