"""OpenAPI schemas of the served kinds, derived from the official ``kubernetes`` client's models.

The client's generated pydantic models carry every field's JSON name, type, required flag and
Kubernetes' own description. They lose what the apiserver's schema adds for clients: the real
definition names, the shapes of ``Quantity``/``IntOrString``/``Time``, and the list metadata
(``x-kubernetes-patch-*``, ``x-kubernetes-list-*``) that client-side apply needs to build a
strategic merge patch. Those are restored here from small tables of well-known facts.

Building means importing ~240 pydantic model classes (0.7 s on an idle machine, several seconds
on a busy one), so nothing is built until first use (or :func:`warm_up` in a background thread),
and the result is kept in memory and on disk (``$MINIKUBE_PY_CACHE_DIR``, else
``$XDG_CACHE_HOME/minikube-py``), keyed by the kubernetes client's version and this module's source.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.metadata
import json
import os
import re
import tempfile
import threading
import typing
from pathlib import Path
from typing import Any

import orjson

from minikube_py.api.resources import RESOURCES, ResourceInfo

REF_PREFIX = "#/components/schemas/"

_META = "io.k8s.apimachinery.pkg.apis.meta.v1"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
TIME = f"{_META}.Time"
MICRO_TIME = f"{_META}.MicroTime"
FIELDS_V1 = f"{_META}.FieldsV1"
RAW_EXTENSION = "io.k8s.apimachinery.pkg.runtime.RawExtension"
PATCH = f"{_META}.Patch"

# Types of apimachinery's meta/v1 package; every other unprefixed client model is core/v1 unless
# _GROUP_TYPES says otherwise.
_META_TYPES = frozenset({
    "ObjectMeta", "ListMeta", "LabelSelector", "LabelSelectorRequirement", "ManagedFieldsEntry",
    "OwnerReference", "Condition", "Status", "StatusDetails", "StatusCause", "DeleteOptions",
    "Preconditions", "WatchEvent", "APIResource", "APIResourceList", "APIGroup", "APIGroupList",
    "APIVersions", "GroupVersionForDiscovery", "ServerAddressByClientCIDR",
})

# Client models with no group prefix that belong to a group other than core. The client only
# prefixes a name with its group when two groups define the same type name.
_GROUP_TYPES: dict[str, frozenset[str]] = {
    "apps": frozenset({
        "Deployment", "DeploymentList", "DeploymentSpec", "DeploymentStatus", "DeploymentStrategy",
        "DeploymentCondition", "RollingUpdateDeployment", "ReplicaSet", "ReplicaSetList",
        "ReplicaSetSpec", "ReplicaSetStatus", "ReplicaSetCondition", "DaemonSet", "DaemonSetList",
        "DaemonSetSpec", "DaemonSetStatus", "DaemonSetCondition", "DaemonSetUpdateStrategy",
        "RollingUpdateDaemonSet",
    }),
    "coordination": frozenset({"Lease", "LeaseList", "LeaseSpec"}),
    "discovery": frozenset({
        "EndpointSlice", "EndpointSliceList", "Endpoint", "EndpointConditions", "EndpointHints",
        "EndpointPort", "ForZone", "ForNode",
    }),
    "autoscaling": frozenset({"Scale", "ScaleSpec", "ScaleStatus"}),
    "policy": frozenset({"Eviction"}),
    "authentication": frozenset({"TokenRequest", "TokenRequestSpec", "TokenRequestStatus",
                                 "BoundObjectReference"}),
    "rbac": frozenset({"Role", "RoleList", "ClusterRole", "ClusterRoleList", "RoleBinding", "RoleBindingList",
                       "ClusterRoleBinding", "ClusterRoleBindingList", "PolicyRule", "RoleRef",
                       "AggregationRule"}),
}

# Types served next to the kinds: subresource bodies and the generic API objects.
_EXTRA_MODELS = ("V1Status", "V1DeleteOptions", "V1WatchEvent", "V1Scale", "V1Binding", "V1Eviction",
                 "AuthenticationV1TokenRequest")

# (type, field) pairs whose string values are resource quantities.
_QUANTITY_FIELDS = frozenset({
    ("ResourceRequirements", "limits"), ("ResourceRequirements", "requests"),
    ("VolumeResourceRequirements", "limits"), ("VolumeResourceRequirements", "requests"),
    ("EmptyDirVolumeSource", "sizeLimit"), ("ResourceFieldSelector", "divisor"),
    ("NodeStatus", "capacity"), ("NodeStatus", "allocatable"), ("PodSpec", "overhead"),
    ("ContainerStatus", "allocatedResources"), ("PersistentVolumeClaimStatus", "capacity"),
    ("PersistentVolumeClaimStatus", "allocatedResources"),
})
# Timestamps with microsecond precision; every other timestamp is a Time.
_MICRO_TIME_FIELDS = frozenset({
    ("Event", "eventTime"), ("EventSeries", "lastObservedTime"),
    ("LeaseSpec", "acquireTime"), ("LeaseSpec", "renewTime"),
})
_FREE_FORM_FIELDS = {("ManagedFieldsEntry", "fieldsV1"): FIELDS_V1, ("WatchEvent", "object"): RAW_EXTENSION}

# List metadata as the apiserver publishes it: (patch strategy, patch merge key, list type, map keys).
_Lm = tuple[str | None, str | None, str, tuple[str, ...]]
_BY_NAME: _Lm = ("merge", "name", "map", ("name",))
_ATOMIC: _Lm = (None, None, "atomic", ())
_CONDITIONS: _Lm = ("merge", "type", "map", ("type",))
_CONTAINER_LISTS: dict[str, _Lm] = {
    "ports": ("merge", "containerPort", "map", ("containerPort", "protocol")),
    "env": _BY_NAME,
    "volumeMounts": ("merge", "mountPath", "map", ("mountPath",)),
    "volumeDevices": ("merge", "devicePath", "map", ("devicePath",)),
    "envFrom": _ATOMIC, "args": _ATOMIC, "command": _ATOMIC, "resizePolicy": _ATOMIC,
}
_LIST_META: dict[str, dict[str, _Lm]] = {
    "PodSpec": {
        "containers": _BY_NAME, "initContainers": _BY_NAME, "ephemeralContainers": _BY_NAME,
        "volumes": ("merge,retainKeys", "name", "map", ("name",)),
        "imagePullSecrets": _BY_NAME,
        "hostAliases": ("merge", "ip", "map", ("ip",)),
        "tolerations": _ATOMIC, "readinessGates": _ATOMIC,
        "topologySpreadConstraints": ("merge", "topologyKey", "map", ("topologyKey", "whenUnsatisfiable")),
        "resourceClaims": ("merge,retainKeys", "name", "map", ("name",)),
        "schedulingGates": _BY_NAME,
    },
    "Container": _CONTAINER_LISTS,
    "EphemeralContainer": _CONTAINER_LISTS,
    "PodStatus": {
        "conditions": _CONDITIONS,
        "podIPs": ("merge", "ip", "map", ("ip",)),
        "hostIPs": ("merge", "ip", "atomic", ()),
        "containerStatuses": _ATOMIC, "initContainerStatuses": _ATOMIC,
        "ephemeralContainerStatuses": _ATOMIC,
        "resourceClaimStatuses": ("merge,retainKeys", "name", "map", ("name",)),
    },
    "ObjectMeta": {
        "ownerReferences": ("merge", "uid", "map", ("uid",)),
        "finalizers": ("merge", None, "set", ()),
        "managedFields": _ATOMIC,
    },
    "ServiceSpec": {
        "ports": ("merge", "port", "map", ("port", "protocol")),
        "clusterIPs": _ATOMIC, "externalIPs": _ATOMIC, "ipFamilies": _ATOMIC,
        "loadBalancerSourceRanges": _ATOMIC,
    },
    "ServiceStatus": {"conditions": _CONDITIONS},
    "NodeSpec": {"podCIDRs": ("merge", None, "set", ()), "taints": _ATOMIC},
    "NodeStatus": {
        "addresses": _CONDITIONS, "conditions": _CONDITIONS, "images": _ATOMIC,
        "volumesInUse": _ATOMIC, "volumesAttached": _ATOMIC,
    },
    "NamespaceSpec": {"finalizers": _ATOMIC},
    "NamespaceStatus": {"conditions": _CONDITIONS},
    "ServiceAccount": {"secrets": _BY_NAME, "imagePullSecrets": _ATOMIC},
    "Endpoints": {"subsets": _ATOMIC},
    "EndpointSubset": {"addresses": _ATOMIC, "notReadyAddresses": _ATOMIC, "ports": _ATOMIC},
    "PodSecurityContext": {"supplementalGroups": _ATOMIC, "sysctls": _ATOMIC},
    "Capabilities": {"add": _ATOMIC, "drop": _ATOMIC},
    "LabelSelector": {"matchExpressions": _ATOMIC},
    "NodeSelector": {"nodeSelectorTerms": _ATOMIC},
    "NodeSelectorTerm": {"matchExpressions": _ATOMIC, "matchFields": _ATOMIC},
    "ResourceRequirements": {"claims": (None, None, "map", ("name",))},
    "PodAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": _ATOMIC,
                    "preferredDuringSchedulingIgnoredDuringExecution": _ATOMIC},
    "PodAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": _ATOMIC,
                        "preferredDuringSchedulingIgnoredDuringExecution": _ATOMIC},
    "DeploymentStatus": {"conditions": _CONDITIONS},
    "ReplicaSetStatus": {"conditions": _CONDITIONS},
    "DaemonSetStatus": {"conditions": _CONDITIONS},
    "EndpointSlice": {"endpoints": _ATOMIC, "ports": _ATOMIC},
}

# The client drops the description of fields that reference another type; these are the ones
# every kind shares. Others borrow the referenced type's description, so that explain's FIELDS
# list shows one (at the field itself kubectl then prints that text twice, a lesser evil).
_REF_FIELD_DESCRIPTIONS = {
    "metadata": "Standard object's metadata. More info: "
                "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
}
_LIST_METADATA_DESCRIPTION = (
    "Standard list metadata. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
)

_SPECIAL_DEFINITIONS: dict[str, dict[str, Any]] = {
    QUANTITY: {
        "type": "string",
        "description": "Quantity is a fixed-point representation of a number. It provides convenient "
                       "marshaling/unmarshaling in JSON and YAML, in addition to String() and AsInt64() "
                       "accessors. Serialized as a string such as \"100m\", \"1Gi\" or \"2\".",
    },
    INT_OR_STRING: {
        "type": "string",
        "format": "int-or-string",
        "description": "IntOrString is a type that can hold an int32 or a string.  When used in JSON or "
                       "YAML marshalling and unmarshalling, it produces or consumes the inner type.  This "
                       "allows you to have, for example, a JSON field that can accept a name or number.",
    },
    TIME: {
        "type": "string",
        "format": "date-time",
        "description": "Time is a wrapper around time.Time which supports correct marshaling to YAML and "
                       "JSON.  Wrappers are provided for many of the factory methods that the time "
                       "package offers.",
    },
    MICRO_TIME: {
        "type": "string",
        "format": "date-time",
        "description": "MicroTime is version of Time with microsecond level precision.",
    },
    FIELDS_V1: {
        "type": "object",
        "description": "FieldsV1 stores a set of fields in a data structure like a Trie, in JSON format.",
    },
    RAW_EXTENSION: {
        "type": "object",
        "description": "RawExtension is used to hold extensions in external versions.",
    },
    PATCH: {
        "type": "object",
        "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH "
                       "request body.",
    },
}

_SCALAR_DEFINITIONS = frozenset({QUANTITY, INT_OR_STRING, TIME, MICRO_TIME})

_MODEL_NAME = re.compile(
    r"^(?P<group>[A-Z][a-z]+)?(?P<version>V\d+(?:(?:alpha|beta)\d+)?)(?P<type>[A-Z]\w*)$")
_GENERIC = re.compile(r"^(List|Dict)\[(.*)\]$")

_lock = threading.Lock()
_cache: dict[str, Any] = {}


def warm_up() -> None:
    """Build and cache the definitions now (call from a background thread to hide the cost)."""
    definitions()


def definitions() -> dict[str, dict]:
    """OpenAPI schema definitions for every served kind and everything they reference.

    Named as the real apiserver names them (``io.k8s.api.core.v1.Pod``,
    ``io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta`` ...), with refs as
    ``#/components/schemas/<name>``; kinds carry ``x-kubernetes-group-version-kind``.
    The returned mapping is shared: callers must not modify it.
    """
    defs = _cache.get("definitions")
    if defs is None:
        with _lock:
            defs = _cache.get("definitions")
            if defs is None:
                path = _disk_cache_path()
                defs = _load(path) if path else None
                if defs is None:
                    defs = _Builder().build()
                    if path:
                        _store(path, defs)
                _cache["definitions"] = defs
    return defs


def _disk_cache_path() -> Path | None:
    try:
        version = importlib.metadata.version("kubernetes")
    except importlib.metadata.PackageNotFoundError:
        return None
    base = os.environ.get("MINIKUBE_PY_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "minikube-py")
    # The tables here and the served kinds shape the output as much as the client does.
    key = hashlib.sha256(Path(__file__).read_bytes() + repr(RESOURCES).encode()).hexdigest()[:16]
    return Path(base) / f"openapi-definitions-kubernetes-{version}-{key}.json"


def _load(path: Path) -> dict[str, dict] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None  # absent, unreadable or damaged: build afresh
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        return None
    return data


def _store(path: Path, defs: dict[str, dict]) -> None:
    # Written whole then renamed, so a concurrent reader never sees half a file. A read-only or
    # full disk only costs the next process a rebuild.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".openapi-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(json.dumps(defs).encode())
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


def definition_name(info: ResourceInfo) -> str:
    """The apiserver's name of a kind's schema, e.g. ``io.k8s.api.apps.v1.Deployment``."""
    return f"io.k8s.api.{_short_group(info.group)}.{info.version}.{info.kind}"


def list_definition_name(info: ResourceInfo) -> str:
    return f"io.k8s.api.{_short_group(info.group)}.{info.version}.{info.list_kind}"


def references(schema: Any) -> set[str]:
    """Names of the definitions a schema refers to directly."""
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(REF_PREFIX):
                found.add(ref[len(REF_PREFIX):])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def closure(names: typing.Iterable[str]) -> list[str]:
    """The given definitions and everything they reference, transitively, sorted."""
    defs = definitions()
    seen: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        if name not in defs:
            raise KeyError(f"no schema definition named {name!r}")
        seen.add(name)
        stack.extend(references(defs[name]) - seen)
    return sorted(seen)


def unknown_fields(info: ResourceInfo, obj: dict) -> list[str]:
    """Paths of fields the schema does not know, e.g. ``['spec.containers[0].bogusField']``.

    For ``fieldValidation=Strict``/``Warn``. Free-form values (maps such as labels or data,
    Quantity, IntOrString, Time, FieldsV1, RawExtension) are not looked into. A value of the wrong
    shape (a string where an object belongs) is not an unknown field and is skipped here.
    """
    defs = definitions()
    name = definition_name(info)
    if name not in defs:
        raise KeyError(f"no schema for {info.api_version} {info.kind}")
    found: list[str] = []
    shape = _shape(defs, defs[name])
    # Almost every body is clean: a walk that keeps no path answers that at half the cost, and only
    # a body with an unknown field is walked again for the paths.
    if shape is not None and _any_unknown_top(shape, obj):
        _walk_shape(shape, obj, [], found)
    return found


# Specs found clean, by (shape, JSON bytes): a ReplicaSet's pods all carry its template's spec, the
# largest part of the walk; bounded, oldest out first.
_CLEAN_SPECS: dict[tuple[int, bytes], None] = {}
_CLEAN_SPECS_MAX = 256


def _any_unknown_top(shape: _Shape, obj: Any) -> bool:
    props = shape.props
    spec = obj.get("spec") if isinstance(obj, dict) and props is not None else None
    child = props.get("spec") if props is not None and isinstance(spec, dict) else None
    if child is None:
        return _any_unknown(shape, obj)
    try:
        key: tuple[int, bytes] | None = (id(child), orjson.dumps(spec))
    except TypeError:
        key = None
    if key is None or key not in _CLEAN_SPECS:
        if _any_unknown(child, spec):
            return True
        if key is not None:
            if len(_CLEAN_SPECS) >= _CLEAN_SPECS_MAX:
                # the oldest first; another thread may have got there first
                with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                    del _CLEAN_SPECS[next(iter(_CLEAN_SPECS))]
            _CLEAN_SPECS[key] = None
    for k, v in obj.items():  # the rest of the object, as _any_unknown would walk it
        if k == "spec":
            continue
        c = props.get(k, _MISSING)
        if c is _MISSING:
            return True
        if c is not None and isinstance(v, dict | list) and _any_unknown(c, v):
            return True
    return False


class _Shape:
    """A schema reduced to what the unknown-field walk needs, with every reference resolved once:
    the walk runs on every write, and resolving ``$ref``/``allOf`` per field dominated it."""

    __slots__ = ("extra", "items", "props")

    def __init__(self) -> None:
        self.props: dict[str, _Shape | None] | None = None
        self.extra: _Shape | None = None
        self.items: _Shape | None = None


# id(schema) -> (schema, shape); the schema is kept so that its id cannot be reused.
_SHAPES: dict[int, tuple[dict, _Shape | None]] = {}


def _shape(defs: dict[str, dict], schema: dict) -> _Shape | None:
    """The shape of ``schema``, or None for a leaf the walk need not enter."""
    schema = _resolve(defs, schema)
    cached = _SHAPES.get(id(schema))
    if cached is not None:
        return cached[1]
    node = _Shape()
    _SHAPES[id(schema)] = (schema, node)  # before recursing: schemas refer to themselves
    props = schema.get("properties")
    if props is not None:
        node.props = {k: _shape(defs, v) for k, v in props.items()}
    else:
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            node.extra = _shape(defs, extra)
    items = schema.get("items")
    if isinstance(items, dict):
        node.items = _shape(defs, items)
    if node.props is None and node.extra is None and node.items is None:
        _SHAPES[id(schema)] = (schema, None)
        return None
    return node


def _any_unknown(node: _Shape, value: Any) -> bool:
    """Whether :func:`_walk_shape` would find anything (the same walk, without paths)."""
    if isinstance(value, dict):
        props = node.props
        if props is not None:
            for key, sub in value.items():
                child = props.get(key, _MISSING)
                if child is _MISSING:
                    return True
                if child is not None and isinstance(sub, dict | list) and _any_unknown(child, sub):
                    return True
            return False
        extra = node.extra
        if extra is not None:
            for sub in value.values():
                if isinstance(sub, dict | list) and _any_unknown(extra, sub):
                    return True
    elif isinstance(value, list):
        items = node.items
        if items is not None:
            for sub in value:
                if isinstance(sub, dict | list) and _any_unknown(items, sub):
                    return True
    return False


_MISSING: Any = object()


def _walk_shape(node: _Shape, value: Any, path: list[str], found: list[str]) -> None:
    if isinstance(value, dict):
        props = node.props
        if props is not None:
            for key, sub in value.items():
                if key in props:
                    child = props[key]
                    if child is not None and isinstance(sub, dict | list):
                        path.append(str(key))
                        _walk_shape(child, sub, path, found)
                        path.pop()
                else:
                    found.append(_path(path, str(key)))
            return
        extra = node.extra
        if extra is not None:
            for key, sub in value.items():
                if isinstance(sub, dict | list):
                    path.append(f"[{key}]" if path else str(key))
                    _walk_shape(extra, sub, path, found)
                    path.pop()
    elif isinstance(value, list):
        items = node.items
        if items is not None:
            for i, sub in enumerate(value):
                if isinstance(sub, dict | list):
                    path.append(f"[{i}]")
                    _walk_shape(items, sub, path, found)
                    path.pop()


def _path(segments: list[str], last: str) -> str:
    # Paths are only built for the rare unknown field: the walk itself must stay cheap (it runs on
    # every write).
    out = ""
    for seg in [*segments, last]:
        out = seg if not out else (out + seg if seg.startswith("[") else f"{out}.{seg}")
    return out


def prune_unknown_fields(info: ResourceInfo, obj: dict) -> None:
    """Drop, in place, every field :func:`unknown_fields` reports (Kubernetes never stores them).

    Walks the object itself rather than parsing the reported paths, which cannot say which part of
    a key such as ``"a.b"`` or ``""`` is a name."""
    defs = definitions()
    _prune(defs, defs[definition_name(info)], obj)


def _prune(defs: dict[str, dict], schema: dict, value: Any) -> None:
    schema = _resolve(defs, schema)
    if isinstance(value, dict):
        props = schema.get("properties")
        if props is not None:
            for key in [k for k in value if k not in props]:
                del value[key]
            for key, sub in value.items():
                if sub is not None:
                    _prune(defs, props[key], sub)
            return
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for sub in value.values():
                if sub is not None:
                    _prune(defs, extra, sub)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for sub in value:
                if sub is not None:
                    _prune(defs, items, sub)


def _resolve(defs: dict[str, dict], schema: dict) -> dict:
    # Properties that point at a type wrap the $ref in allOf (the apiserver's v3 shape).
    for _ in range(8):
        ref = schema.get("$ref")
        if ref is None:
            all_of = schema.get("allOf")
            if all_of and len(all_of) == 1 and "$ref" in all_of[0]:
                ref = all_of[0]["$ref"]
        if not isinstance(ref, str) or not ref.startswith(REF_PREFIX):
            return schema
        schema = defs.get(ref[len(REF_PREFIX):], {})
    return schema


def _short_group(group: str) -> str:
    return group.split(".", 1)[0] if group else "core"


def _real_name(model: str) -> tuple[str, str]:
    """(apiserver definition name, bare type name) of a client model name such as ``CoreV1Event``."""
    m = _MODEL_NAME.match(model)
    if m is None:
        raise ValueError(f"cannot tell the group and version of client model {model!r}")
    bare, version = m["type"], m["version"].lower()
    if m["group"]:
        group = m["group"].lower()
    elif bare in _META_TYPES:
        return f"{_META}.{bare}", bare
    else:
        group = next((g for g, types in _GROUP_TYPES.items() if bare in types), "core")
    return f"io.k8s.api.{group}.{version}.{bare}", bare


def _clean_doc(doc: str | None) -> str:
    if not doc:
        return ""
    text = doc.split("\n    Attributes:", 1)[0]
    return "\n".join(line.strip() for line in text.strip().splitlines()).strip()


class _Builder:
    """Walks the client models from the served kinds and emits apiserver-shaped definitions."""

    def __init__(self) -> None:
        import kubernetes.client as client  # slow import, deferred on purpose

        self._client = client
        self._defs: dict[str, dict[str, Any]] = {}
        self._origin: dict[str, str] = {}  # definition name -> client model, to catch collisions
        self._pending: list[str] = []

    def build(self) -> dict[str, dict]:
        roots: list[str] = []
        for info in RESOURCES:
            if not info.model:
                continue
            roots.append(info.model)
            list_model = f"{info.model}List"
            if hasattr(self._client, list_model):
                roots.append(list_model)
        roots.extend(m for m in _EXTRA_MODELS if hasattr(self._client, m))
        for model in roots:
            self._enqueue(model)
        while self._pending:
            self._emit(self._pending.pop())
        for name, schema in _SPECIAL_DEFINITIONS.items():
            self._defs[name] = copy.deepcopy(schema)
        self._add_group_version_kinds()
        return dict(sorted(self._defs.items()))

    def _enqueue(self, model: str) -> str:
        name, _ = _real_name(model)
        previous = self._origin.get(name)
        if previous is None:
            self._origin[name] = model
            self._pending.append(model)
        elif previous != model:
            raise ValueError(f"client models {previous} and {model} both map to {name}")
        return name

    def _emit(self, model: str) -> None:
        cls = getattr(self._client, model)
        name, bare = _real_name(model)
        props: dict[str, Any] = {}
        required: list[str] = []
        fields = {f.serialization_alias or attr: f for attr, f in cls.model_fields.items()}
        for attr, type_text in cls.openapi_types.items():
            json_name = cls.attribute_map.get(attr, attr)
            field = fields[json_name]
            prop = self._property(bare, json_name, type_text, field.annotation)
            description = field.description or _REF_FIELD_DESCRIPTIONS.get(json_name)
            if json_name == "metadata" and bare.endswith("List"):
                description = _LIST_METADATA_DESCRIPTION
            if not description and "allOf" in prop:
                description = self._type_description(type_text)
            if description:
                prop["description"] = description
            lm = _LIST_META.get(bare, {}).get(json_name)
            if lm is not None and prop.get("type") == "array":
                strategy, merge_key, list_type, map_keys = lm
                if strategy:
                    prop["x-kubernetes-patch-strategy"] = strategy
                if merge_key:
                    prop["x-kubernetes-patch-merge-key"] = merge_key
                prop["x-kubernetes-list-type"] = list_type
                if map_keys:
                    prop["x-kubernetes-list-map-keys"] = list(map_keys)
            props[json_name] = prop
            if field.is_required():
                required.append(json_name)
        schema: dict[str, Any] = {"type": "object", "description": _clean_doc(cls.__doc__)}
        if required:
            schema["required"] = required
        schema["properties"] = dict(sorted(props.items()))
        self._defs[name] = schema

    def _type_description(self, type_text: str) -> str:
        cls = getattr(self._client, type_text, None)
        return _clean_doc(cls.__doc__) if cls is not None else ""

    def _property(self, owner: str, json_name: str, type_text: str, annotation: Any) -> dict[str, Any]:
        key = (owner, json_name)
        if type_text == "datetime":
            return self._ref(MICRO_TIME if key in _MICRO_TIME_FIELDS else TIME)
        if type_text == "object":
            if key in _FREE_FORM_FIELDS:
                return self._ref(_FREE_FORM_FIELDS[key])
            if _allows_int_and_str(annotation):
                return self._ref(INT_OR_STRING)
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        if type_text == "str" and key in _QUANTITY_FIELDS:
            return self._ref(QUANTITY)
        if key in _QUANTITY_FIELDS and type_text.startswith("Dict["):
            return {"type": "object", "additionalProperties": self._ref(QUANTITY)}
        return self._type(type_text)

    def _type(self, type_text: str) -> dict[str, Any]:
        generic = _GENERIC.match(type_text)
        if generic:
            outer, inner = generic.groups()
            if outer == "List":
                return {"type": "array", "items": self._type(inner)}
            key_type, _, value_type = inner.partition(",")
            if key_type.strip() != "str":
                raise ValueError(f"unsupported map key type in {type_text!r}")
            return {"type": "object", "additionalProperties": self._type(value_type.strip())}
        primitive = _PRIMITIVES.get(type_text)
        if primitive is not None:
            return dict(primitive)
        if type_text == "datetime":
            return self._ref(TIME)
        if type_text == "object":
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        if not hasattr(self._client, type_text):
            raise ValueError(f"unknown client type {type_text!r}")
        return self._ref(self._enqueue(type_text))

    @staticmethod
    def _ref(name: str) -> dict[str, Any]:
        # The apiserver's v3 shape: the $ref sits in allOf so that siblings (description, default)
        # are not ignored; object types default to {} as they do there.
        prop: dict[str, Any] = {"allOf": [{"$ref": REF_PREFIX + name}]}
        if name not in _SCALAR_DEFINITIONS:
            prop["default"] = {}
        return prop

    def _add_group_version_kinds(self) -> None:
        for info in RESOURCES:
            for name, kind in ((definition_name(info), info.kind),
                               (list_definition_name(info), info.list_kind)):
                if name in self._defs:
                    self._defs[name]["x-kubernetes-group-version-kind"] = [
                        {"group": info.group, "version": info.version, "kind": kind}]
        extras = {
            f"{_META}.Status": ("", "v1", "Status"),
            f"{_META}.DeleteOptions": ("", "v1", "DeleteOptions"),
            f"{_META}.WatchEvent": ("", "v1", "WatchEvent"),
            "io.k8s.api.autoscaling.v1.Scale": ("autoscaling", "v1", "Scale"),
            "io.k8s.api.core.v1.Binding": ("", "v1", "Binding"),
            "io.k8s.api.policy.v1.Eviction": ("policy", "v1", "Eviction"),
            "io.k8s.api.authentication.v1.TokenRequest": ("authentication.k8s.io", "v1", "TokenRequest"),
        }
        for name, (group, version, kind) in extras.items():
            if name in self._defs:
                self._defs[name]["x-kubernetes-group-version-kind"] = [
                    {"group": group, "version": version, "kind": kind}]


_PRIMITIVES: dict[str, dict[str, str]] = {
    "str": {"type": "string"},
    "int": {"type": "integer", "format": "int64"},
    "float": {"type": "number", "format": "double"},
    "bool": {"type": "boolean"},
    "bytes": {"type": "string", "format": "byte"},
    "bytearray": {"type": "string", "format": "byte"},
    "date": {"type": "string", "format": "date"},
}


def _allows_int_and_str(annotation: Any) -> bool:
    args = set()
    for arg in typing.get_args(annotation) or (annotation,):
        base = typing.get_args(arg)[0] if typing.get_origin(arg) is typing.Annotated else arg
        args.add(base)
    return int in args and str in args
