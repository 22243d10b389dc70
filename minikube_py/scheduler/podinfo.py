"""What the scheduler needs to know about one pod, computed once per pod version.

Pods arrive as API JSON; the filters and scores run hundreds of times per pod (once per node), so
every field they read is parsed here up front: resource requests in integer units (millicores,
bytes), host ports, tolerations, the node selector and the compiled affinity terms.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

import orjson

from minikube_py.api.validation import parse_quantity
from minikube_py.apiserver.selectors import LabelSelector, label_selector_from_dict

CPU, MEMORY, EPHEMERAL, PODS = "cpu", "memory", "ephemeral-storage", "pods"

# kube-scheduler's schedutil.DefaultMilliCPURequest / DefaultMemoryRequest: what a container without
# requests counts as when scoring, so that request-less pods still spread instead of piling up.
DEFAULT_MILLI_CPU = 100
DEFAULT_MEMORY = 200 * 1024 * 1024

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


class InvalidPod(ValueError):
    """A pod the scheduler cannot read (an unparsable quantity or selector)."""


@lru_cache(maxsize=16384)
def _decimal(value: str | int | float) -> Decimal:
    return parse_quantity(value)


def milli_value(value: Any) -> int:
    """A quantity in thousandths, rounded up as resource.Quantity.MilliValue does (cpu in millicores)."""
    try:
        return math.ceil(_decimal(value) * 1000)
    except (ValueError, TypeError) as e:
        raise InvalidPod(f"invalid quantity {value!r}: {e}") from None


def int_value(value: Any) -> int:
    """A quantity as an integer, rounded up as resource.Quantity.Value does (memory in bytes)."""
    try:
        return math.ceil(_decimal(value))
    except (ValueError, TypeError) as e:
        raise InvalidPod(f"invalid quantity {value!r}: {e}") from None


def resource_list(rl: Mapping[str, Any] | None) -> dict[str, int]:
    """A ResourceList in the scheduler's integer units: cpu in millicores, everything else whole."""
    out: dict[str, int] = {}
    for name, value in (rl or {}).items():
        out[name] = milli_value(value) if name == CPU else int_value(value)
    return out


def _container_requests(c: Mapping[str, Any]) -> dict[str, int]:
    res = c.get("resources") or {}
    # The apiserver defaults requests to limits; doing it here too keeps objects written by other
    # tools (or an older apiserver) from slipping through as zero-request pods.
    merged = {**(res.get("limits") or {}), **(res.get("requests") or {})}
    return resource_list(merged)


def _add(into: dict[str, int], extra: Mapping[str, int]) -> None:
    for k, v in extra.items():
        into[k] = into.get(k, 0) + v


def _max(into: dict[str, int], other: Mapping[str, int]) -> None:
    for k, v in other.items():
        if v > into.get(k, 0):
            into[k] = v


def _with_defaults(req: Mapping[str, int]) -> dict[str, int]:
    return {CPU: req.get(CPU) or DEFAULT_MILLI_CPU, MEMORY: req.get(MEMORY) or DEFAULT_MEMORY}


def pod_requests(spec: Mapping[str, Any], *, non_zero: bool = False) -> dict[str, int]:
    """The pod's effective requests, as kube-scheduler computes them: the sum over containers, but at
    least the largest init container (init containers run one at a time, before the others), with
    restartable (sidecar) init containers added to both sides because they keep running; plus the
    pod overhead. With ``non_zero`` (for scoring) cpu and memory default per container."""
    total: dict[str, int] = {}
    for c in spec.get("containers") or []:
        req = _container_requests(c)
        _add(total, _with_defaults(req) if non_zero else req)
    init_max: dict[str, int] = {}
    sidecars: dict[str, int] = {}
    for c in spec.get("initContainers") or []:
        req = _container_requests(c)
        if non_zero:
            req = _with_defaults(req)
        if c.get("restartPolicy") == "Always":
            _add(total, req)
            _add(sidecars, req)
            current = dict(sidecars)
        else:
            current = dict(req)
            _add(current, sidecars)
        _max(init_max, current)
    _max(total, init_max)
    if not non_zero:
        _add(total, resource_list(spec.get("overhead")))
    return total


# --------------------------------------------------------------------------- node selector terms

