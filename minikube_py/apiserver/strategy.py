"""Per-kind rules applied by the generic registry, as Kubernetes' REST strategies do them:
what create and update reset, when generation moves, how deletion proceeds, and what a Service
allocates."""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from minikube_py.api import errors
from minikube_py.api.resources import ResourceInfo

if TYPE_CHECKING:
    from .registry import DeleteOptions, Registry

log = logging.getLogger("minikube_py.apiserver.strategy")

# Kinds whose metadata.generation counts spec changes (observedGeneration is compared against it).
GENERATION_KINDS = frozenset({"Deployment", "ReplicaSet", "DaemonSet"})

# The metadata fields a client can never change after create.
_SYSTEM_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation")

# DefaultTolerationSeconds admission: pods ride out a node problem for 5 minutes before eviction.
_DEFAULT_TOLERATIONS = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
     "tolerationSeconds": 300},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
     "tolerationSeconds": 300},
)


_REQUIRED_STATUS_COUNTERS = {
    "ReplicaSet": ("replicas",),
    "DaemonSet": ("currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled", "numberReady"),
}


def _now_plus(seconds: int) -> str:
    t = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def prepare_for_create(info: ResourceInfo, obj: dict[str, Any]) -> None:
    kind = info.kind
    if kind == "Pod":
        spec = obj.get("spec")
        if isinstance(spec, dict):
            spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
            tolerations = spec.setdefault("tolerations", [])
            if isinstance(tolerations, list):
                have = {(t.get("key"), t.get("effect")) for t in tolerations if isinstance(t, dict)}
                for t in _DEFAULT_TOLERATIONS:
                    if (t["key"], t["effect"]) not in have:
                        tolerations.append(dict(t))
        obj["status"] = {"phase": "Pending", "qosClass": _qos_class(spec if isinstance(spec, dict) else {})}
    elif kind in ("Deployment", "ReplicaSet", "DaemonSet"):
        # Go serializes these status counters without omitempty, so clients (the Python client's
        # models among them) expect them present from the start.
        obj["status"] = dict.fromkeys(_REQUIRED_STATUS_COUNTERS.get(kind, ()), 0)
    elif kind == "Service":
        obj["status"] = {"loadBalancer": {}}
    elif kind == "Namespace":
        obj["status"] = {"phase": "Active"}


def _qos_class(spec: dict[str, Any]) -> str:
    # Not yet validated: a wrongly typed list is validation's to report, so it counts as empty here.
    containers = [c for group in ("containers", "initContainers") if isinstance(spec.get(group), list)
                  for c in spec[group] if isinstance(c, dict)]
    requests_any = False
    guaranteed = bool(containers)
    for c in containers:
        res = c.get("resources") if isinstance(c.get("resources"), dict) else {}
        req = res.get("requests") if isinstance(res.get("requests"), dict) else {}
        lim = res.get("limits") if isinstance(res.get("limits"), dict) else {}
        if req or lim:
            requests_any = True
        for r in ("cpu", "memory"):
            if r not in lim or req.get(r, lim.get(r)) != lim.get(r):
                guaranteed = False
    if guaranteed:
        return "Guaranteed"
    return "Burstable" if requests_any else "BestEffort"


def prepare_for_update(info: ResourceInfo, new: dict[str, Any], old: dict[str, Any], subresource: str | None) -> None:
    new_meta, old_meta = new["metadata"], old["metadata"]
    for f in _SYSTEM_META:
        if f in old_meta:
            new_meta[f] = old_meta[f]
        else:
            new_meta.pop(f, None)
    if "managedFields" in old_meta and "managedFields" not in new_meta:
        # Field ownership survives writes that do not mention it (server-side apply needs it).
        new_meta["managedFields"] = old_meta["managedFields"]
    if subresource == "status":
        # The status endpoint changes status only; everything else stays as stored.
        rv = new_meta.get("resourceVersion")
        new["metadata"] = {**old_meta, "resourceVersion": rv}
        if "spec" in old:
            new["spec"] = old["spec"]
        else:
            new.pop("spec", None)
        return
    if subresource == "finalize":
        spec = new.get("spec") if isinstance(new.get("spec"), dict) else {}
        new.clear()
        new.update(old)
        new["spec"] = {**(old.get("spec") or {}), "finalizers": spec.get("finalizers") or []}
        return
    if info.kind in GENERATION_KINDS and new.get("spec") != old.get("spec"):
        new_meta["generation"] = int(old_meta.get("generation") or 1) + 1
    if subresource is not None:
        return  # binding, scale: the server's own narrow edits, nothing to reset
    if "status" in info.subresources:
        # The main endpoint never changes status (Kubernetes resets it from the stored object).
        if "status" in old:
            new["status"] = old["status"]
        else:
            new.pop("status", None)
    if info.kind == "Service":
        _keep_service_allocations(new, old)
    elif info.kind == "Pod":
        spec, old_spec = new.get("spec"), old.get("spec") or {}
        if isinstance(spec, dict) and old_spec.get("nodeName") and not spec.get("nodeName"):
            spec["nodeName"] = old_spec["nodeName"]
        if isinstance(spec, dict):
            _mirror_service_account(spec, old_spec)


