"""The OpenAPI documents kubectl reads: ``/openapi/v3`` per group-version, and ``/openapi/v2``.

kubectl uses them for ``explain``, to learn that the server validates fields itself
(``fieldValidation`` on a PATCH operation carrying the kind's group-version-kind) and to find the
list merge keys of client-side apply's strategic merge patches. kubectl 1.27/1.28 also insist on a
protobuf ``/openapi/v2`` before apply, create or explain. Documents are built from
:func:`minikube_py.api.schema.definitions` on first use and cached.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections.abc import Callable
from typing import Any

import orjson

from minikube_py.api import schema
from minikube_py.api.resources import RESOURCES, ResourceInfo, group_versions, in_group_version

# The Kubernetes release whose API these documents describe (shown by nothing but info.version).
API_VERSION = "v1.33.0"
V2_PROTOBUF_CONTENT_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"

PATCH_MEDIA_TYPES = (
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)
_JSON_MEDIA_TYPES = ("application/json", "application/yaml", "application/vnd.kubernetes.protobuf")

_STATUS = "io.k8s.apimachinery.pkg.apis.meta.v1.Status"
_DELETE_OPTIONS = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"
_WATCH_EVENT = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent"

# Subresources with a JSON body: (type definition, its GVK, verbs). The others (log, exec) stream.
_SUBRESOURCES: dict[str, tuple[str | None, tuple[str, str, str] | None, tuple[str, ...]]] = {
    "status": (None, None, ("get", "put", "patch")),
    "scale": ("io.k8s.api.autoscaling.v1.Scale", ("autoscaling", "v1", "Scale"), ("get", "put", "patch")),
    "binding": ("io.k8s.api.core.v1.Binding", ("", "v1", "Binding"), ("post",)),
    "eviction": ("io.k8s.api.policy.v1.Eviction", ("policy", "v1", "Eviction"), ("post",)),
    "token": ("io.k8s.api.authentication.v1.TokenRequest",
              ("authentication.k8s.io", "v1", "TokenRequest"), ("post",)),
    "finalize": (None, None, ("put",)),
}

_lock = threading.RLock()  # v2 is built from the v3 documents under the same lock
_cache: dict[str, Any] = {}


def gv_path(group: str, version: str) -> str:
    """``api/v1`` for the core group, ``apis/<group>/<version>`` for the rest."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


def v3_index() -> dict:
    """``GET /openapi/v3``: every served group-version with its hashed URL."""
    paths = {}
    for group, versions in group_versions().items():
        for version in versions:
            path = gv_path(group, version)
            paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={v3_hash(path)}"}
    return {"paths": paths}


def v3_document(gv_path: str) -> dict | None:
    """The OpenAPI 3.0 document of one group-version (``api/v1``, ``apis/apps/v1``), or None.

    The returned dict is shared: callers must not modify it (use :func:`v3_document_bytes` to send).
    """
    entry = _v3_entry(gv_path)
    return entry[0] if entry else None


def v3_document_bytes(gv_path: str) -> bytes | None:
    """The serialized form of :func:`v3_document`, built once."""
    entry = _v3_entry(gv_path)
    return entry[1] if entry else None


def v3_hash(gv_path: str) -> str:
    """The content hash kubectl puts in ``?hash=`` (and that may serve as the ETag); '' if unknown."""
    entry = _v3_entry(gv_path)
    return entry[2] if entry else ""


def v2_json() -> dict:
    """``GET /openapi/v2`` as JSON: a Swagger 2.0 document of every served kind (shared; do not modify)."""
    return _cached("v2", _build_v2)


def v2_protobuf() -> bytes:
    """``GET /openapi/v2`` as the gnostic ``openapi_v2.Document`` protobuf kubectl 1.27/1.28 require.

    Serve it with Content-Type :data:`V2_PROTOBUF_CONTENT_TYPE` (never the ``@`` form kubectl
    writes in Accept: Go's MIME parser rejects it).
    """
    return _cached("v2pb", lambda: _pb_document(v2_json()))


def warm_up() -> None:
    """Build every document now, e.g. in a background thread at server start."""
    for group, versions in group_versions().items():
        for version in versions:
            v3_document_bytes(gv_path(group, version))
    v2_protobuf()


def _split(path: str) -> tuple[str, str] | None:
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "api":
        return "", parts[1]
    if len(parts) == 3 and parts[0] == "apis" and parts[1]:
        return parts[1], parts[2]
    return None