def _match_expression(expr: Mapping[str, Any], value: str | None) -> bool:
    op = expr.get("operator")
    values = expr.get("values") or []
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt"):
        if value is None or len(values) != 1:
            return False
        try:
            have, want = int(value), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    raise InvalidPod(f"{op!r} is not a valid node selector operator")


def node_selector_term_matcher(term: Mapping[str, Any]) -> Callable[[Mapping[str, str], str], bool]:
    """A NodeSelectorTerm as a predicate over (node labels, node name). An empty term matches no node,
    as in Kubernetes; matchFields supports ``metadata.name`` only (the one field the API allows)."""
    exprs = list(term.get("matchExpressions") or [])
    fields = list(term.get("matchFields") or [])
    for f in fields:
        if f.get("key") != "metadata.name":
            raise InvalidPod(f"matchFields key {f.get('key')!r} is not supported (only metadata.name)")
        if f.get("operator") not in ("In", "NotIn"):
            raise InvalidPod(f"matchFields operator {f.get('operator')!r} is not valid (In or NotIn)")
    for e in exprs:
        if e.get("operator") not in ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"):
            raise InvalidPod(f"{e.get('operator')!r} is not a valid node selector operator")
    if not exprs and not fields:
        return lambda labels, name: False

    def match(labels: Mapping[str, str], name: str) -> bool:
        for e in exprs:
            if not _match_expression(e, labels.get(e.get("key", ""))):
                return False
        return all(_match_expression(f, name) for f in fields)

    return match


# --------------------------------------------------------------------------- pod affinity terms

@dataclass(slots=True)
class AffinityTerm:
    """A PodAffinityTerm, compiled. ``namespaces`` None means every namespace (an empty
    namespaceSelector); a non-empty namespaceSelector is matched against namespace labels when the
    caller can supply them."""

    selector: LabelSelector
    topology_key: str
    namespaces: frozenset[str] | None
    namespace_selector: LabelSelector | None = None
    weight: int = 0

    def matches(self, pod: PodInfo, namespace_labels: Callable[[str], Mapping[str, str] | None] | None = None
                ) -> bool:
        if self.namespaces is not None and pod.namespace in self.namespaces:
            return self.selector.matches(pod.labels)
        if self.namespace_selector is not None:
            if self.namespace_selector.empty():
                return self.selector.matches(pod.labels)
            ns_labels = namespace_labels(pod.namespace) if namespace_labels else None
            if ns_labels is not None and self.namespace_selector.matches(ns_labels):
                return self.selector.matches(pod.labels)
        return False


def _selector(sel: Any) -> LabelSelector:
    try:
        return label_selector_from_dict(sel)
    except Exception as e:  # the apiserver's APIError: say what is wrong, in the pod's terms
        raise InvalidPod(f"invalid label selector {sel!r}: {getattr(e, 'message', e)}") from None


def _affinity_term(namespace: str, term: Mapping[str, Any], weight: int = 0) -> AffinityTerm:
    names = term.get("namespaces") or []
    ns_sel_raw = term.get("namespaceSelector")
    ns_sel = _selector(ns_sel_raw) if ns_sel_raw is not None else None
    if not names and ns_sel is None:
        namespaces: frozenset[str] | None = frozenset({namespace})
    else:
        namespaces = frozenset(names)
    return AffinityTerm(_selector(term.get("labelSelector")), str(term.get("topologyKey") or ""),
                        namespaces, ns_sel, weight)


