"""Filter plugins: may this pod run on this node? Each returns None (yes) or a Status whose reasons
are kube-scheduler's own words, so FailedScheduling messages read exactly as on a real cluster.

Order and wording follow kube-scheduler's default profile (pkg/scheduler/framework/plugins):
NodeUnschedulable, TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit, InterPodAffinity.
The first failing filter decides a node's reasons, as the framework stops at the first failure.
``unresolvable`` marks UnschedulableAndUnresolvable (preemption could not help), which only
changes the preemption half of the message.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .nodeinfo import ClusterState, NodeInfo
from .podinfo import CPU, EPHEMERAL, MEMORY, AffinityTerm, PodInfo, tolerated

ERR_UNSCHEDULABLE = "node(s) were unschedulable"
ERR_NODE_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
ERR_PORTS = "node(s) didn't have free ports for the requested pod ports"
ERR_TOO_MANY_PODS = "Too many pods"
ERR_AFFINITY = "node(s) didn't match pod affinity rules"
ERR_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
ERR_EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"

UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}


@dataclass(frozen=True, slots=True)
class Status:
    reasons: tuple[str, ...]
    unresolvable: bool = False


_UNSCHEDULABLE = Status((ERR_UNSCHEDULABLE,), True)
NODE_AFFINITY_STATUS = _NODE_AFFINITY = Status((ERR_NODE_AFFINITY,), True)
_PORTS = Status((ERR_PORTS,))
_AFFINITY = Status((ERR_AFFINITY,), True)
_ANTI_AFFINITY = Status((ERR_ANTI_AFFINITY,))
_EXISTING_ANTI_AFFINITY = Status((ERR_EXISTING_ANTI_AFFINITY,))

TopologyCounts = Counter[tuple[str, str]]


@dataclass(slots=True)
class CycleState:
    """What one scheduling attempt computes once and every node's filter reads (PreFilter state)."""

    pod: PodInfo
    namespace_labels: Callable[[str], Mapping[str, str] | None] | None = None
    affinity_counts: TopologyCounts = field(default_factory=Counter)
    anti_affinity_counts: TopologyCounts = field(default_factory=Counter)
    existing_anti_counts: TopologyCounts = field(default_factory=Counter)
    affinity_self_match: bool = False   # the pod satisfies its own affinity terms (first of a group)
    matching_nodes: frozenset[str] | None = None   # nodes passing nodeSelector + required node affinity

    @property
    def needs_inter_pod_filter(self) -> bool:
        return bool(self.pod.affinity or self.pod.anti_affinity or self.existing_anti_counts)


def prefilter(pod: PodInfo, cluster: ClusterState,
              namespace_labels: Callable[[str], Mapping[str, str] | None] | None = None) -> CycleState:
    """InterPodAffinity's PreFilter: count, per topology domain, the pods that the incoming pod's
    required terms match and the existing pods whose required anti-affinity matches the incoming pod.
    Pods with no affinity terms cost O(pods with anti-affinity) here, not O(pods)."""
    state = CycleState(pod, namespace_labels)
    if pod.node_match_key is not None:
        state.matching_nodes = _matching_nodes(pod, cluster)
    nodes = cluster.nodes
    for existing in cluster.required_anti_pods.values():
        if existing.key == pod.key:
            continue
        node = nodes.get(cluster.pod_node.get(existing.key, ""))
        if node is None:
            continue
        for term in existing.anti_affinity:
            value = node.labels.get(term.topology_key)
            if value is not None and term.matches(pod, namespace_labels):
                state.existing_anti_counts[(term.topology_key, value)] += 1
    if pod.affinity or pod.anti_affinity:
        for existing, node in cluster.all_pods():
            if existing.key == pod.key:
                continue
            if pod.affinity and all(t.matches(existing, namespace_labels) for t in pod.affinity):
                for term in pod.affinity:
                    value = node.labels.get(term.topology_key)
                    if value is not None:
                        state.affinity_counts[(term.topology_key, value)] += 1
            for term in pod.anti_affinity:
                value = node.labels.get(term.topology_key)
                if value is not None and term.matches(existing, namespace_labels):
                    state.anti_affinity_counts[(term.topology_key, value)] += 1
        state.affinity_self_match = all(t.matches(pod, namespace_labels) for t in pod.affinity)
    return state


def _matching_nodes(pod: PodInfo, cluster: ClusterState) -> frozenset[str]:
    """The nodes a pod's nodeSelector and required node affinity accept. Pods of one controller share
    their selector, so the answer is cached per selector until a node's labels change: the NodeAffinity
    filter becomes one set lookup per node."""
    key = pod.node_match_key
    assert key is not None
    cached = cluster.selector_cache.get(key)
    if cached is not None and cached[0] == cluster.label_generation:
        return cached[1]
    names = frozenset(n.name for n in cluster.node_order if node_matches_selector(pod, n.labels, n.name))
    if len(cluster.selector_cache) >= 1024:
        cluster.selector_cache.clear()
    cluster.selector_cache[key] = (cluster.label_generation, names)
    return names


# --------------------------------------------------------------------------- the filters

Filter = Callable[[PodInfo, NodeInfo, CycleState], "Status | None"]


