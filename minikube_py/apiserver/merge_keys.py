"""Strategic-merge metadata of the served kinds: which lists merge, and by which key.

Kubernetes reads this from the Go struct tags (``patchStrategy``, ``patchMergeKey``) of the typed
objects; we have no typed objects, so the tags are restated here per struct, checked against
kubernetes/api core/v1 and apps/v1 types.go and apimachinery meta/v1 types.go. A field absent from a
struct below is treated as Kubernetes treats an untagged field: maps merge key by key, lists are atomic
(the patch replaces them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from minikube_py.api.resources import ResourceInfo


@dataclass(frozen=True, slots=True)
class FieldMeta:
    """One field's patch metadata; ``struct`` describes the value (a map) or each list element."""

    merge_key: str | None = None  # lists of maps: the key that identifies an element
    merge: bool = False  # patchStrategy "merge": keyed lists merge by key, scalar lists as a set
    retain_keys: bool = False  # patchStrategy "retainKeys": kubectl sends $retainKeys for it
    struct: Mapping[str, FieldMeta] | None = None


Struct = Mapping[str, FieldMeta]


def _keyed(key: str, struct: Struct | None = None, retain_keys: bool = False) -> FieldMeta:
    return FieldMeta(merge_key=key, merge=True, retain_keys=retain_keys, struct=struct)


def _nested(struct: Struct, retain_keys: bool = False) -> FieldMeta:
    return FieldMeta(struct=struct, retain_keys=retain_keys)


_SET = FieldMeta(merge=True)  # a list of scalars merged as a set (finalizers, podCIDRs)
_CONDITIONS = _keyed("type")

OBJECT_META: Struct = {
    "ownerReferences": _keyed("uid"),
    "finalizers": _SET,
}

CONTAINER: Struct = {
    # Newer Kubernetes lists (containerPort, protocol) as the map keys for server-side apply, but
    # the strategic-merge key is still containerPort alone.
    "ports": _keyed("containerPort"),
    "env": _keyed("name"),
    "volumeMounts": _keyed("mountPath"),
    "volumeDevices": _keyed("devicePath"),
    # envFrom, command, args, resizePolicy: untagged, hence atomic.
}

POD_SPEC: Struct = {
    "volumes": _keyed("name", retain_keys=True),
    "initContainers": _keyed("name", CONTAINER),
    "containers": _keyed("name", CONTAINER),
    "ephemeralContainers": _keyed("name", CONTAINER),
    "imagePullSecrets": _keyed("name"),
    "hostAliases": _keyed("ip"),
    "topologySpreadConstraints": _keyed("topologyKey"),
    "schedulingGates": _keyed("name"),
    "resourceClaims": _keyed("name", retain_keys=True),
    # tolerations, readinessGates: untagged, hence atomic.
}

POD_STATUS: Struct = {
    "conditions": _CONDITIONS,
    "podIPs": _keyed("ip"),
    "hostIPs": _keyed("ip"),
    "resourceClaimStatuses": _keyed("name", retain_keys=True),
    # containerStatuses and friends: untagged, hence atomic.
}

POD_TEMPLATE: Struct = {"metadata": _nested(OBJECT_META), "spec": _nested(POD_SPEC)}

_WITH_CONDITIONS: Struct = {"conditions": _CONDITIONS}


def _object(spec: Struct | None = None, status: Struct | None = None, **top: FieldMeta) -> Struct:
    fields: dict[str, FieldMeta] = {"metadata": _nested(OBJECT_META)}
    if spec is not None:
        fields["spec"] = _nested(spec)
    if status is not None:
        fields["status"] = _nested(status)
    fields.update(top)
    return fields


_PLAIN = _object()

_BY_KIND: dict[tuple[str, str], Struct] = {
    ("", "Pod"): _object(POD_SPEC, POD_STATUS),
    ("", "Node"): _object({"podCIDRs": _SET}, {"conditions": _CONDITIONS, "addresses": _keyed("type")}),
    ("", "Namespace"): _object(None, _WITH_CONDITIONS),
    ("", "Service"): _object({"ports": _keyed("port")}, _WITH_CONDITIONS),
    ("", "ServiceAccount"): _object(secrets=_keyed("name")),
    ("apps", "Deployment"): _object(
        {"template": _nested(POD_TEMPLATE), "strategy": FieldMeta(retain_keys=True)}, _WITH_CONDITIONS),
    ("apps", "ReplicaSet"): _object({"template": _nested(POD_TEMPLATE)}, _WITH_CONDITIONS),
    ("apps", "DaemonSet"): _object({"template": _nested(POD_TEMPLATE)}, _WITH_CONDITIONS),
}


def patch_schema(info: ResourceInfo) -> Struct:
    """The root struct of a kind; kinds without tagged fields below metadata get metadata only."""
    return _BY_KIND.get((info.group, info.kind), _PLAIN)


def merge_key_table(info: ResourceInfo) -> dict[str, FieldMeta]:
    """Every tagged field of a kind by dotted path (``spec.template.spec.containers.ports``)."""
    table: dict[str, FieldMeta] = {}

    def walk(struct: Struct, prefix: str) -> None:
        for name, meta in struct.items():
            path = f"{prefix}{name}"
            if meta.merge or meta.retain_keys:
                table[path] = meta
            if meta.struct is not None:
                walk(meta.struct, f"{path}.")

    walk(patch_schema(info), "")
    return table
