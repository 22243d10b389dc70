"""What the workload controllers share about pods and their owners: activity, readiness and
availability, the pod-template hash, int-or-percent rounding, the order surplus pods are deleted in,
controller expectations, and adopting/releasing objects by ownerReference.

These mirror kube-controller-manager's ``pkg/controller`` helpers so that the ReplicaSet, Deployment
and DaemonSet controllers agree on what "available" or "the same template" means."""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from minikube_py.apiserver.selectors import LabelSelector, label_selector_from_dict
from minikube_py.client.informer import Informer, key_of
from minikube_py.client.rest import APIClient, ApiStatusError

from .base import controller_ref, owner_reference

POD_TEMPLATE_HASH = "pod-template-hash"
# Index on the pods informer: pods by the uid of their controller (the owner with controller: true).
CONTROLLER_UID_INDEX = "workloads/controller-uid"

# rand.SafeEncodeString's alphabet: no vowels (no words) and no look-alikes such as 0/o, 1/l.
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

# The order kube-controller-manager prefers to delete pods in: the least useful first.
_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


class InvalidSpec(ValueError):
    """A workload's spec the controller cannot act on (bad selector, bad int-or-percent)."""


# ---- time ------------------------------------------------------------------------------------------

def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> float | None:
    """An RFC 3339 timestamp as unix seconds, or None when missing or unreadable."""
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# ---- pod state -------------------------------------------------------------------------------------