def node_unschedulable(pod: PodInfo, node: NodeInfo, state: CycleState) -> Status | None:
    if node.unschedulable and not tolerated(pod.tolerations, UNSCHEDULABLE_TAINT):
        return _UNSCHEDULABLE
    return None


def taint_toleration(pod: PodInfo, node: NodeInfo, state: CycleState) -> Status | None:
    for taint in node.hard_taints:
        if not tolerated(pod.tolerations, taint):
            key, value = taint.get("key", ""), taint.get("value", "")
            return Status((f"node(s) had untolerated taint {{{key}: {value}}}",), True)
    return None


def node_matches_selector(pod: PodInfo, labels: Mapping[str, str], name: str) -> bool:
    """nodeSelector (every label equal) and required node affinity (any of the terms)."""
    for k, v in pod.node_selector.items():
        if labels.get(k) != v:
            return False
    terms = pod.required_node_terms
    return terms is None or any(term(labels, name) for term in terms)


def node_affinity(pod: PodInfo, node: NodeInfo, state: CycleState) -> Status | None:
    if state.matching_nodes is not None:
        return None if node.name in state.matching_nodes else _NODE_AFFINITY
    return None if node_matches_selector(pod, node.labels, node.name) else _NODE_AFFINITY


def _port_conflict(used: Mapping[tuple[str, str, int], int], want: tuple[str, str, int]) -> bool:
    protocol, ip, port = want
    if ip == "0.0.0.0":  # the wildcard address takes the port on every address
        return any(p == port and proto == protocol for proto, _, p in used)
    return (protocol, ip, port) in used or (protocol, "0.0.0.0", port) in used


def node_ports(pod: PodInfo, node: NodeInfo, state: CycleState) -> Status | None:
    if node.used_ports:
        for hp in pod.host_ports:
            if _port_conflict(node.used_ports, hp):
                return _PORTS
    return None


def insufficient_resources(pod: PodInfo, node: NodeInfo) -> list[str]:
    """NodeResourcesFit: every resource the node lacks (all are reported, not just the first)."""
    reasons = []
    if node.pod_count + 1 > node.alloc_pods:
        reasons.append(ERR_TOO_MANY_PODS)
    if pod.req_cpu > 0 and pod.req_cpu > node.alloc_cpu - node.req_cpu:
        reasons.append(f"Insufficient {CPU}")
    if pod.req_memory > 0 and pod.req_memory > node.alloc_memory - node.req_memory:
        reasons.append(f"Insufficient {MEMORY}")
    if pod.req_ephemeral > 0 and pod.req_ephemeral > node.alloc_ephemeral - node.req_ephemeral:
        reasons.append(f"Insufficient {EPHEMERAL}")
    for name, want in pod.req_scalar.items():
        if want > node.allocatable.get(name, 0) - node.req_scalar.get(name, 0):
            reasons.append(f"Insufficient {name}")
    return reasons


def node_resources_fit(pod: PodInfo, node: NodeInfo, state: CycleState) -> Status | None:
    reasons = insufficient_resources(pod, node)
    return Status(tuple(reasons)) if reasons else None


def _domain_count(counts: TopologyCounts, terms: list[AffinityTerm], labels: Mapping[str, str]) -> bool:
    for term in terms:
        value = labels.get(term.topology_key)
        if value is not None and counts.get((term.topology_key, value), 0) > 0:
            return True
    return False


def inter_pod_affinity(pod: PodInfo, node: NodeInfo, state: CycleState) -> Status | None:
    labels = node.labels
    if pod.affinity:
        pods_exist = True
        for term in pod.affinity:
            value = labels.get(term.topology_key)
            if value is None:
                return _AFFINITY  # every topology key must exist on the node
            if state.affinity_counts.get((term.topology_key, value), 0) <= 0:
                pods_exist = False
        # The first pod of a group with affinity to itself would otherwise wait forever: allow it
        # when no pod anywhere matches and it matches its own terms (kube-scheduler does the same).
        if not pods_exist and not (not state.affinity_counts and state.affinity_self_match):
            return _AFFINITY
    if pod.anti_affinity and _domain_count(state.anti_affinity_counts, pod.anti_affinity, labels):
        return _ANTI_AFFINITY
    if state.existing_anti_counts:
        for (key, value), count in state.existing_anti_counts.items():
            if count > 0 and labels.get(key) == value:
                return _EXISTING_ANTI_AFFINITY
    return None


def filters_for(pod: PodInfo, state: CycleState) -> list[Filter]:
    """The filters that can reject this pod, in kube-scheduler's order; the others are skipped so the
    common pod costs a handful of checks per node."""
    chain: list[Filter] = [node_unschedulable, taint_toleration]
    if pod.node_match_key is not None:
        chain.append(node_affinity)
    if pod.host_ports:
        chain.append(node_ports)
    chain.append(node_resources_fit)
    if state.needs_inter_pod_filter:
        chain.append(inter_pod_affinity)
    return chain


def run_filters(pod: PodInfo, node: NodeInfo, state: CycleState, chain: list[Filter] | None = None
                ) -> Status | None:
    for f in chain if chain is not None else filters_for(pod, state):
        status = f(pod, node, state)
        if status is not None:
            return status
    return None

