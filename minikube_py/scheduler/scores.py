"""Score plugins: how good is each feasible node? Every plugin yields 0-100 per node (already
normalized, as after kube-scheduler's NormalizeScore) and the framework adds them up with the default
profile's weights. Integer arithmetic as in Kubernetes, so equal nodes tie exactly and share pods.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from .filters import CycleState
from .nodeinfo import ZONE_KEY, ClusterState, NodeInfo
from .podinfo import AffinityTerm, PodInfo, tolerated

MAX_SCORE = 100

# kube-scheduler's default plugin weights (pkg/scheduler/apis/config/v1/default_plugins.go).
WEIGHT_TAINT = 3
WEIGHT_NODE_AFFINITY = 2
WEIGHT_SPREAD = 2
WEIGHT_INTER_POD = 2
WEIGHT_LEAST_ALLOCATED = 1
WEIGHT_BALANCED = 1

# SelectorSpread's zoneWeighting: spreading across zones counts twice as much as across nodes.
ZONE_WEIGHTING = 2 / 3


def least_allocated(pod: PodInfo, nodes: list[NodeInfo], state: CycleState) -> list[int]:
    """NodeResourcesFit/LeastAllocated: the share of cpu and memory left free after placing the pod
    (non-zero requests, so request-less pods still count), cpu and memory weighted equally."""
    out = []
    pcpu, pmem = pod.non_zero_cpu, pod.non_zero_memory
    for n in nodes:
        acpu, amem = n.alloc_cpu, n.alloc_memory
        rcpu, rmem = n.non_zero_cpu + pcpu, n.non_zero_memory + pmem
        scpu = (acpu - rcpu) * MAX_SCORE // acpu if acpu and rcpu <= acpu else 0
        smem = (amem - rmem) * MAX_SCORE // amem if amem and rmem <= amem else 0
        out.append((scpu + smem) // 2)
    return out


def balanced_allocation(pod: PodInfo, nodes: list[NodeInfo], state: CycleState) -> list[int]:
    """NodeResourcesBalancedAllocation: prefer nodes whose cpu and memory fill up evenly,
    ``(1 - std(fractions)) * 100``; with two resources std is half their difference."""
    out = []
    pcpu, pmem = pod.req_cpu, pod.req_memory
    for n in nodes:
        acpu, amem = n.alloc_cpu, n.alloc_memory
        if not acpu or not amem:
            out.append(0)
            continue
        fcpu = (n.req_cpu + pcpu) / acpu
        fmem = (n.req_memory + pmem) / amem
        diff = (fcpu if fcpu < 1.0 else 1.0) - (fmem if fmem < 1.0 else 1.0)
        out.append(int((1 - (diff if diff >= 0 else -diff) / 2) * MAX_SCORE))
    return out


def resource_allocation(pod: PodInfo, nodes: list[NodeInfo], state: CycleState) -> list[int]:
    """least_allocated + balanced_allocation in one pass (both weigh 1 in the default profile): the
    same integers, at a fraction of the cost. A node's result is kept until the node changes: in a
    burst of one controller's pods every pod asks the same, and only the chosen node changes, so
    nearly every node answers from its cache."""
    out = []
    pcpu, pmem = pod.non_zero_cpu, pod.non_zero_memory
    qcpu, qmem = pod.req_cpu, pod.req_memory
    shape = (pcpu, pmem, qcpu, qmem)
    for n in nodes:
        cached = n.score_cache
        if cached is not None and cached[0] == n.version and cached[1] == shape:
            out.append(cached[2])
            continue
        acpu, amem = n.alloc_cpu, n.alloc_memory
        rcpu, rmem = n.non_zero_cpu + pcpu, n.non_zero_memory + pmem
        least = ((acpu - rcpu) * MAX_SCORE // acpu if acpu and rcpu <= acpu else 0) + \
            ((amem - rmem) * MAX_SCORE // amem if amem and rmem <= amem else 0)
        if acpu and amem:
            fcpu = (n.req_cpu + qcpu) / acpu
            fmem = (n.req_memory + qmem) / amem
            diff = (fcpu if fcpu < 1.0 else 1.0) - (fmem if fmem < 1.0 else 1.0)
            score = least // 2 + int((1 - (diff if diff >= 0 else -diff) / 2) * MAX_SCORE)
        else:
            score = least // 2
        n.score_cache = (n.version, shape, score)
        out.append(score)
    return out


def owner_spread(pod: PodInfo, nodes: list[NodeInfo], state: CycleState) -> list[int]:
    """SelectorSpread / PodTopologySpread's system defaults: fewer pods of the same controller on a
    node (and in its zone, when nodes carry zones) scores higher."""
    uid = pod.owner_uid
    if not uid:
        return [0] * len(nodes)
    counts = [n.owner_counts.get(uid, 0) for n in nodes]
    max_count = max(counts)
    if max_count:
        scores = [MAX_SCORE * (max_count - c) // max_count for c in counts]
    else:
        scores = [MAX_SCORE] * len(nodes)
    zones = [n.labels.get(ZONE_KEY) for n in nodes]
    if not any(zones):
        return scores
    zone_counts: Counter[str] = Counter()
    for zone, c in zip(zones, counts, strict=True):
        if zone is not None:
            zone_counts[zone] += c
    max_zone = max(zone_counts.values())
    out = []
    for zone, score in zip(zones, scores, strict=True):
        if zone is None:
            out.append(score)
            continue
        zscore = MAX_SCORE * (max_zone - zone_counts[zone]) / max_zone if max_zone else float(MAX_SCORE)
        out.append(int(score * (1 - ZONE_WEIGHTING) + ZONE_WEIGHTING * zscore))
    return out


def _normalize(raw: list[int], reverse: bool = False) -> list[int]:
    """framework DefaultNormalizeScore: scale to 0-100 by the maximum (reverse: 100 minus that)."""
    top = max(raw) if raw else 0
    if top == 0:
        return [MAX_SCORE if reverse else 0] * len(raw)
    if reverse:
        return [MAX_SCORE - s * MAX_SCORE // top for s in raw]
    return [s * MAX_SCORE // top for s in raw]


def taint_toleration(pod: PodInfo, nodes: list[NodeInfo], state: CycleState) -> list[int]:
    """TaintToleration score: fewer untolerated PreferNoSchedule taints is better."""
    tols = [t for t in pod.tolerations if (t.get("effect") or "PreferNoSchedule") == "PreferNoSchedule"]
    raw = [sum(1 for t in n.soft_taints if not tolerated(tols, t)) for n in nodes]
    return _normalize(raw, reverse=True)


def preferred_node_affinity(pod: PodInfo, nodes: list[NodeInfo], state: CycleState) -> list[int]:
    """NodeAffinity score: the summed weights of the preferred terms a node matches."""
    terms = pod.preferred_node_terms
    raw = [sum(w for w, match in terms if match(n.labels, n.name)) for n in nodes]
    return _normalize(raw)


def _add_term(scores: Counter[tuple[str, str]], term: AffinityTerm, target: PodInfo, node: NodeInfo,
              weight: int, state: CycleState) -> None:
    value = node.labels.get(term.topology_key)
    if value is not None and term.matches(target, state.namespace_labels):
        scores[(term.topology_key, value)] += weight


def preferred_inter_pod_affinity(pod: PodInfo, nodes: list[NodeInfo], state: CycleState,
                                 cluster: ClusterState) -> list[int]:
    """InterPodAffinity score: per topology domain, the incoming pod's preferred (anti-)affinity
    weights over the pods there, plus the existing pods' own terms that match the incoming pod
    (symmetry; required affinity of existing pods counts with hardPodAffinityWeight 1)."""
    topo: Counter[tuple[str, str]] = Counter()
    own = bool(pod.preferred_affinity or pod.preferred_anti_affinity)
    if own:
        candidates = cluster.all_pods()
    else:
        candidates = ((p, cluster.nodes[cluster.pod_node[p.key]]) for p in cluster.affinity_pods.values()
                      if cluster.pod_node.get(p.key) in cluster.nodes)
    for existing, node in candidates:
        if existing.key == pod.key:
            continue
        for term in pod.preferred_affinity:
            _add_term(topo, term, existing, node, term.weight, state)
        for term in pod.preferred_anti_affinity:
            _add_term(topo, term, existing, node, -term.weight, state)
        if existing.has_any_affinity:
            for term in existing.affinity:
                _add_term(topo, term, pod, node, 1, state)
            for term in existing.preferred_affinity:
                _add_term(topo, term, pod, node, term.weight, state)
            for term in existing.preferred_anti_affinity:
                _add_term(topo, term, pod, node, -term.weight, state)
    if not topo:
        return [0] * len(nodes)
    raw = [sum(s for (key, value), s in topo.items() if n.labels.get(key) == value) for n in nodes]
    lo, hi = min(raw), max(raw)
    if hi == lo:
        return [0] * len(nodes)
    return [MAX_SCORE * (s - lo) // (hi - lo) for s in raw]


@dataclass(frozen=True, slots=True)
class ScorePlugin:
    name: str
    weight: int
    fn: Callable[[PodInfo, list[NodeInfo], CycleState], list[int]]


def plugins_for(pod: PodInfo, cluster: ClusterState) -> list[ScorePlugin]:
    """The score plugins that can tell nodes apart for this pod; the rest would add a constant."""
    if WEIGHT_LEAST_ALLOCATED == WEIGHT_BALANCED == 1:
        plugins = [ScorePlugin("NodeResourcesFit+BalancedAllocation", 1, resource_allocation)]
    else:
        plugins = [ScorePlugin("NodeResourcesLeastAllocated", WEIGHT_LEAST_ALLOCATED, least_allocated),
                   ScorePlugin("NodeResourcesBalancedAllocation", WEIGHT_BALANCED, balanced_allocation)]
    if pod.owner_uid:
        plugins.append(ScorePlugin("SelectorSpread", WEIGHT_SPREAD, owner_spread))
    if cluster.soft_taint_nodes:
        plugins.append(ScorePlugin("TaintToleration", WEIGHT_TAINT, taint_toleration))
    if pod.preferred_node_terms:
        plugins.append(ScorePlugin("NodeAffinity", WEIGHT_NODE_AFFINITY, preferred_node_affinity))
    if pod.preferred_affinity or pod.preferred_anti_affinity or cluster.affinity_pods:
        plugins.append(ScorePlugin("InterPodAffinity", WEIGHT_INTER_POD,
                                   lambda p, ns, st: preferred_inter_pod_affinity(p, ns, st, cluster)))
    return plugins


def score_nodes(pod: PodInfo, nodes: list[NodeInfo], state: CycleState, cluster: ClusterState
                ) -> list[int]:
    """The weighted total per node, in ``nodes`` order."""
    totals: list[int] | None = None
    for plugin in plugins_for(pod, cluster):
        scores = plugin.fn(pod, nodes, state)
        w = plugin.weight
        if totals is None:
            totals = [s * w for s in scores] if w != 1 else scores
        elif w == 1:
            totals = [t + s for t, s in zip(totals, scores, strict=True)]
        else:
            totals = [t + s * w for t, s in zip(totals, scores, strict=True)]
    return totals if totals is not None else [0] * len(nodes)