def _required(namespace: str, block: Mapping[str, Any] | None) -> list[AffinityTerm]:
    terms = (block or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or []
    return [_affinity_term(namespace, t) for t in terms]


def _preferred(namespace: str, block: Mapping[str, Any] | None) -> list[AffinityTerm]:
    out = []
    for wt in (block or {}).get("preferredDuringSchedulingIgnoredDuringExecution") or []:
        weight = int(wt.get("weight") or 0)
        if weight:
            out.append(_affinity_term(namespace, wt.get("podAffinityTerm") or {}, weight))
    return out


# --------------------------------------------------------------------------- the pod

@dataclass(slots=True)
class PodInfo:
    key: str
    uid: str
    namespace: str
    name: str
    labels: Mapping[str, str]
    node_name: str
    requests: dict[str, int]
    req_cpu: int
    req_memory: int
    req_ephemeral: int
    req_scalar: dict[str, int]                      # extended resources (nvidia.com/gpu, hugepages-2Mi)
    non_zero_cpu: int
    non_zero_memory: int
    host_ports: list[tuple[str, str, int]]          # (protocol, hostIP, port)
    tolerations: list[Mapping[str, Any]]
    node_selector: Mapping[str, str]
    required_node_terms: list[Callable[[Mapping[str, str], str], bool]] | None
    node_match_key: str | None                      # nodeSelector + required node affinity, canonical
    preferred_node_terms: list[tuple[int, Callable[[Mapping[str, str], str], bool]]]
    affinity: list[AffinityTerm] = field(default_factory=list)
    anti_affinity: list[AffinityTerm] = field(default_factory=list)
    preferred_affinity: list[AffinityTerm] = field(default_factory=list)
    preferred_anti_affinity: list[AffinityTerm] = field(default_factory=list)
    owner_uid: str | None = None
    terminal: bool = False
    preemption_never: bool = False

    @property
    def has_any_affinity(self) -> bool:
        return bool(self.affinity or self.anti_affinity or self.preferred_affinity
                    or self.preferred_anti_affinity)


def _host_ports(spec: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    out = []
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for p in c.get("ports") or []:
            port = p.get("hostPort") or 0
            if port:
                out.append((p.get("protocol") or "TCP", p.get("hostIP") or "0.0.0.0", int(port)))
    return out


def _controller_uid(meta: Mapping[str, Any]) -> str | None:
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid") or None
    return None


def pod_info(pod: Mapping[str, Any]) -> PodInfo:
    """Parse a pod; raises InvalidPod (with a message fit for an event) when it cannot be read."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    namespace = meta.get("namespace") or "default"
    name = meta.get("name") or ""
    requests = pod_requests(spec)
    non_zero = pod_requests(spec, non_zero=True)
    affinity = spec.get("affinity") or {}
    node_aff = affinity.get("nodeAffinity") or {}
    required = node_aff.get("requiredDuringSchedulingIgnoredDuringExecution")
    required_terms = None
    if required is not None:
        required_terms = [node_selector_term_matcher(t) for t in required.get("nodeSelectorTerms") or []]
    preferred_terms = []
    for pt in node_aff.get("preferredDuringSchedulingIgnoredDuringExecution") or []:
        weight = int(pt.get("weight") or 0)
        if weight:
            preferred_terms.append((weight, node_selector_term_matcher(pt.get("preference") or {})))
    pod_aff = affinity.get("podAffinity")
    pod_anti = affinity.get("podAntiAffinity")
    return PodInfo(
        key=f"{namespace}/{name}",
        uid=meta.get("uid") or "",
        namespace=namespace,
        name=name,
        labels=meta.get("labels") or {},
        node_name=spec.get("nodeName") or "",
        requests=requests,
        req_cpu=requests.get(CPU, 0),
        req_memory=requests.get(MEMORY, 0),
        req_ephemeral=requests.get(EPHEMERAL, 0),
        req_scalar={k: v for k, v in requests.items() if k not in (CPU, MEMORY, EPHEMERAL, PODS) and v > 0},
        non_zero_cpu=non_zero.get(CPU, 0),
        non_zero_memory=non_zero.get(MEMORY, 0),
        host_ports=_host_ports(spec),
        tolerations=list(spec.get("tolerations") or []),
        node_selector=spec.get("nodeSelector") or {},
        required_node_terms=required_terms,
        node_match_key=(orjson.dumps([spec.get("nodeSelector") or {}, required], option=orjson.OPT_SORT_KEYS)
                        .decode() if spec.get("nodeSelector") or required is not None else None),
        preferred_node_terms=preferred_terms,
        affinity=_required(namespace, pod_aff),
        anti_affinity=_required(namespace, pod_anti),
        preferred_affinity=_preferred(namespace, pod_aff),
        preferred_anti_affinity=_preferred(namespace, pod_anti),
        owner_uid=_controller_uid(meta),
        terminal=(pod.get("status") or {}).get("phase") in TERMINAL_PHASES,
        preemption_never=spec.get("preemptionPolicy") == "Never",
    )


# --------------------------------------------------------------------------- tolerations

def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """v1.Toleration.ToleratesTaint: an empty effect matches every effect, an empty key with Exists
    matches every key; Equal (the default operator) compares values."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    op = toleration.get("operator") or "Equal"
    if op == "Exists":
        return True
    if op == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def tolerated(tolerations: list[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    return any(tolerates(t, taint) for t in tolerations)