def _v3_entry(path: str) -> tuple[dict, bytes, str] | None:
    key = f"v3:{path}"
    entry = _cache.get(key)
    if entry is None:
        gv = _split(path)
        if gv is None or not in_group_version(*gv):
            return None
        entry = _cached(key, lambda: _v3_entry_of(_build_v3(*gv)))
    return entry


def _v3_entry_of(doc: dict) -> tuple[dict, bytes, str]:
    data = orjson.dumps(doc)
    return doc, data, hashlib.sha512(data).hexdigest().upper()


def _cached(key: str, build: Callable[[], Any]) -> Any:
    """``build()`` once: callers racing for a missing entry wait for the one build under the lock."""
    value = _cache.get(key)
    if value is None:
        with _lock:
            value = _cache.get(key)
            if value is None:
                value = _cache[key] = build()
    return value


def _build_v3(group: str, version: str) -> dict:
    defs = schema.definitions()
    resources = in_group_version(group, version)
    paths: dict[str, Any] = {}
    roots = {_STATUS, _DELETE_OPTIONS, _WATCH_EVENT, schema.PATCH}
    for info in resources:
        paths.update(_resource_paths(info))
        roots.add(schema.definition_name(info))
        roots.add(schema.list_definition_name(info))
        for sub in info.subresources:
            body = _SUBRESOURCES.get(sub, (None,))[0]
            if body:
                roots.add(body)
    names = schema.closure(n for n in roots if n in defs)
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": API_VERSION},
        "paths": paths,
        "components": {"schemas": {n: defs[n] for n in names}},
    }


def _ref(name: str) -> dict:
    return {"$ref": schema.REF_PREFIX + name}


def _query(name: str, description: str, type_: str = "string") -> dict:
    return {"name": name, "in": "query", "description": description,
            "schema": {"type": type_, "uniqueItems": True}}


_DRY_RUN = _query("dryRun", "When present, indicates that modifications should not be persisted. "
                            "Valid values are: - All: all dry run stages will be processed")
_FIELD_MANAGER = _query("fieldManager", "fieldManager is a name associated with the actor or entity "
                                        "that is making these changes.")
_FIELD_VALIDATION = _query(
    "fieldValidation",
    "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) "
    "containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict (the default).",
)
_WRITE_PARAMS = [_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION]
_FORCE = _query("force", "Force is going to \"force\" Apply requests. It must be unset for non-apply "
                         "patch requests.", "boolean")
_PRETTY = _query("pretty", "If 'true', then the output is pretty printed.")
_LIST_PARAMS = [
    _query("allowWatchBookmarks", "allowWatchBookmarks requests watch events with type \"BOOKMARK\".",
           "boolean"),
    _query("continue", "The continue option should be set when retrieving more results from the server."),
    _query("fieldSelector", "A selector to restrict the list of returned objects by their fields."),
    _query("labelSelector", "A selector to restrict the list of returned objects by their labels."),
    _query("limit", "limit is a maximum number of responses to return for a list call.", "integer"),
    _query("resourceVersion", "resourceVersion sets a constraint on what resource versions a request "
                              "may be served from."),
    _query("resourceVersionMatch", "resourceVersionMatch determines how resourceVersion is applied to "
                                   "list calls."),
    _query("sendInitialEvents", "sendInitialEvents=true may be set together with watch=true.", "boolean"),
    _query("timeoutSeconds", "Timeout for the list/watch call.", "integer"),
    _query("watch", "Watch for changes to the described resources and return them as a stream of add, "
                    "update, and remove notifications.", "boolean"),
]
_DELETE_PARAMS = [
    _DRY_RUN,
    _query("gracePeriodSeconds", "The duration in seconds before the object should be deleted.", "integer"),
    _query("propagationPolicy", "Whether and how garbage collection will be performed. Acceptable "
                                "values are: 'Orphan', 'Background', 'Foreground'."),
]


def _path_param(name: str, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "uniqueItems": True}}


def _content(ref: dict, media_types: tuple[str, ...] = _JSON_MEDIA_TYPES) -> dict:
    return {m: {"schema": ref} for m in media_types}


def _operation(op_id: str, action: str, gvk: tuple[str, str, str], response: dict,
               params: list[dict], body: dict | None = None, body_types: tuple[str, ...] = _JSON_MEDIA_TYPES,
               created: bool = False) -> dict:
    group, version, kind = gvk
    op: dict[str, Any] = {
        "operationId": op_id,
        "description": f"{action} {kind}",
        "parameters": params,
        "responses": {
            "200": {"description": "OK", "content": _content(response)},
            "401": {"description": "Unauthorized"},
        },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": kind},
    }
    if body is not None:
        op["requestBody"] = {"content": _content(body, body_types), "required": True}
    if created:
        op["responses"]["201"] = {"description": "Created", "content": _content(response)}
        op["responses"]["202"] = {"description": "Accepted", "content": _content(response)}
    return op


