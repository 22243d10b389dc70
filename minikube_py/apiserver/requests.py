"""Turning an HTTP request into Kubernetes request attributes: path, verb, body, content types."""

from __future__ import annotations

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
            return orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise errors.bad_request(f"error decoding request body: {e}") from None
    if mt in ("application/yaml", "text/yaml", APPLY_PATCH, "application/x-yaml"):
        try:
            return yaml.load(body, Loader=_YAML_LOADER)
        except yaml.YAMLError as e:
            detail = str(e).replace("\n", " ")
            raise errors.bad_request(f"error converting YAML to JSON: {detail}") from None
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