def is_terminating(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def is_active(pod: Mapping[str, Any]) -> bool:
    """controller.IsPodActive: not finished and not being deleted."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not is_terminating(pod)


def ready_condition(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for cond in (pod.get("status") or {}).get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            return cond
    return None


def is_ready(pod: Mapping[str, Any]) -> bool:
    cond = ready_condition(pod)
    return cond is not None and cond.get("status") == "True"


def is_available(pod: Mapping[str, Any], min_ready_seconds: int = 0, now: float | None = None) -> bool:
    """podutil.IsPodAvailable: ready, and ready for at least ``min_ready_seconds``."""
    if not is_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = parse_time((ready_condition(pod) or {}).get("lastTransitionTime"))
    if since is None:
        return False
    return since + min_ready_seconds <= (time.time() if now is None else now)


def seconds_until_available(pod: Mapping[str, Any], min_ready_seconds: int, now: float | None = None
                            ) -> float | None:
    """How long until a ready pod becomes available (None when not ready or already available)."""
    if min_ready_seconds <= 0 or not is_ready(pod):
        return None
    since = parse_time((ready_condition(pod) or {}).get("lastTransitionTime"))
    if since is None:
        return None
    left = since + min_ready_seconds - (time.time() if now is None else now)
    return left if left > 0 else None


def deletion_rank(pod: Mapping[str, Any]) -> tuple[Any, ...]:
    """Sort key: the pod to delete first sorts first. As controller.ActivePods: unscheduled before
    scheduled, Pending before Unknown before Running, not ready before ready, ready for less time
    before longer, more restarts before fewer, newer before older."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    meta = pod.get("metadata") or {}
    ready = is_ready(pod)
    ready_since = parse_time((ready_condition(pod) or {}).get("lastTransitionTime")) or 0.0
    restarts = sum(int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or ()
                   if isinstance(c, Mapping))
    created = parse_time(meta.get("creationTimestamp")) or 0.0
    return (
        1 if spec.get("nodeName") else 0,
        _PHASE_RANK.get(status.get("phase") or "Pending", 0),
        1 if ready else 0,
        -ready_since if ready else 0.0,
        -restarts,
        -created,
        # Ties (same second) broken by name so the choice is stable between resyncs.
        meta.get("name") or "",
    )


# ---- templates -------------------------------------------------------------------------------------

def _fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode(text: str) -> str:
    return "".join(_SAFE_ALPHABET[ord(c) % len(_SAFE_ALPHABET)] for c in text)


def _without_nulls(value: Any) -> Any:
    """Go decodes ``null`` and a missing field alike (kubectl's undo sends ``creationTimestamp: null``
    in the template); comparing JSON, the nulls must go for the two to be equal here too."""
    if isinstance(value, Mapping):
        # An empty list is Go's nil slice too (semantic equality treats them alike).
        return {k: _without_nulls(v) for k, v in value.items() if v is not None and v != []}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def template_hash(template: Mapping[str, Any], collision_count: int | None = None) -> str:
    """controller.ComputeHash's shape: FNV-32a over the template (canonical JSON here, where Kubernetes
    uses a deep printer, so values differ from Kubernetes' but are just as stable), plus the collision
    count when there is one, printed in decimal and mapped onto the safe alphabet."""
    data = json.dumps(_without_nulls(template), sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += str(int(collision_count)).encode()
    return safe_encode(str(_fnv32a(data)))


def without_hash_label(template: Mapping[str, Any]) -> dict[str, Any]:
    t = _without_nulls(copy.deepcopy(dict(template)))
    labels = (t.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH, None)
        if not labels:
            # An emptied map equals a missing one, as in Go's semantic equality.
            t["metadata"].pop("labels")
    return t


def templates_equal(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """EqualIgnoreHash: two pod templates are the same when they differ only in pod-template-hash."""
    return without_hash_label(a or {}) == without_hash_label(b or {})


# ---- selectors and numbers -------------------------------------------------------------------------

def selector_of(obj: Mapping[str, Any]) -> LabelSelector:
    """``spec.selector`` of a workload; a missing selector selects nothing (as LabelSelectorAsSelector)."""
    sel = (obj.get("spec") or {}).get("selector")
    try:
        return label_selector_from_dict(sel)
    except Exception as e:  # the apiserver helper raises its HTTP error type; say it in our terms
        raise InvalidSpec(f"invalid spec.selector {sel!r}: {getattr(e, 'message', e)}") from None


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


_PERCENT = re.compile(r"^(\d+)%$")


def int_or_percent(value: int | str | None, total: int, round_up: bool, default: int | str = 0) -> int:
    """intstr.GetScaledValueFromIntOrPercent: an int as is, ``"25%"`` of ``total`` rounded up or down."""
    if value is None:
        value = default
    if isinstance(value, bool):
        raise InvalidSpec(f"invalid int-or-percent value {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _PERCENT.match(value.strip())
        if m:
            scaled = int(m.group(1)) * total / 100
            return math.ceil(scaled) if round_up else math.floor(scaled)
        if value.strip().isdigit():
            return int(value)
    raise InvalidSpec(f"invalid int-or-percent value {value!r}: want an integer or a percentage like '25%'")


def slow_start_batches(count: int, initial: int = 1) -> list[int]:
    """Batch sizes for creating ``count`` objects: 1, 2, 4, ... (controller.slowStartBatch), so a
    systematically failing create (quota, bad template) costs one request, not hundreds."""
    sizes = []
    size = max(1, initial)
    left = count
    while left > 0:
        batch = min(size, left)
        sizes.append(batch)
        left -= batch
        size *= 2
    return sizes


# ---- expectations ----------------------------------------------------------------------------------

# controller.ExpectationsTimeout: expectations older than this are ignored, so a lost watch event
# cannot wedge a controller forever.
EXPECTATIONS_TTL = 300.0


@dataclass
class _Expectation:
    adds: int = 0
    deletes: set[str] = field(default_factory=set)
    at: float = field(default_factory=time.monotonic)


class Expectations:
    """ControllerExpectations + UIDTrackingExpectations: how many creations and which deletions a
    controller still waits to see in its informer before it trusts the cache again."""

    def __init__(self, ttl: float = EXPECTATIONS_TTL) -> None:
        self.ttl = ttl
        self._by_key: dict[str, _Expectation] = {}

    def satisfied(self, key: str) -> bool:
        e = self._by_key.get(key)
        if e is None:
            return True
        if e.adds <= 0 and not e.deletes:
            return True
        return time.monotonic() - e.at > self.ttl

    def expect(self, key: str, creations: int = 0, deletions: Iterable[str] = ()) -> None:
        self._by_key[key] = _Expectation(adds=creations, deletes=set(deletions))

    def expect_creations(self, key: str, count: int) -> None:
        self.expect(key, creations=count)

    def expect_deletions(self, key: str, pod_keys: Iterable[str]) -> None:
        self.expect(key, deletions=pod_keys)

    def creation_observed(self, key: str, count: int = 1) -> None:
        e = self._by_key.get(key)
        if e is not None:
            e.adds -= count

    def deletion_observed(self, key: str, pod_key: str) -> None:
        e = self._by_key.get(key)
        if e is not None:
            e.deletes.discard(pod_key)

    def forget(self, key: str) -> None:
        self._by_key.pop(key, None)


# ---- ownership -------------------------------------------------------------------------------------

def ensure_controller_uid_index(pods: Informer) -> None:
    """The pods-by-controller-uid index, shared by every workload controller on the same informer."""
    try:
        pods.add_index(CONTROLLER_UID_INDEX, _controller_uid)
    except ValueError:
        pass  # another controller added it already: same name, same function


def _controller_uid(obj: dict[str, Any]) -> list[str]:
    ref = controller_ref(obj)
    return [str(ref["uid"])] if ref and ref.get("uid") else []


def live_owner_key(obj: dict[str, Any], kind: str, owners: Informer) -> str | None:
    """The cache key of ``obj``'s controller when that is a ``kind`` in ``owners`` with the uid the
    reference names: an owner deleted and recreated under the same name is not it."""
    ref = controller_ref(obj)
    if ref is None or ref.get("kind") != kind:
        return None
    key = f"{obj['metadata'].get('namespace')}/{ref.get('name')}"
    owner = owners.get(key)
    if owner is None or owner["metadata"].get("uid") != ref.get("uid"):
        return None
    return key


def selecting_owners(obj: dict[str, Any], owners: Informer) -> list[dict[str, Any]]:
    """The objects in ``owners`` of ``obj``'s namespace whose selector matches its labels: an orphan's
    candidate adopters. An owner with an invalid selector selects nothing."""
    labels = labels_of(obj)
    out = []
    for owner in owners.list(obj["metadata"].get("namespace")):
        try:
            if selector_of(owner).matches(labels):
                out.append(owner)
        except InvalidSpec:
            continue
    return out


def owned_by(obj: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    ref = controller_ref(dict(obj))
    return ref is not None and ref.get("uid") == (owner.get("metadata") or {}).get("uid")


async def claim(client: APIClient, owner: dict[str, Any], owner_res: str, candidates: Iterable[dict[str, Any]],
                res: str, selector: LabelSelector) -> list[dict[str, Any]]:
    """ClaimObjects: the ``candidates`` (of resource ``res``) that ``owner`` controls, after releasing
    owned ones its selector no longer matches and adopting matching orphans. Neither happens while the
    owner is being deleted, and adoption waits for a fresh read (RecheckDeletionTimestamp): the cache
    may be stale, and an owner deleted or replaced under the same name must not adopt."""
    uid = owner["metadata"]["uid"]
    owned: list[dict[str, Any]] = []
    orphans: list[dict[str, Any]] = []
    for obj in candidates:
        ref = controller_ref(obj)
        matches = selector.matches(labels_of(obj))
        if ref is not None:
            if ref.get("uid") != uid:
                continue
            if matches:
                owned.append(obj)
            elif not is_terminating(owner):
                await release(client, res, obj, uid)
        elif matches and not is_terminating(obj) and not is_terminating(owner):
            orphans.append(obj)
    if orphans:
        m = owner["metadata"]
        fresh = await client.get_or_none(owner_res, m["name"], m["namespace"])
        if fresh is not None and fresh["metadata"].get("uid") == uid and not is_terminating(fresh):
            for obj in orphans:
                adopted = await adopt(client, res, obj, owner)
                if adopted is not None:
                    owned.append(adopted)
    return owned


async def adopt(client: APIClient, res: str, obj: Mapping[str, Any], owner: dict[str, Any]
                ) -> dict[str, Any] | None:
    """Make ``owner`` the controller of ``obj`` (ClaimObject's adopt). None when the object changed or
    went away meanwhile: the informer will show the new state and the owner is synced again."""
    refs = [dict(r) for r in (obj.get("metadata") or {}).get("ownerReferences") or ()]
    refs.append(owner_reference(owner))
    return await _write_refs(client, res, obj, refs)


async def release(client: APIClient, res: str, obj: Mapping[str, Any], owner_uid: str
                  ) -> dict[str, Any] | None:
    """Drop every ownerReference to ``owner_uid`` from ``obj`` (ClaimObject's release)."""
    refs = [dict(r) for r in (obj.get("metadata") or {}).get("ownerReferences") or ()
            if r.get("uid") != owner_uid]
    return await _write_refs(client, res, obj, refs)


async def _write_refs(client: APIClient, res: str, obj: Mapping[str, Any], refs: list[dict[str, Any]]
                      ) -> dict[str, Any] | None:
    meta = obj.get("metadata") or {}
    # A JSON patch with tests on uid and resourceVersion: the write only lands on the exact object
    # version the decision was made on (Kubernetes puts the uid in its patch for the same reason).
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/uid", "value": meta.get("uid")},
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")},
        {"op": "add", "path": "/metadata/ownerReferences", "value": refs},
    ]
    try:
        return await client.patch(res, meta["name"], ops, meta.get("namespace"), patch_type="json")
    except ApiStatusError as e:
        if e.code in (404, 409, 422):
            return None
        raise


def pod_key(pod: Mapping[str, Any]) -> str:
    return key_of(dict(pod))
