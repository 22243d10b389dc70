"""One scheduling cycle, as kube-scheduler's framework runs it: PreFilter, Filter over the nodes
(stopping once enough feasible nodes are found), Score, then pick the best node at random among
equals. No I/O: it reads the ClusterState and returns a node name or raises FitError.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable, Mapping

from .filters import (
    NODE_AFFINITY_STATUS,
    CycleState,
    Status,
    filters_for,
    node_affinity,
    node_resources_fit,
    node_unschedulable,
    prefilter,
    taint_toleration,
)
from .nodeinfo import ClusterState, NodeInfo
from .podinfo import PodInfo
from .scores import score_nodes

NO_NODES_AVAILABLE = "no nodes available to schedule pods"
PREEMPTION_NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_PREEMPTION_VICTIMS = "No preemption victims found for incoming pod"

# kube-scheduler's defaults for percentageOfNodesToScore = 0 (adaptive).
MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE = 5
BASE_PERCENTAGE_OF_NODES_TO_SCORE = 50

_RNG = random.Random()


def num_feasible_nodes_to_find(num_nodes: int) -> int:
    """How many feasible nodes are enough: all of a small cluster, then a share shrinking with size
    (500 nodes -> 46% -> 230), never fewer than 100. Scoring every node of a big cluster buys little
    placement quality for a lot of time."""
    if num_nodes < MIN_FEASIBLE_NODES_TO_FIND:
        return num_nodes
    percentage = max(BASE_PERCENTAGE_OF_NODES_TO_SCORE - num_nodes // 125, MIN_FEASIBLE_NODES_PERCENTAGE)
    return max(num_nodes * percentage // 100, MIN_FEASIBLE_NODES_TO_FIND)


def _histogram(reasons: Counter[str]) -> str:
    # kube-scheduler sorts the "<count> <reason>" strings themselves (sort.Strings), so the order is
    # lexicographic: "1 node(s) had ..." before "2 Insufficient cpu", and "10 ..." before "2 ...".
    return ", ".join(sorted(f"{count} {reason}" for reason, count in reasons.items()))


def fit_error_message(num_nodes: int, statuses: Mapping[str, Status], preemption_never: bool = False) -> str:
    """FitError.Error() followed by DefaultPreemption's PostFilter message. Preemption is not
    implemented, so nodes where it could in principle help report that no victims were found, which
    is what kube-scheduler says when no pod of lower priority is there to evict."""
    if num_nodes == 0:
        return NO_NODES_AVAILABLE
    reasons: Counter[str] = Counter()
    for st in statuses.values():
        for r in st.reasons:
            reasons[r] += 1
    msg = f"0/{num_nodes} nodes are available:"
    if reasons:
        msg += f" {_histogram(reasons)}."
    if preemption_never:
        return msg + " preemption: not eligible due to preemptionPolicy=Never."
    post: Counter[str] = Counter()
    for st in statuses.values():
        post[PREEMPTION_NOT_HELPFUL if st.unresolvable else NO_PREEMPTION_VICTIMS] += 1
    return msg + f" preemption: 0/{num_nodes} nodes are available: {_histogram(post)}."


class FitError(Exception):
    """No node fits. ``statuses`` holds each rejecting node's Status."""

    def __init__(self, pod: PodInfo, num_nodes: int, statuses: dict[str, Status]) -> None:
        self.pod = pod
        self.num_nodes = num_nodes
        self.statuses = statuses
        self.message = fit_error_message(num_nodes, statuses, pod.preemption_never)
        super().__init__(self.message)


def find_feasible(pod: PodInfo, cluster: ClusterState,
                  namespace_labels: Callable[[str], Mapping[str, str] | None] | None = None,
                  ) -> tuple[list[NodeInfo], dict[str, Status], CycleState]:
    """Filter the nodes, starting where the previous cycle stopped (so every node gets its turn when
    only part of the cluster is examined)."""
    nodes = cluster.node_order
    n = len(nodes)
    state = prefilter(pod, cluster, namespace_labels)
    chain = filters_for(pod, state)
    # The chain is [unschedulable, taints, (affinity), (ports), fit, (inter-pod)]. The loop below runs
    # it in that order but inlines the checks every pod needs: a plain node (schedulable, no hard
    # taints) skips the first two, and a node with room skips NodeResourcesFit's reason building.
    fit_at = chain.index(node_resources_fit)
    before_fit, after_fit = chain[2:fit_at], chain[fit_at + 1:]
    # NodeAffinity is a set lookup with the prefilter's answer: do it inline too.
    selected = state.matching_nodes
    if selected is not None:
        before_fit = [f for f in before_fit if f is not node_affinity]
    pcpu, pmem, peph, scalar = pod.req_cpu, pod.req_memory, pod.req_ephemeral, pod.req_scalar
    wanted = num_feasible_nodes_to_find(n)
    feasible: list[NodeInfo] = []
    statuses: dict[str, Status] = {}
    start = cluster.next_start % n if n else 0
    processed = 0
    for node in itertools.chain(nodes[start:], nodes[:start]):
        processed += 1
        status = None
        if not node.plain:
            status = node_unschedulable(pod, node, state) or taint_toleration(pod, node, state)
        if status is None and selected is not None and node.name not in selected:
            status = NODE_AFFINITY_STATUS
        if status is None and before_fit:
            for f in before_fit:
                status = f(pod, node, state)
                if status is not None:
                    break
        if status is None and (node.pod_count >= node.alloc_pods
                               or (pcpu and pcpu > node.alloc_cpu - node.req_cpu)
                               or (pmem and pmem > node.alloc_memory - node.req_memory)
                               or (peph and peph > node.alloc_ephemeral - node.req_ephemeral)
                               or scalar):
            status = node_resources_fit(pod, node, state)
        if status is None and after_fit:
            for f in after_fit:
                status = f(pod, node, state)
                if status is not None:
                    break
        if status is not None:
            statuses[node.name] = status
            continue
        feasible.append(node)
        if len(feasible) >= wanted:
            break
    if n:
        cluster.next_start = (start + processed) % n
    return feasible, statuses, state


def select_host(nodes: list[NodeInfo], scores: list[int], rng: random.Random) -> NodeInfo:
    """The highest score; among equals each is equally likely (kube-scheduler's selectHost)."""
    best = max(scores)
    ties = [i for i, s in enumerate(scores) if s == best]
    return nodes[ties[0] if len(ties) == 1 else rng.choice(ties)]


def schedule(pod: PodInfo, cluster: ClusterState, rng: random.Random | None = None,
             namespace_labels: Callable[[str], Mapping[str, str] | None] | None = None) -> str:
    """The node this pod should run on, or FitError with kube-scheduler's message."""
    if not cluster.node_order:
        raise FitError(pod, 0, {})
    feasible, statuses, state = find_feasible(pod, cluster, namespace_labels)
    if not feasible:
        raise FitError(pod, len(cluster.node_order), statuses)
    if len(feasible) == 1:
        return feasible[0].name
    scores = score_nodes(pod, feasible, state, cluster)
    return select_host(feasible, scores, rng or _RNG).name
