"""Turning an HTTP request into Kubernetes request attributes: path, verb, body, content types."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import orjson
import yaml

from minikube_py.api import errors
from minikube_py.api.resources import ResourceInfo, lookup

# kube-apiserver refuses request bodies over 3 MiB (MaxRequestBodyBytes).
MAX_BODY_BYTES = 3 * 1024 * 1024

PROTOBUF = "application/vnd.kubernetes.protobuf"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
APPLY_PATCH_CBOR = "application/apply-patch+cbor"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH)


@dataclass
class RequestInfo:
    """What a request asks for, in the terms the authorizer and the handlers use."""

    path: str
    verb: str  # get list watch create update patch delete deletecollection (or the HTTP verb)
    is_resource: bool = False
    api_prefix: str = ""  # "api" or "apis"
    group: str = ""
    version: str = ""
    resource: str = ""
    namespace: str | None = None
    name: str | None = None
    subresource: str = ""
    info: ResourceInfo | None = None
    parts: list[str] = field(default_factory=list)


def parse_path(method: str, path: str, query: dict[str, str]) -> RequestInfo:
    """Parse /api/v1/..., /apis/<g>/<v>/... as Kubernetes' RequestInfoFactory does."""
    parts = [p for p in path.split("/") if p]
    ri = RequestInfo(path=path, verb=method.lower(), parts=parts)
    if not parts or parts[0] not in ("api", "apis"):
        return ri
    ri.api_prefix = parts[0]
    rest = parts[1:]
    if ri.api_prefix == "api":
        if not rest:
            return ri
        ri.version, rest = rest[0], rest[1:]
    else:
        if len(rest) < 2:
            return ri
        ri.group, ri.version, rest = rest[0], rest[1], rest[2:]
    if not rest:
        return ri
    ri.is_resource = True
    # /namespaces/<ns>/<resource>... but /namespaces/<name>[/status|finalize] is the namespace itself.
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize") and not ri.group:
        ri.namespace, rest = rest[1], rest[2:]
    elif rest[0] == "namespaces" and len(rest) >= 3 and ri.group:
        ri.namespace, rest = rest[1], rest[2:]
    elif rest[0] == "namespaces" and len(rest) >= 2 and not ri.group:
        ri.namespace = rest[1]
    ri.resource = rest[0]
    if len(rest) >= 2:
        ri.name = rest[1]
    if len(rest) >= 3:
        ri.subresource = rest[2]
    if len(rest) > 3:
        ri.is_resource = False  # deeper paths are not part of the API
    ri.info = lookup(ri.group, ri.version, ri.resource)
    m = method.upper()
    watch = query.get("watch") in ("1", "true", "True")
    if m in ("GET", "HEAD"):
        if ri.name is None:
            ri.verb = "watch" if watch else "list"
        else:
            ri.verb = "get"
    elif m == "POST":
        ri.verb = "create"
    elif m == "PUT":
        ri.verb = "update"
    elif m == "PATCH":
        ri.verb = "patch"
    elif m == "DELETE":
        ri.verb = "delete" if ri.name is not None else "deletecollection"
    return ri


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def decode_body(body: bytes, content_type: str | None) -> Any:
    """The request body as JSON data; 400 for malformed input, 415 for an unsupported type."""
    mt = media_type(content_type)
    if len(body) > MAX_BODY_BYTES:
        raise errors.too_large(f"Request entity too large: limit is {MAX_BODY_BYTES}")
    if mt in ("", "application/json", JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, "*/*"):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise errors.bad_request(f"error decoding request body: {e}") from None
        # The count of opening brackets bounds the depth: ordinary objects skip the full walk.
        if body.count(b"{") + body.count(b"[") <= MAX_DEPTH:
            return data
        return json_shaped(data, from_yaml=False)
    if mt in ("application/yaml", "text/yaml", APPLY_PATCH, "application/x-yaml"):
        try:
            data = yaml.load(body, Loader=_KubeYAMLLoader)
        except yaml.YAMLError as e:
            detail = str(e).replace("\n", " ")
            raise errors.bad_request(f"error converting YAML to JSON: {detail}") from None
        return json_shaped(data, from_yaml=True)
    if mt == PROTOBUF:
        from minikube_py.api import protobuf

        try:
            return protobuf.decode(body)
        except protobuf.UnsupportedProtobuf as e:
            raise errors.ApiError(415, "UnsupportedMediaType", f"unsupported protobuf body: {e}") from None
        except ValueError as e:
            raise errors.bad_request(f"error decoding protobuf body: {e}") from None
    raise errors.unsupported_media_type(mt)


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _KubeYAMLLoader(_YAML_LOADER):  # type: ignore[misc,valid-type]
    """YAML as kube-apiserver converts it to JSON: an unquoted date stays the string it was."""


_KubeYAMLLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _YAML_LOADER.yaml_implicit_resolvers.items()
}

# No Kubernetes object nests anywhere near this deep. Refusing deeper documents at the door keeps the
# recursive code behind it (validation, patches, orjson's 254-level encoder) from failing with a 500.
MAX_DEPTH = 100
# YAML aliases may share a node many times; a document that would expand past this many nodes is
# refused (a "billion laughs"), as kube-apiserver's YAML decoder refuses excessive aliasing.
MAX_ALIAS_EXPANSION = 1_000_000

_CONTAINERS = (dict, list, set)


def json_shaped(data: Any, *, from_yaml: bool) -> Any:
    """``data`` checked for depth (and, from YAML, for alias cycles and expansion) and, from YAML,
    made what JSON could have said: string keys, base64 for !!binary, a !!set as a map of nulls.
    Iterative, so no document can exhaust the stack here."""
    if not isinstance(data, _CONTAINERS):
        return _yaml_scalar(data) if from_yaml else data
    done: dict[int, tuple[Any, int, int]] = {}  # id -> (JSON-shaped node, height, expanded size)
    entered: set[int] = set()
    shared = False
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        node, leaving = stack.pop()
        key = id(node)
        if not leaving:
            if key in done:
                shared = True
                continue
            if key in entered:
                raise errors.bad_request("error converting YAML to JSON: the document contains a recursive alias")
            entered.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in _children(node) if isinstance(c, _CONTAINERS))
            continue
        height, size = 1, 1
        for child in _children(node):
            if isinstance(child, _CONTAINERS):
                _, h, n = done[id(child)]
                height, size = max(height, h + 1), size + n
            else:
                size += 1
        if height > MAX_DEPTH:
            raise errors.bad_request(f"error decoding request body: the document nests deeper than {MAX_DEPTH} levels")
        if shared and size > MAX_ALIAS_EXPANSION:
            raise errors.bad_request("error converting YAML to JSON: the document contains excessive aliasing")
        done[key] = (_reshape(node, done) if from_yaml else node, height, size)
    return done[id(data)][0]


def _children(node: Any) -> Any:
    return node.values() if isinstance(node, dict) else node


def _reshape(node: Any, done: dict[int, tuple[Any, int, int]]) -> Any:
    def value(v: Any) -> Any:
        return done[id(v)][0] if isinstance(v, _CONTAINERS) else _yaml_scalar(v)

    if isinstance(node, dict):
        return {_yaml_key(k): value(v) for k, v in node.items()}
    if isinstance(node, set):
        return dict.fromkeys((_yaml_key(k) for k in node), None)
    return [value(v) for v in node]


def _yaml_scalar(v: Any) -> Any:
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        raise errors.bad_request(f"error converting YAML to JSON: {v} cannot be represented in JSON")
    if isinstance(v, bytes):
        import base64

        return base64.b64encode(v).decode("ascii")
    if isinstance(v, dt.date):  # an explicit !!timestamp
        return v.isoformat()
    return v


def _yaml_key(k: Any) -> str:
    """A mapping key as JSON has it: YAML's `1: a`, `true: a` and `null: a` become "1", "true", "null"."""
    if isinstance(k, str):
        return k
    if isinstance(k, bool) or k is None:
        return orjson.dumps(k).decode()
    scalar = _yaml_scalar(k)
    return scalar if isinstance(scalar, str) else str(scalar)


def wants_table(accept: str | None) -> bool:
    return bool(accept) and "as=Table" in accept  # type: ignore[operator]


def accepts_json(accept: str | None) -> bool:
    """False only when the client accepts nothing we can send (e.g. protobuf alone)."""
    if not accept:
        return True
    for part in accept.split(","):
        mt = part.split(";", 1)[0].strip().lower()
        if mt in ("application/json", "*/*", "application/*", "application/yaml", ""):
            return True
    return False