def _op_prefix(info: ResourceInfo) -> str:
    group = "".join(p.capitalize() for p in info.group.split(".")[0].split("-")) if info.group else "Core"
    return f"{group}{info.version.capitalize()}"


def _resource_paths(info: ResourceInfo) -> dict[str, dict]:
    """Path items of one resource, shaped like the apiserver's (operations, parameters, GVK)."""
    base = f"/{gv_path(info.group, info.version)}"
    ns = "/namespaces/{namespace}" if info.namespaced else ""
    scope = "Namespaced" if info.namespaced else ""
    prefix = _op_prefix(info)
    gvk = (info.group, info.version, info.kind)
    kind_ref = _ref(schema.definition_name(info))
    list_ref = _ref(schema.list_definition_name(info))
    common = [_PRETTY]
    ns_param = [_path_param("namespace", "object name and auth scope, such as for teams and projects")]
    if not info.namespaced:
        ns_param = []
    name_param = [_path_param("name", f"name of the {info.kind}")]
    verbs = set(info.verbs)
    out: dict[str, dict] = {}

    collection: dict[str, Any] = {"parameters": ns_param + common}
    if "list" in verbs:
        collection["get"] = _operation(f"list{prefix}{scope}{info.kind}", "list", gvk, list_ref, _LIST_PARAMS)
    if "create" in verbs:
        collection["post"] = _operation(
            f"create{prefix}{scope}{info.kind}", "post", gvk, kind_ref,
            _WRITE_PARAMS, kind_ref, created=True)
    if "deletecollection" in verbs:
        collection["delete"] = _operation(
            f"deletecollection{prefix}{scope}{info.kind}", "deletecollection", gvk, _ref(_STATUS),
            _DELETE_PARAMS + _LIST_PARAMS, _ref(_DELETE_OPTIONS))
    out[f"{base}{ns}/{info.plural}"] = collection

    item: dict[str, Any] = {"parameters": ns_param + name_param + common}
    if "get" in verbs:
        item["get"] = _operation(f"read{prefix}{scope}{info.kind}", "get", gvk, kind_ref, [])
    if "update" in verbs:
        item["put"] = _operation(f"replace{prefix}{scope}{info.kind}", "put", gvk, kind_ref,
                                 _WRITE_PARAMS, kind_ref, created=True)
    if "patch" in verbs:
        item["patch"] = _patch_operation(f"patch{prefix}{scope}{info.kind}", gvk, kind_ref)
    if "delete" in verbs:
        item["delete"] = _operation(f"delete{prefix}{scope}{info.kind}", "delete", gvk, kind_ref,
                                    _DELETE_PARAMS, _ref(_DELETE_OPTIONS))
        item["delete"]["responses"]["202"] = {"description": "Accepted", "content": _content(kind_ref)}
    out[f"{base}{ns}/{info.plural}/{{name}}"] = item

    if info.namespaced and "list" in verbs:
        out[f"{base}/{info.plural}"] = {
            "parameters": common,
            "get": _operation(f"list{prefix}{info.kind}ForAllNamespaces", "list", gvk, list_ref,
                              _LIST_PARAMS),
        }

    for sub in info.subresources:
        spec = _SUBRESOURCES.get(sub)
        if spec is None:
            continue
        body_name, sub_gvk, sub_verbs = spec
        ref = _ref(body_name) if body_name else kind_ref
        sgvk = sub_gvk or gvk
        label = f"{prefix}{scope}{info.kind}{sub.capitalize()}"
        path_item: dict[str, Any] = {"parameters": ns_param + name_param + common}
        for verb in sub_verbs:
            if verb == "get":
                path_item["get"] = _operation(f"read{label}", "get", sgvk, ref, [])
            elif verb == "put":
                path_item["put"] = _operation(f"replace{label}", "put", sgvk, ref, _WRITE_PARAMS, ref,
                                              created=True)
            elif verb == "patch":
                path_item["patch"] = _patch_operation(f"patch{label}", sgvk, ref)
            elif verb == "post":
                path_item["post"] = _operation(f"create{label}", "post", sgvk, ref, _WRITE_PARAMS, ref,
                                               created=True)
        out[f"{base}{ns}/{info.plural}/{{name}}/{sub}"] = path_item
    return out


