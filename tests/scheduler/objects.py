"""Node and Pod manifests for the scheduler tests, as small as the tests need them."""

from __future__ import annotations

from typing import Any

from minikube_py.scheduler.nodeinfo import ClusterState
from minikube_py.scheduler.podinfo import pod_info


def cluster_of(*nodes: dict, pods: tuple[dict, ...] = ()) -> ClusterState:
    """The scheduler's cache holding these nodes, and these pods as bound."""
    c = ClusterState()
    for n in nodes:
        c.set_node(n)
    for p in pods:
        c.set_bound_pod(pod_info(p))
    return c


def node(
    name: str,
    *,
    cpu: str = "4",
    memory: str = "8Gi",
    pods: str = "110",
    labels: dict | None = None,
    taints: list | None = None,
    ready: str | None = "True",
    unschedulable: bool = False,
    extra: dict | None = None,
) -> dict[str, Any]:
    allocatable = {"cpu": cpu, "memory": memory, "pods": pods, **(extra or {})}
    status: dict[str, Any] = {"capacity": dict(allocatable), "allocatable": allocatable}
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": ready}]
    spec: dict[str, Any] = {}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": spec,
        "status": status,
    }


def pod(
    name: str,
    *,
    namespace: str = "default",
    cpu: str | None = "100m",
    memory: str | None = "64Mi",
    labels: dict | None = None,
    owner: str | None = None,
    node_name: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-{namespace}-{name}",
        "labels": labels or {},
    }
    if owner:
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": owner,
                "uid": f"uid-{owner}",
                "controller": True,
            }
        ]
    body: dict[str, Any] = {
        "containers": [
            {"name": "c", "image": "demo/web", "resources": {"requests": requests} if requests else {}}
        ],
        **spec,
    }
    if node_name:
        body["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": body}


def taint(key: str, value: str = "", effect: str = "NoSchedule") -> dict[str, str]:
    t = {"key": key, "effect": effect}
    if value:
        t["value"] = value
    return t


def anti_affinity(labels: dict[str, str], key: str = "kubernetes.io/hostname") -> dict[str, Any]:
    return {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": labels}, "topologyKey": key}
            ]
        }
    }


def affinity(labels: dict[str, str], key: str = "kubernetes.io/hostname") -> dict[str, Any]:
    return {
        "podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": labels}, "topologyKey": key}
            ]
        }
    }