def _mirror_service_account(spec: dict[str, Any], old_spec: dict[str, Any]) -> None:
    """``spec.serviceAccount`` is the deprecated mirror of ``serviceAccountName``: Kubernetes keeps only
    the name and writes the mirror on output, so an update that drops or keeps the mirror changes
    nothing (and a change of the name is refused by validation, as spec changes are)."""
    if not spec.get("serviceAccountName") and spec.get("serviceAccount"):
        spec["serviceAccountName"] = spec["serviceAccount"]
    if "serviceAccount" in old_spec and spec.get("serviceAccountName"):
        spec["serviceAccount"] = spec["serviceAccountName"]
    elif "serviceAccount" not in old_spec and spec.get("serviceAccount") == spec.get("serviceAccountName"):
        spec.pop("serviceAccount", None)


def _keep_service_allocations(new: dict[str, Any], old: dict[str, Any]) -> None:
    spec, old_spec = new.get("spec"), old.get("spec") or {}
    if not isinstance(spec, dict):
        return
    if old_spec.get("clusterIP") and not spec.get("clusterIP"):
        spec["clusterIP"] = old_spec["clusterIP"]
        spec["clusterIPs"] = old_spec.get("clusterIPs") or [old_spec["clusterIP"]]
    if spec.get("type") in ("NodePort", "LoadBalancer"):
        old_ports = {(p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
                     for p in old_spec.get("ports") or [] if isinstance(p, dict)}
        for p in spec.get("ports") or []:
            if isinstance(p, dict) and not p.get("nodePort"):
                kept = old_ports.get((p.get("port"), p.get("protocol", "TCP")))
                if kept:
                    p["nodePort"] = kept


def default_and_validate(info: ResourceInfo, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    from minikube_py.api.defaults import apply_defaults
    from minikube_py.api.validation import validate

    try:
        apply_defaults(info, obj)
        causes = validate(info, obj, old)
    except (TypeError, AttributeError, ValueError) as e:
        # kube-apiserver decodes into typed structs and answers a wrongly typed field with 400 before
        # defaulting or validation see it; here such a value can reach them, so 400 comes from here.
        log.warning("malformed %s reached defaulting/validation: %s: %s", info.kind, type(e).__name__, e)
        raise errors.bad_request(f"the {info.kind} is malformed: {type(e).__name__}: {e}") from None
    if causes:
        raise errors.invalid(info.kind, str(obj.get("metadata", {}).get("name", "")), causes, info.group)


# ---- allocation (Services) ---------------------------------------------------------------------

def _service_ports(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec") or {}
    return [p for p in spec.get("ports") or [] if isinstance(p, dict)]


def owned_allocations(info: ResourceInfo, obj: dict[str, Any] | None) -> list[tuple[str, Any]]:
    if info.kind != "Service" or not obj:
        return []
    spec = obj.get("spec") or {}
    out: list[tuple[str, Any]] = []
    ip = spec.get("clusterIP")
    if ip and ip != "None":
        out.append(("ip", ip))
    for p in _service_ports(obj):
        if p.get("nodePort"):
            out.append(("port", p["nodePort"]))
    return out


def released_by_update(info: ResourceInfo, new: dict[str, Any], old: dict[str, Any]) -> list[tuple[str, Any]]:
    keep = set(owned_allocations(info, new))
    return [a for a in owned_allocations(info, old) if a not in keep]


async def allocate(
    reg: Registry, info: ResourceInfo, obj: dict[str, Any], old: dict[str, Any] | None, *, dry_run: bool
) -> list[tuple[str, Any]]:
    """Reserve what ``obj`` needs beyond what ``old`` already holds; returns the new reservations so a
    failed write can give them back. A dry run checks but reserves nothing."""
    if info.kind != "Service":
        return []
    spec = obj.setdefault("spec", {})
    held = set(owned_allocations(info, old))
    taken: list[tuple[str, Any]] = []
    owner = f"{obj['metadata'].get('namespace')}/{obj['metadata'].get('name')}"
    try:
        svc_type = spec.get("type", "ClusterIP")
        if svc_type == "ExternalName":
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        else:
            ip = spec.get("clusterIP")
            if ip in (None, ""):
                ip = "0.0.0.0" if dry_run else await reg.ips.allocate(owner=owner)
                if not dry_run:
                    taken.append(("ip", ip))
                spec["clusterIP"] = ip
            elif ip != "None" and ("ip", ip) not in held:
                if dry_run:
                    if not reg.ips.contains(ip):
                        await reg.ips.allocate(ip, owner=owner)  # raises the range error, reserves nothing
                else:
                    await reg.ips.allocate(ip, owner=owner)
                    taken.append(("ip", ip))
            spec["clusterIPs"] = [spec["clusterIP"]]
        wants_node_ports = svc_type in ("NodePort", "LoadBalancer")
        for i, p in enumerate(_service_ports(obj)):
            if not wants_node_ports:
                p.pop("nodePort", None)
                continue
            port = p.get("nodePort")
            field = f"spec.ports[{i}].nodePort"
            if port in (None, 0):
                if dry_run:
                    continue
                p["nodePort"] = await reg.ports.allocate(owner=owner, field=field)
                taken.append(("port", p["nodePort"]))
            elif ("port", port) not in held and not dry_run:
                if not isinstance(port, int):
                    raise errors.ApiError(422, "Invalid", f"{field}: Invalid value: {port!r}: must be an integer")
                await reg.ports.allocate(port, owner=owner, field=field)
                taken.append(("port", port))
    except BaseException:
        await release(reg, info, taken)
        raise
    return taken


async def release(reg: Registry, info: ResourceInfo, allocations: list[tuple[str, Any]]) -> None:
    for what, value in allocations:
        if what == "ip":
            await reg.ips.release(value)
        else:
            await reg.ports.release(value)


# ---- deletion ----------------------------------------------------------------------------------

def should_delete_now(obj: dict[str, Any]) -> bool:
    """An object marked for deletion goes once no finalizer holds it and its grace period is over."""
    m = obj.get("metadata") or {}
    if not m.get("deletionTimestamp") or m.get("finalizers"):
        return False
    if obj.get("kind") == "Namespace" and (obj.get("spec") or {}).get("finalizers"):
        return False
    return not m.get("deletionGracePeriodSeconds")


def begin_delete(info: ResourceInfo, obj: dict[str, Any], opts: DeleteOptions) -> dict[str, Any] | None:
    """The object to write instead of deleting (graceful or finalizer-held deletion), or None to
    delete it now."""
    m = obj["metadata"]
    finalizers = list(m.get("finalizers") or [])
    if opts.propagation_policy == "Orphan" and "orphan" not in finalizers:
        finalizers.append("orphan")
    elif opts.propagation_policy == "Foreground" and "foregroundDeletion" not in finalizers:
        finalizers.append("foregroundDeletion")
    new = {**obj, "metadata": {**m}}
    nm = new["metadata"]
    if finalizers:
        nm["finalizers"] = finalizers
    if info.kind == "Namespace":
        spec_finalizers = (obj.get("spec") or {}).get("finalizers")
        if not (spec_finalizers or finalizers):
            return None
        nm.setdefault("deletionTimestamp", _now_plus(0))
        nm["deletionGracePeriodSeconds"] = 0
        new["status"] = {**(obj.get("status") or {}), "phase": "Terminating"}
        return new
    if info.kind == "Pod":
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        grace = opts.grace_period_seconds
        if grace is None:
            grace = int(spec.get("terminationGracePeriodSeconds", 30) or 0)
        # Unscheduled or finished pods have nothing to stop: they go at once (Kubernetes does the same).
        if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
            grace = 0
        current = m.get("deletionGracePeriodSeconds")
        if m.get("deletionTimestamp") and current is not None and grace >= current:
            grace = current  # a second delete may shorten the grace period, never lengthen it
        if grace > 0 or finalizers:
            if grace > 0:
                nm["deletionTimestamp"] = _now_plus(grace)
            else:
                nm.setdefault("deletionTimestamp", _now_plus(0))
            nm["deletionGracePeriodSeconds"] = grace
            return new
        return None
    if finalizers:
        nm.setdefault("deletionTimestamp", _now_plus(0))
        nm["deletionGracePeriodSeconds"] = 0
        return new
    return None
