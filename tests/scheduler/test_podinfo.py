"""Pod requests and tolerations, as kube-scheduler computes them."""

from __future__ import annotations

import pytest

from minikube_py.scheduler.podinfo import (
    DEFAULT_MEMORY,
    DEFAULT_MILLI_CPU,
    InvalidPod,
    pod_info,
    pod_requests,
    tolerates,
)

from .objects import pod


def container(cpu: str | None = None, memory: str | None = None, restart: str | None = None) -> dict:
    req = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    c: dict = {"name": "x", "image": "i", "resources": {"requests": req}}
    if restart:
        c["restartPolicy"] = restart
    return c


def test_requests_sum_containers_in_integer_units() -> None:
    spec = {"containers": [container("250m", "64Mi"), container("1", "1Gi")]}
    assert pod_requests(spec) == {"cpu": 1250, "memory": 64 * 2**20 + 2**30}


def test_init_containers_count_by_the_max_rule() -> None:
    spec = {"containers": [container("100m", "100Mi")], "initContainers": [container("2", "50Mi")]}
    assert pod_requests(spec) == {"cpu": 2000, "memory": 100 * 2**20}


def test_sidecar_init_containers_add_to_both_sides() -> None:
    spec = {
        "containers": [container("100m")],
        "initContainers": [container("200m", restart="Always"), container("250m")],
    }
    # regular containers + sidecar = 300m; the plain init container runs beside the sidecar: 450m.
    assert pod_requests(spec)["cpu"] == 450


def test_overhead_and_limits_fallback() -> None:
    spec = {
        "containers": [{"name": "x", "resources": {"limits": {"cpu": "500m"}}}],
        "overhead": {"cpu": "10m"},
    }
    assert pod_requests(spec) == {"cpu": 510}


def test_non_zero_requests_default_per_container_for_scoring() -> None:
    info = pod_info(pod("p", cpu=None, memory=None))
    assert info.req_cpu == 0 and info.req_memory == 0
    assert (info.non_zero_cpu, info.non_zero_memory) == (DEFAULT_MILLI_CPU, DEFAULT_MEMORY)


def test_pod_info_reads_ports_owner_and_scalars() -> None:
    p = pod("p", owner="rs", labels={"app": "a"})
    p["spec"]["containers"][0]["ports"] = [
        {"containerPort": 80, "hostPort": 8080},
        {"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "10.0.0.1"},
    ]
    p["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] = "1"
    info = pod_info(p)
    assert info.key == "default/p" and info.owner_uid == "uid-rs"
    assert info.host_ports == [("TCP", "0.0.0.0", 8080), ("UDP", "10.0.0.1", 53)]
    assert info.req_scalar == {"nvidia.com/gpu": 1}


@pytest.mark.parametrize(
    "bad",
    [
        {"containers": [{"name": "x", "resources": {"requests": {"cpu": "lots"}}}]},
        {
            "containers": [],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Near"}]}]
                    }
                }
            },
        },
        {
            "containers": [],
            "affinity": {
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "labelSelector": {"matchExpressions": [{"key": "a", "operator": "Sort of"}]},
                            "topologyKey": "kubernetes.io/hostname",
                        }
                    ]
                }
            },
        },
    ],
)
def test_unreadable_pods_raise_invalid_pod(bad: dict) -> None:
    with pytest.raises(InvalidPod):
        pod_info({"metadata": {"name": "p", "namespace": "default"}, "spec": bad})


@pytest.mark.parametrize(
    ("toleration", "taint", "expected"),
    [
        (
            {"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"},
            {"key": "k", "value": "v", "effect": "NoSchedule"},
            True,
        ),
        ({"key": "k", "value": "v"}, {"key": "k", "value": "v", "effect": "NoExecute"}, True),  # empty effect
        ({"key": "k", "value": "other"}, {"key": "k", "value": "v", "effect": "NoSchedule"}, False),
        ({"key": "k", "operator": "Exists"}, {"key": "k", "value": "anything", "effect": "NoSchedule"}, True),
        ({"operator": "Exists"}, {"key": "any", "value": "v", "effect": "NoExecute"}, True),  # tolerates all
        ({"operator": "Exists", "effect": "NoSchedule"}, {"key": "any", "effect": "NoExecute"}, False),
        (
            {"key": "k", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "j", "effect": "NoSchedule"},
            False,
        ),
        (
            {"key": "k", "operator": "Gt", "value": "1"},
            {"key": "k", "value": "2", "effect": "NoSchedule"},
            False,
        ),
    ],
)
def test_toleration_matching(toleration: dict, taint: dict, expected: bool) -> None:
    assert tolerates(toleration, taint) is expected
