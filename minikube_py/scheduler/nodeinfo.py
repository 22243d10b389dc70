"""The scheduler's cache: one NodeInfo per node with running totals of what its pods request.

kube-scheduler keeps aggregated per-node state (requested resources, used host ports, the pods
themselves) so that judging a node costs O(1) and scheduling a pod O(nodes), never O(pods x nodes).
This cache also holds *assumed* pods: a pod is placed on its node the moment the scheduler picks
it, before the binding is written and long before the informer reports it back, so the next pod
already sees the node as fuller (kube-scheduler's AssumePod / ForgetPod).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .podinfo import CPU, EPHEMERAL, MEMORY, PODS, PodInfo, resource_list

ZONE_KEY = "topology.kubernetes.io/zone"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"


def readiness_taint(node: Mapping[str, Any]) -> dict[str, str] | None:
    """The taint the node lifecycle controller puts on a node that is not Ready (TaintNodesByCondition):
    Ready=False -> not-ready, Ready=Unknown or no Ready condition yet -> unreachable / not-ready.
    Kubernetes' scheduler no longer reads conditions itself; it sees these taints. Applying them here
    gives the same result (and the same messages) without depending on that controller."""
    conditions = (node.get("status") or {}).get("conditions") or []
    for c in conditions:
        if c.get("type") == "Ready":
            status = c.get("status")
            if status == "True":
                return None
            key = NOT_READY_TAINT if status == "False" else UNREACHABLE_TAINT
            return {"key": key, "effect": "NoSchedule"}
    # A node the kubelet has not reported on yet registers with the not-ready taint.
    return {"key": NOT_READY_TAINT, "effect": "NoSchedule"}


@dataclass(slots=True)
class NodeInfo:
    """A node and the running totals of its pods. Flat integer fields rather than dicts: the filters
    and scores read them once per node per pod, the hottest loop of the scheduler."""

    name: str
    node: Mapping[str, Any]
    labels: Mapping[str, str]
    allocatable: dict[str, int]
    unschedulable: bool
    hard_taints: list[Mapping[str, Any]]       # NoSchedule and NoExecute, readiness taint included
    soft_taints: list[Mapping[str, Any]]       # PreferNoSchedule
    alloc_cpu: int = 0
    alloc_memory: int = 0
    alloc_ephemeral: int = 0
    alloc_pods: int = 0
    plain: bool = True                          # schedulable and without hard taints
    pods: dict[str, PodInfo] = field(default_factory=dict)
    pod_count: int = 0
    req_cpu: int = 0
    req_memory: int = 0
    req_ephemeral: int = 0
    req_scalar: Counter[str] = field(default_factory=Counter)
    non_zero_cpu: int = 0
    non_zero_memory: int = 0
    used_ports: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    owner_counts: Counter[str] = field(default_factory=Counter)
    affinity_pods: int = 0                      # pods here with any (anti-)affinity term
    # Bumped on every change to the totals above, so per-node caches (scores) know when to recompute.
    version: int = 0
    score_cache: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        self._derive()

    def _derive(self) -> None:
        a = self.allocatable
        self.alloc_cpu = a.get(CPU, 0)
        self.alloc_memory = a.get(MEMORY, 0)
        self.alloc_ephemeral = a.get(EPHEMERAL, 0)
        self.alloc_pods = a.get(PODS, 0)
        self.plain = not self.unschedulable and not self.hard_taints
        self.version += 1

    def update(self, fields: Mapping[str, Any]) -> None:
        for k, v in fields.items():
            setattr(self, k, v)
        self._derive()

    @property
    def requested(self) -> dict[str, int]:
        return {CPU: self.req_cpu, MEMORY: self.req_memory, EPHEMERAL: self.req_ephemeral,
                **self.req_scalar}

    def add_pod(self, p: PodInfo) -> None:
        self.pods[p.key] = p
        self.version += 1
        self.pod_count += 1
        self.req_cpu += p.req_cpu
        self.req_memory += p.req_memory
        self.req_ephemeral += p.req_ephemeral
        for k, v in p.req_scalar.items():
            self.req_scalar[k] += v
        self.non_zero_cpu += p.non_zero_cpu
        self.non_zero_memory += p.non_zero_memory
        for hp in p.host_ports:
            self.used_ports[hp] += 1
        if p.owner_uid:
            self.owner_counts[p.owner_uid] += 1
        if p.has_any_affinity:
            self.affinity_pods += 1

    def remove_pod(self, key: str) -> PodInfo | None:
        p = self.pods.pop(key, None)
        if p is None:
            return None
        self.version += 1
        self.pod_count -= 1
        self.req_cpu -= p.req_cpu
        self.req_memory -= p.req_memory
        self.req_ephemeral -= p.req_ephemeral
        for k, v in p.req_scalar.items():
            self.req_scalar[k] -= v
            if self.req_scalar[k] <= 0:
                del self.req_scalar[k]
        self.non_zero_cpu -= p.non_zero_cpu
        self.non_zero_memory -= p.non_zero_memory
        for hp in p.host_ports:
            self.used_ports[hp] -= 1
            if self.used_ports[hp] <= 0:
                del self.used_ports[hp]
        if p.owner_uid:
            self.owner_counts[p.owner_uid] -= 1
            if self.owner_counts[p.owner_uid] <= 0:
                del self.owner_counts[p.owner_uid]
        if p.has_any_affinity:
            self.affinity_pods -= 1
        return p


def _node_fields(node: Mapping[str, Any]) -> dict[str, Any]:
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    alloc_raw = status.get("allocatable") or status.get("capacity") or {}
    try:
        allocatable = resource_list(alloc_raw)
    except ValueError:
        allocatable = {}  # an unreadable node fits nothing rather than crashing the scheduler
    hard: list[Mapping[str, Any]] = []
    soft: list[Mapping[str, Any]] = []
    taints = list(spec.get("taints") or [])
    extra = readiness_taint(node)
    if extra is not None and not any(t.get("key") == extra["key"] for t in taints):
        taints.append(extra)
    for t in taints:
        effect = t.get("effect")
        if effect in ("NoSchedule", "NoExecute"):
            hard.append(t)
        elif effect == "PreferNoSchedule":
            soft.append(t)
    return {"name": meta.get("name") or "", "node": node, "labels": meta.get("labels") or {},
            "allocatable": allocatable, "unschedulable": bool(spec.get("unschedulable")),
            "hard_taints": hard, "soft_taints": soft}


class ClusterState:
    """Nodes and the pods bound or assumed to them. Not thread-safe: the scheduler mutates it from
    its event loop only (informer handlers and the scheduling loop)."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self.node_order: list[NodeInfo] = []
        self.pod_node: dict[str, str] = {}            # pod key -> node name (bound or assumed)
        self.assumed: set[str] = set()
        self.orphans: dict[str, dict[str, PodInfo]] = {}   # pods bound to nodes we do not know yet
        self.required_anti_pods: dict[str, PodInfo] = {}
        self.affinity_pods: dict[str, PodInfo] = {}
        self.soft_taint_nodes = 0
        # Bumped when a node appears, goes or changes labels: caches of "which nodes match this
        # selector" stay valid until then (heartbeats do not invalidate them).
        self.label_generation = 0
        self.selector_cache: dict[str, tuple[int, frozenset[str]]] = {}
        self.next_start = 0                           # kube-scheduler's nextStartNodeIndex

    # ---- nodes

    def set_node(self, node: Mapping[str, Any]) -> NodeInfo:
        f = _node_fields(node)
        info = self.nodes.get(f["name"])
        if info is None:
            info = NodeInfo(**f)
            self.label_generation += 1
            self.nodes[info.name] = info
            self.node_order.append(info)
            for p in self.orphans.pop(info.name, {}).values():
                info.add_pod(p)
        else:
            if info.soft_taints:
                self.soft_taint_nodes -= 1
            if info.labels != f["labels"]:
                self.label_generation += 1
            info.update(f)
        if info.soft_taints:
            self.soft_taint_nodes += 1
        return info

    def remove_node(self, name: str) -> None:
        info = self.nodes.pop(name, None)
        if info is None:
            return
        self.label_generation += 1
        if info.soft_taints:
            self.soft_taint_nodes -= 1
        self.node_order = [n for n in self.node_order if n.name != name]
        if info.pods:  # the pods stay accounted for until they are deleted, as in kube-scheduler
            self.orphans[name] = dict(info.pods)

    # ---- pods

    def _place(self, p: PodInfo, node_name: str) -> None:
        info = self.nodes.get(node_name)
        if info is not None:
            info.add_pod(p)
        else:
            self.orphans.setdefault(node_name, {})[p.key] = p
        self.pod_node[p.key] = node_name
        if p.anti_affinity:
            self.required_anti_pods[p.key] = p
        if p.has_any_affinity:
            self.affinity_pods[p.key] = p

    def _unplace(self, key: str) -> PodInfo | None:
        node_name = self.pod_node.pop(key, None)
        if node_name is None:
            return None
        self.required_anti_pods.pop(key, None)
        self.affinity_pods.pop(key, None)
        info = self.nodes.get(node_name)
        if info is not None:
            return info.remove_pod(key)
        orphans = self.orphans.get(node_name)
        if orphans is None:
            return None
        p = orphans.pop(key, None)
        if not orphans:
            del self.orphans[node_name]
        return p

    def set_bound_pod(self, p: PodInfo) -> None:
        """A pod the API says is on ``p.node_name`` (replaces an assumed or older version of it).
        Terminal pods free their node's resources, so they leave the cache."""
        self._unplace(p.key)
        self.assumed.discard(p.key)
        if not p.terminal:
            self._place(p, p.node_name)

    def remove_pod(self, key: str) -> None:
        self.assumed.discard(key)
        self._unplace(key)

    def assume(self, p: PodInfo, node_name: str) -> None:
        self._unplace(p.key)
        self.assumed.add(p.key)
        self._place(p, node_name)

    def forget(self, key: str) -> None:
        """Undo assume() after a failed binding."""
        if key in self.assumed:
            self.assumed.discard(key)
            self._unplace(key)

    def bound_pod(self, key: str) -> PodInfo | None:
        node_name = self.pod_node.get(key)
        if node_name is None:
            return None
        info = self.nodes.get(node_name)
        if info is not None:
            return info.pods.get(key)
        return self.orphans.get(node_name, {}).get(key)

    def all_pods(self) -> Iterator[tuple[PodInfo, NodeInfo]]:
        for info in self.node_order:
            for p in info.pods.values():
                yield p, info

    def __len__(self) -> int:
        return len(self.nodes)