def _patch_operation(op_id: str, gvk: tuple[str, str, str], response: dict) -> dict:
    return _operation(op_id, "patch", gvk, response,
                      [_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION, _FORCE],
                      _ref(schema.PATCH), PATCH_MEDIA_TYPES, created=True)


# --- Swagger 2.0 ------------------------------------------------------------------------------

_V2_PREFIX = "#/definitions/"


def _build_v2() -> dict:
    paths: dict[str, Any] = {}
    names: set[str] = set()
    for group, versions in group_versions().items():
        for version in versions:
            names.update(_build_v3(group, version)["components"]["schemas"])
    for info in RESOURCES:
        for path, item in _resource_paths(info).items():
            paths[path] = _v2_path_item(item)
    defs = schema.definitions()
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": API_VERSION},
        "paths": dict(sorted(paths.items())),
        "definitions": {n: _v2_schema(defs[n]) for n in sorted(names)},
    }


def _v2_schema(node: Any) -> Any:
    """A v3 schema in v2 form: a lone ``allOf`` ref becomes a plain ``$ref`` into #/definitions."""
    if isinstance(node, list):
        return [_v2_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "allOf" and len(value) == 1 and "$ref" in value[0]:
            out["$ref"] = _v2_ref(value[0]["$ref"])
        elif key == "$ref" and isinstance(value, str):
            out["$ref"] = _v2_ref(value)
        elif key in ("properties",):
            out[key] = {k: _v2_schema(v) for k, v in value.items()}
        else:
            out[key] = _v2_schema(value)
    return out


def _v2_ref(ref: str) -> str:
    return _V2_PREFIX + ref[len(schema.REF_PREFIX):] if ref.startswith(schema.REF_PREFIX) else ref


def _v2_path_item(item: dict) -> dict:
    out: dict[str, Any] = {"parameters": [_v2_param(p) for p in item.get("parameters", [])]}
    for verb in ("get", "put", "post", "delete", "patch"):
        op = item.get(verb)
        if op is None:
            continue
        v2op: dict[str, Any] = {
            "operationId": op["operationId"],
            "description": op["description"],
            "consumes": ["*/*"],
            "produces": list(_JSON_MEDIA_TYPES),
            "schemes": ["https"],
            "parameters": [_v2_param(p) for p in op["parameters"]],
            "responses": {},
        }
        body = op.get("requestBody")
        if body is not None:
            media = list(body["content"])
            v2op["consumes"] = media
            first = body["content"][media[0]]["schema"]
            v2op["parameters"].insert(0, {"name": "body", "in": "body", "required": True,
                                          "schema": _v2_schema(copy.deepcopy(first))})
        for code, response in op["responses"].items():
            entry: dict[str, Any] = {"description": response["description"]}
            content = response.get("content")
            if content:
                entry["schema"] = _v2_schema(next(iter(content.values()))["schema"])
            v2op["responses"][code] = entry
        for key, value in op.items():
            if key.startswith("x-"):
                v2op[key] = copy.deepcopy(value)
        out[verb] = v2op
    return out


def _v2_param(param: dict) -> dict:
    out = {k: v for k, v in param.items() if k != "schema"}
    out.update(param.get("schema", {}))
    return out


# --- gnostic openapi_v2 protobuf ----------------------------------------------------------------
# A hand-rolled encoder for the few messages of github.com/google/gnostic-models openapiv2
# (OpenAPIv2.proto) that these documents use; field numbers are that file's.


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _pb_bytes(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _pb_str(num: int, text: str) -> bytes:
    return _pb_bytes(num, text.encode()) if text else b""


def _pb_bool(num: int, flag: bool) -> bytes:
    return _varint(num << 3) + b"\x01" if flag else b""


def _pb_any(value: Any) -> bytes:
    # openapi_v2.Any{yaml = 2}: JSON text is valid YAML.
    return _pb_str(2, orjson.dumps(value).decode())


def _pb_named(num: int, name: str, value: bytes) -> bytes:
    return _pb_bytes(num, _pb_str(1, name) + _pb_bytes(2, value))


def _pb_extensions(num: int, node: dict) -> bytes:
    return b"".join(_pb_named(num, k, _pb_any(v)) for k, v in node.items() if k.startswith("x-"))


def _pb_schema(node: dict) -> bytes:
    out = [_pb_str(1, node.get("$ref", "")), _pb_str(2, node.get("format", "")),
           _pb_str(3, node.get("title", "")), _pb_str(4, node.get("description", ""))]
    if "default" in node:
        out.append(_pb_bytes(5, _pb_any(node["default"])))
    out.append(_pb_bool(16, bool(node.get("uniqueItems"))))
    out.extend(_pb_str(19, r) for r in node.get("required", ()))
    out.extend(_pb_bytes(20, _pb_any(e)) for e in node.get("enum", ()))
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        out.append(_pb_bytes(21, _pb_bytes(1, _pb_schema(extra))))
    elif isinstance(extra, bool):
        out.append(_pb_bytes(21, _varint(2 << 3) + _varint(int(extra))))
    if "type" in node:
        types = node["type"] if isinstance(node["type"], list) else [node["type"]]
        out.append(_pb_bytes(22, b"".join(_pb_str(1, t) for t in types)))
    items = node.get("items")
    if isinstance(items, dict):
        out.append(_pb_bytes(23, _pb_bytes(1, _pb_schema(items))))
    out.extend(_pb_bytes(24, _pb_schema(s)) for s in node.get("allOf", ()))
    props = node.get("properties")
    if props:
        out.append(_pb_bytes(25, b"".join(_pb_named(1, k, _pb_schema(v)) for k, v in props.items())))
    out.append(_pb_bool(27, bool(node.get("readOnly"))))
    out.append(_pb_extensions(31, node))
    return b"".join(out)


def _pb_parameter(param: dict) -> bytes:
    where = param.get("in", "")
    if where == "body":
        body = (_pb_str(1, param.get("description", "")) + _pb_str(2, param["name"]) + _pb_str(3, where)
                + _pb_bool(4, bool(param.get("required"))) + _pb_bytes(5, _pb_schema(param["schema"])))
        parameter = _pb_bytes(1, body)
    else:
        # QueryParameterSubSchema (3) and PathParameterSubSchema (4) number type/uniqueItems apart.
        oneof, type_num, unique_num = (4, 5, 19) if where == "path" else (3, 6, 20)
        sub = (_pb_bool(1, bool(param.get("required"))) + _pb_str(2, where)
               + _pb_str(3, param.get("description", "")) + _pb_str(4, param["name"])
               + _pb_str(type_num, param.get("type", ""))
               + _pb_bool(unique_num, bool(param.get("uniqueItems"))))
        parameter = _pb_bytes(2, _pb_bytes(oneof, sub))
    return _pb_bytes(1, parameter)  # ParametersItem{parameter = 1}


def _pb_operation(op: dict) -> bytes:
    out = [_pb_str(3, op.get("description", "")), _pb_str(5, op.get("operationId", ""))]
    out.extend(_pb_str(6, m) for m in op.get("produces", ()))
    out.extend(_pb_str(7, m) for m in op.get("consumes", ()))
    out.extend(_pb_bytes(8, _pb_parameter(p)) for p in op.get("parameters", ()))
    responses = b""
    for code, response in op.get("responses", {}).items():
        body = _pb_str(1, response.get("description", ""))
        if "schema" in response:
            body += _pb_bytes(2, _pb_bytes(1, _pb_schema(response["schema"])))
        responses += _pb_named(1, code, _pb_bytes(1, body))  # ResponseValue{response = 1}
    out.append(_pb_bytes(9, responses))
    out.extend(_pb_str(10, s) for s in op.get("schemes", ()))
    out.append(_pb_extensions(13, op))
    return b"".join(out)


_PB_VERBS = {"get": 2, "put": 3, "post": 4, "delete": 5, "patch": 8}


def _pb_path_item(item: dict) -> bytes:
    out = [_pb_bytes(num, _pb_operation(item[verb])) for verb, num in _PB_VERBS.items() if verb in item]
    out.extend(_pb_bytes(9, _pb_parameter(p)) for p in item.get("parameters", ()))
    return b"".join(out)


def _pb_document(doc: dict) -> bytes:
    info = doc.get("info", {})
    paths = b"".join(_pb_named(2, path, _pb_path_item(item)) for path, item in doc["paths"].items())
    definitions = b"".join(_pb_named(1, name, _pb_schema(s)) for name, s in doc["definitions"].items())
    return (_pb_str(1, doc["swagger"])
            + _pb_bytes(2, _pb_str(1, info.get("title", "")) + _pb_str(2, info.get("version", "")))
            + _pb_bytes(8, paths) + _pb_bytes(9, definitions))
