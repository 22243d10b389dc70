"""One handler per verb of a resource request, and the subresources."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from typing import TYPE_CHECKING, Any

from aiohttp import web

from minikube_py.api import errors
from minikube_py.api.resources import ResourceInfo

from . import objects
from .objects import dumps, parse_resource_version
from .registry import DeleteOptions, WatchEvent
from .requests import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_PATCH,
    RequestInfo,
    decode_body,
    media_type,
    wants_table,
)

if TYPE_CHECKING:
    from .server import APIServer


async def handle_resource(srv: APIServer, request: web.Request, ri: RequestInfo) -> web.StreamResponse:
    from .server import accepts

    info = ri.info
    assert info is not None
    accepts(request)
    if info.namespaced and ri.namespace is None and ri.verb not in ("list", "watch"):
        if not (info.kind == "Namespace"):
            raise errors.not_found_path()
    namespace = ri.namespace if info.namespaced else None
    if ri.subresource:
        if ri.subresource not in info.subresources:
            raise errors.not_found_path()
        return await _subresource(srv, request, ri, info, namespace)
    # As kube-apiserver routes them: POST only on a collection, PUT and PATCH only on an object.
    if (request.method == "POST") == (ri.name is not None) and request.method in ("POST", "PUT", "PATCH"):
        raise errors.method_not_allowed("the server does not allow this method on the requested resource")
    verb = ri.verb
    if verb == "get":
        obj = await srv.registry.get(info, namespace, ri.name or "")
        return _object_response(request, info, obj)
    if verb == "list":
        return await _list(srv, request, info, namespace)
    if verb == "watch":
        return await _watch(srv, request, info, namespace)
    if verb == "create":
        return await _create(srv, request, info, namespace)
    if verb == "update":
        return await _update(srv, request, info, namespace, ri.name or "")
    if verb == "patch":
        return await _patch(srv, request, info, namespace, ri.name or "")
    if verb == "delete":
        return await _delete(srv, request, info, namespace, ri.name or "")
    if verb == "deletecollection":
        return await _delete_collection(srv, request, info, namespace)
    raise errors.method_not_allowed(f"{request.method} is not supported on {info.plural}")


# ---- reading ----------------------------------------------------------------------------------------

def _selector(request: web.Request, info: ResourceInfo) -> Any:
    from .selectors import parse_field_selector, parse_label_selector

    q = request.query
    labels = parse_label_selector(q["labelSelector"]) if q.get("labelSelector") else None
    fields = parse_field_selector(q["fieldSelector"], info) if q.get("fieldSelector") else None
    if labels is None and fields is None:
        return None

    def matches(obj: dict[str, Any]) -> bool:
        if labels is not None and not labels.matches(obj.get("metadata", {}).get("labels") or {}):
            return False
        return fields is None or fields.matches(obj)

    return matches


def _int_param(request: web.Request, name: str) -> int:
    raw = request.query.get(name)
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise errors.bad_request(f'invalid {name} "{raw}": must be an integer') from None
    if value < 0:
        raise errors.bad_request(f"{name} must not be negative")
    return value


async def _list(srv: APIServer, request: web.Request, info: ResourceInfo, namespace: str | None) -> web.Response:
    q = request.query
    rv = parse_resource_version(q.get("resourceVersion"))
    match = q.get("resourceVersionMatch", "")
    if match and match not in ("Exact", "NotOlderThan"):
        raise errors.bad_request(f'invalid resourceVersionMatch "{match}"')
    if match and rv is None:
        raise errors.bad_request("resourceVersionMatch is forbidden unless resourceVersion is provided")
    result = await srv.registry.list(
        info, namespace, matches=_selector(request, info), limit=_int_param(request, "limit"),
        continue_token=q.get("continue") or None, resource_version=rv, exact=match == "Exact")
    if wants_table(request.headers.get("Accept")):
        table = to_table(info, result.items, str(result.resource_version), q.get("includeObject", "Metadata"))
        if result.continue_token:
            table["metadata"]["continue"] = result.continue_token
        return _json(table)
    list_meta: dict[str, Any] = {"resourceVersion": str(result.resource_version)}
    if result.continue_token:
        list_meta["continue"] = result.continue_token
        if result.remaining is not None:
            list_meta["remainingItemCount"] = result.remaining
    return _json({"kind": info.list_kind, "apiVersion": info.api_version, "metadata": list_meta,
                  "items": result.items})


async def _watch(srv: APIServer, request: web.Request, info: ResourceInfo, namespace: str | None
                 ) -> web.StreamResponse:
    from .server import watch_timeout

    q = request.query
    rv = parse_resource_version(q.get("resourceVersion"))
    send_initial_raw = q.get("sendInitialEvents")
    send_initial = None if send_initial_raw is None else send_initial_raw == "true"
    bookmarks = q.get("allowWatchBookmarks") == "true"
    timeout = watch_timeout(dict(q))
    table = wants_table(request.headers.get("Accept"))
    include = q.get("includeObject", "Metadata")
    if not (send_initial is None and not rv) and not send_initial:
        await srv.registry.check_watch_start(rv or 0)  # a future resourceVersion is an HTTP error
    events = srv.registry.watch(info, namespace, resource_version=rv, matches=_selector(request, info),
                                send_initial=send_initial)
    # The pump decouples the store watch from a slow client: when this queue fills, the pump stops
    # reading, the store's own bounded buffer overflows, and the watch ends with an ERROR event.
    queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue(maxsize=256)

    async def pump() -> None:
        try:
            async for ev in events:
                await queue.put(ev)
        except errors.ApiError as e:
            await queue.put(WatchEvent("ERROR", e.status()))
        finally:
            await queue.put(None)

    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                   "Cache-Control": "no-cache, private"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    srv.metrics.watchers[info.plural] += 1
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_rv = str(rv or 0)
    columns_sent = False

    async def send(ev: WatchEvent) -> None:
        nonlocal columns_sent, last_rv
        obj = ev.object
        if ev.type in ("ADDED", "MODIFIED", "DELETED"):
            last_rv = obj.get("metadata", {}).get("resourceVersion", last_rv)
            if table:
                obj = to_table(info, [obj], last_rv, include, with_columns=not columns_sent)
                columns_sent = True
            elif ev.line is None:
                ev.line = dumps({"type": ev.type, "object": obj}) + b"\n"
            if not table:
                await resp.write(ev.line)  # type: ignore[arg-type]
                return
        elif ev.type == "BOOKMARK":
            last_rv = obj["metadata"]["resourceVersion"]
        await resp.write(dumps({"type": ev.type, "object": obj}) + b"\n")

    pump_task = asyncio.ensure_future(pump())
    me = asyncio.current_task()
    if me is not None:
        srv.watch_tasks.add(me)
    try:
        next_bookmark = loop.time() + srv.config.bookmark_interval
        while True:
            now = loop.time()
            if now >= deadline:
                break
            wait = deadline - now
            if bookmarks:
                wait = min(wait, max(0.0, next_bookmark - now))
            try:
                ev = await asyncio.wait_for(queue.get(), wait)
            except TimeoutError:
                if bookmarks and loop.time() >= next_bookmark:
                    await send(_bookmark(info, last_rv))
                    next_bookmark = loop.time() + srv.config.bookmark_interval
                continue
            if ev is None:
                break
            await _emit(ev, send, bookmarks, info, send_initial)
            if ev.type == "ERROR":
                break
    except (ConnectionResetError, asyncio.CancelledError):
        # Cancelled: the client went away, or the server is stopping and ends every watch at once.
        pass
    finally:
        if me is not None:
            srv.watch_tasks.discard(me)
        srv.metrics.watchers[info.plural] -= 1
        pump_task.cancel()
        try:
            await pump_task
        except (asyncio.CancelledError, Exception):
            pass
        await events.aclose()
    try:
        await resp.write_eof()
    except (ConnectionResetError, RuntimeError):
        pass
    return resp


async def _emit(ev: WatchEvent, send: Any, bookmarks: bool, info: ResourceInfo, send_initial: bool | None) -> None:
    if ev.type == "__INITIAL_END__":
        # WatchList: the end of the initial state is a bookmark with this annotation.
        if send_initial and bookmarks:
            bm = _bookmark(info, ev.object["metadata"]["resourceVersion"])
            bm.object["metadata"]["annotations"] = {"k8s.io/initial-events-end": "true"}
            await send(bm)
        return
    await send(ev)


def _bookmark(info: ResourceInfo, rv: str) -> WatchEvent:
    return WatchEvent("BOOKMARK", {"kind": info.kind, "apiVersion": info.api_version,
                                   "metadata": {"resourceVersion": rv}})


# ---- writing ----------------------------------------------------------------------------------------

def _dry_run(request: web.Request) -> bool:
    values = request.query.getall("dryRun", [])
    for v in values:
        if v != "All":
            raise errors.bad_request(f'invalid dryRun value "{v}": only "All" is supported')
    return bool(values)


def _field_validation(request: web.Request) -> str:
    v = request.query.get("fieldValidation", "Warn") or "Warn"
    if v not in ("Ignore", "Warn", "Strict"):
        raise errors.bad_request(
            f'fieldValidation must be one of "Ignore", "Warn" or "Strict", not "{v}"')
    return v


async def _read_object(request: web.Request, info: ResourceInfo) -> tuple[dict[str, Any], list[str]]:
    """The request body as an object of this resource's kind, with unknown fields handled per
    fieldValidation (Strict: 400; Warn: a warning each; Ignore: silently dropped)."""
    body = await _body(request)
    obj = decode_body(body, request.headers.get("Content-Type"))
    obj = _check_kind(obj, info)
    return obj, _unknown_fields(request, info, obj)


async def _body(request: web.Request) -> bytes:
    from .requests import MAX_BODY_BYTES

    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise errors.too_large(f"Request entity too large: limit is {MAX_BODY_BYTES}")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise errors.too_large(f"Request entity too large: limit is {MAX_BODY_BYTES}") from None


def _check_kind(obj: Any, info: ResourceInfo) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise errors.bad_request(f"the body of the request must be a {info.kind} object, got {type(obj).__name__}")
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    if kind is not None and kind != info.kind:
        raise errors.bad_request(
            f"the kind in the body ({kind}) does not match the kind of the resource ({info.kind})")
    if api_version is not None and api_version != info.api_version:
        raise errors.bad_request(
            f"the API version in the data ({api_version}) does not match the expected API version "
            f"({info.api_version})")
    obj["kind"] = info.kind
    obj["apiVersion"] = info.api_version
    if not isinstance(obj.get("metadata", {}), dict):
        raise errors.bad_request("metadata must be an object")
    return obj


def _unknown_fields(request: web.Request, info: ResourceInfo, obj: dict[str, Any]) -> list[str]:
    mode = _field_validation(request)
    from minikube_py.api.schema import prune_unknown_fields, unknown_fields

    unknown = unknown_fields(info, obj)
    if not unknown:
        return []
    if mode == "Strict":
        text = ", ".join(f'unknown field "{u}"' for u in unknown)
        raise errors.bad_request(f"strict decoding error: {text}")
    prune_unknown_fields(info, obj)  # Kubernetes never stores what it does not know
    return [f'unknown field "{u}"' for u in unknown] if mode == "Warn" else []


async def _create(srv: APIServer, request: web.Request, info: ResourceInfo, namespace: str | None
                  ) -> web.Response:
    obj, warnings = await _read_object(request, info)
    dry_run = _dry_run(request)
    created = await srv.registry.create(info, namespace, await _admitted(srv, info, namespace, obj), dry_run=dry_run)
    return _json(created, 201, warnings)


async def _admitted(srv: APIServer, info: ResourceInfo, namespace: str | None, obj: dict[str, Any]
                    ) -> dict[str, Any]:
    """``obj`` after the mutating admission plugins (apiserver/admission.py) a create goes through."""
    from .admission import admit_create

    await admit_create(srv.registry, info, namespace, obj, srv.config.extra.get("disabled_admission_plugins", ()))
    return obj


async def _update(srv: APIServer, request: web.Request, info: ResourceInfo, namespace: str | None, name: str
                  ) -> web.Response:
    obj, warnings = await _read_object(request, info)
    rv = obj.get("metadata", {}).get("resourceVersion") or None
    _check_name(obj, name)
    updated, created = await srv.registry.update(
        info, namespace, name, lambda old: copy.deepcopy(obj), dry_run=_dry_run(request), precondition_rv=rv)
    return _json(updated, 201 if created else 200, warnings)


def _check_name(obj: dict[str, Any], name: str) -> None:
    body_name = obj.get("metadata", {}).get("name")
    if body_name is not None and body_name != name:
        raise errors.bad_request(
            f"the name of the object ({body_name}) does not match the name on the URL ({name})")


def _patch_fn(request: web.Request, info: ResourceInfo, patch: Any, kind: str
              ) -> tuple[Any, str | None]:
    """A function old -> new for this patch, and the resourceVersion precondition it carries."""
    from .patch import apply_json_patch, apply_merge_patch, apply_server_side, apply_strategic_merge_patch

    rv: str | None = None
    if kind == JSON_PATCH:
        if not isinstance(patch, list):
            raise errors.bad_request("a JSON patch must be a list of operations")
        return (lambda old: apply_json_patch(old, patch)), None
    if not isinstance(patch, dict):
        raise errors.bad_request(f"a {kind} body must be an object")
    meta = patch.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("resourceVersion"), str):
        rv = meta["resourceVersion"]
    if kind == MERGE_PATCH:
        return (lambda old: apply_merge_patch(old, patch)), rv
    if kind == STRATEGIC_PATCH:
        return (lambda old: apply_strategic_merge_patch(old, patch, info)), rv
    manager = request.query.get("fieldManager")
    if not manager:
        raise errors.bad_request("PATCH with an apply patch requires the fieldManager query parameter")
    force = request.query.get("force") == "true"
    return (lambda old: apply_server_side(old, _check_kind(patch, info), info, manager, force)), rv


async def _patch(srv: APIServer, request: web.Request, info: ResourceInfo, namespace: str | None, name: str,
                 subresource: str | None = None) -> web.Response:
    kind = media_type(request.headers.get("Content-Type"))
    if kind not in (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH):
        raise errors.unsupported_media_type(kind)
    patch = decode_body(await _body(request), kind)
    fn, rv = _patch_fn(request, info, patch, kind)
    warnings: list[str] = []

    def mutate(old: dict[str, Any] | None) -> Any:
        new = fn(old)
        if not isinstance(new, dict):
            raise errors.ApiError(422, "Invalid", "the patch did not produce an object")
        new = _check_kind(new, info)
        warnings[:] = _unknown_fields(request, info, new)
        # An apply that creates the object is admitted as a create is.
        return _admitted(srv, info, namespace, new) if old is None else new

    updated, created = await srv.registry.update(
        info, namespace, name, mutate, subresource=subresource, dry_run=_dry_run(request),
        allow_create=kind == APPLY_PATCH, precondition_rv=rv)
    return _json(updated, 201 if created else 200, warnings)


async def _delete(srv: APIServer, request: web.Request, info: ResourceInfo, namespace: str | None, name: str
                  ) -> web.Response:
    body = await _body(request)
    data = decode_body(body, request.headers.get("Content-Type")) if body.strip() else None
    opts = DeleteOptions.parse(data, dict(request.query))
    opts.dry_run = opts.dry_run or _dry_run(request)
    obj, gone = await srv.registry.delete(info, namespace, name, opts)
    return _json(obj, 200 if gone else 202)


async def _delete_collection(srv: APIServer, request: web.Request, info: ResourceInfo, namespace: str | None
                             ) -> web.Response:
    body = await _body(request)
    data = decode_body(body, request.headers.get("Content-Type")) if body.strip() else None
    opts = DeleteOptions.parse(data, dict(request.query))
    opts.dry_run = opts.dry_run or _dry_run(request)
    listed = await srv.registry.list(info, namespace, matches=_selector(request, info))
    deleted = []
    for obj in listed.items:
        m = obj["metadata"]
        try:
            out, _ = await srv.registry.delete(info, m.get("namespace"), m["name"], opts)
        except errors.ApiError as e:
            if e.code == 404:
                continue
            raise
        deleted.append(out)
    return _json({"kind": info.list_kind, "apiVersion": info.api_version,
                  "metadata": {"resourceVersion": str(listed.resource_version)}, "items": deleted})


# ---- subresources -----------------------------------------------------------------------------------

async def _subresource(srv: APIServer, request: web.Request, ri: RequestInfo, info: ResourceInfo,
                       namespace: str | None) -> web.StreamResponse:
    sub, name, method = ri.subresource, ri.name or "", request.method
    reg = srv.registry
    if sub in ("status", "finalize"):
        if method == "GET" and sub == "status":
            return _json(await reg.get(info, namespace, name))
        if method == "PUT":
            obj, warnings = await _read_object(request, info)
            _check_name(obj, name)
            rv = obj.get("metadata", {}).get("resourceVersion") or None
            updated, _ = await reg.update(info, namespace, name, lambda old: copy.deepcopy(obj),
                                          subresource=sub, dry_run=_dry_run(request), precondition_rv=rv)
            return _json(updated, 200, warnings)
        if method == "PATCH" and sub == "status":
            return await _patch(srv, request, info, namespace, name, subresource="status")
    elif sub == "scale":
        return await _scale(srv, request, info, namespace, name)
    elif sub == "binding" and method == "POST":
        return await _binding(srv, request, info, namespace, name)
    elif sub == "eviction" and method == "POST":
        await _body(request)
        await reg.delete(info, namespace, name, DeleteOptions())
        return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201)
    elif sub == "token" and method == "POST":
        from .serviceaccounts import handle_token_request

        return await handle_token_request(srv, request, info, namespace, name)
    elif (sub == "log" and method == "GET") or (sub == "exec" and method in ("GET", "POST")):
        from .kubelet_proxy import proxy_to_kubelet

        pod = await reg.get(info, namespace, name)
        return await proxy_to_kubelet(srv, request, pod, sub)
    raise errors.method_not_allowed(f"{method} is not supported on {info.plural}/{sub}")


def _to_scale(info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
    from .selectors import label_selector_from_dict

    m = obj["metadata"]
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m.get("namespace"), "uid": m.get("uid"),
                     "resourceVersion": m.get("resourceVersion"), "creationTimestamp": m.get("creationTimestamp")},
        "spec": {"replicas": spec.get("replicas", 0)},
        "status": {"replicas": status.get("replicas", 0),
                   "selector": str(label_selector_from_dict(spec.get("selector")))},
    }


async def _scale(srv: APIServer, request: web.Request, info: ResourceInfo, namespace: str | None, name: str
                 ) -> web.Response:
    from .patch import apply_json_patch, apply_merge_patch

    reg = srv.registry
    if request.method == "GET":
        return _json(_to_scale(info, await reg.get(info, namespace, name)))
    if request.method not in ("PUT", "PATCH"):
        raise errors.method_not_allowed(f"{request.method} is not supported on {info.plural}/scale")
    body = decode_body(await _body(request), request.headers.get("Content-Type"))
    kind = media_type(request.headers.get("Content-Type"))
    rv: str | None = None
    if request.method == "PUT":
        if not isinstance(body, dict) or body.get("kind") not in (None, "Scale"):
            raise errors.bad_request("the body of a scale update must be a Scale object")
        rv = (body.get("metadata") or {}).get("resourceVersion") or None

    def mutate(old: dict[str, Any] | None) -> dict[str, Any]:
        assert old is not None
        scale = _to_scale(info, old)
        if request.method == "PUT":
            new_scale = body
        elif kind == JSON_PATCH:
            new_scale = apply_json_patch(scale, body)
        elif kind in (MERGE_PATCH, STRATEGIC_PATCH):
            new_scale = apply_merge_patch(scale, body)
        else:
            raise errors.unsupported_media_type(kind)
        replicas = (new_scale.get("spec") or {}).get("replicas", 0)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise errors.invalid("Scale", name, [errors.Cause(
                "spec.replicas", f"Invalid value: {replicas!r}: must be greater than or equal to 0")],
                "autoscaling")
        return {**old, "spec": {**(old.get("spec") or {}), "replicas": replicas}}

    updated, _ = await reg.update(info, namespace, name, mutate, subresource="scale",
                                  dry_run=_dry_run(request), precondition_rv=rv)
    return _json(_to_scale(info, updated))


async def _binding(srv: APIServer, request: web.Request, info: ResourceInfo, namespace: str | None, name: str
                   ) -> web.Response:
    body = decode_body(await _body(request), request.headers.get("Content-Type"))
    if not isinstance(body, dict):
        raise errors.bad_request("the body of a binding must be a Binding object")
    target = body.get("target") or {}
    node = target.get("name")
    if not node:
        raise errors.invalid("Binding", name, [errors.Cause("target.name", "Required value",
                                                            "FieldValueRequired")])

    def mutate(old: dict[str, Any] | None) -> dict[str, Any]:
        assert old is not None
        spec = old.get("spec") or {}
        if old["metadata"].get("deletionTimestamp"):
            raise errors.conflict("pods", name, "", "pod is being deleted, cannot be assigned to a host")
        if spec.get("nodeName"):
            raise errors.conflict("pods", name, "", f'pod {name} is already assigned to node "{spec["nodeName"]}"')
        status = dict(old.get("status") or {})
        now = objects.now_rfc3339()
        conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                      "lastTransitionTime": now})
        status["conditions"] = conds
        return {**old, "spec": {**spec, "nodeName": node}, "status": status}

    await srv.registry.update(info, namespace, name, mutate, subresource="binding")
    return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201)


def is_bindings_create(request: web.Request, ri: RequestInfo) -> bool:
    """POST /api/v1/namespaces/<ns>/bindings: the older form of pods/<name>/binding, which the
    kubernetes Python client's create_namespaced_binding (and old schedulers) still use."""
    return (request.method == "POST" and ri.api_prefix == "api" and ri.version == "v1"
            and ri.resource == "bindings" and ri.namespace is not None and ri.name is None
            and not ri.subresource)


async def handle_bindings(srv: APIServer, request: web.Request, ri: RequestInfo) -> web.Response:
    from minikube_py.api.resources import lookup

    from .server import accepts

    accepts(request)
    body = decode_body(await _body(request), request.headers.get("Content-Type"))
    meta = body.get("metadata") if isinstance(body, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        raise errors.invalid("Binding", "", [errors.Cause("metadata.name", "Required value",
                                                          "FieldValueRequired")])
    pods = lookup("", "v1", "pods")
    assert pods is not None
    # aiohttp caches the body, so _binding reads the same bytes again.
    return await _binding(srv, request, pods, ri.namespace, name)


# ---- non-resource endpoints served by handlers ------------------------------------------------------

async def handle_review(srv: APIServer, request: web.Request, ri: RequestInfo) -> web.Response:
    """SelfSubjectAccessReview, SubjectAccessReview and SelfSubjectReview, answered from the
    authorizer the requests themselves pass through."""
    from .requests import RequestInfo as RI
    from .server import User

    body = decode_body(await _body(request), request.headers.get("Content-Type"))
    if not isinstance(body, dict):
        raise errors.bad_request("the body of a review must be an object")
    user: User = request["user"]
    resource = ri.parts[-1] if ri.parts else ""
    if resource == "selfsubjectreviews":
        out = {**body, "kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
               "status": {"userInfo": {"username": user.name, "uid": user.uid, "groups": list(user.groups)}}}
        out.setdefault("metadata", {})["creationTimestamp"] = objects.now_rfc3339()
        return _json(out, 201)
    if resource == "tokenreviews":
        from .serviceaccounts import review_token

        return _json(await review_token(srv, body), 201)
    if resource not in ("selfsubjectaccessreviews", "subjectaccessreviews"):
        raise errors.not_found_path()
    spec = body.get("spec") or {}
    if resource == "subjectaccessreviews":
        subject = User(spec.get("user", ""), spec.get("uid", ""), tuple(spec.get("groups") or ()))
    else:
        subject = user
    attrs = spec.get("resourceAttributes")
    if attrs:
        target = RI(path="", verb=attrs.get("verb", ""), is_resource=True, group=attrs.get("group", ""),
                    version=attrs.get("version", ""), resource=attrs.get("resource", ""),
                    namespace=attrs.get("namespace") or None, name=attrs.get("name") or None,
                    subresource=attrs.get("subresource", ""))
    else:
        nr = spec.get("nonResourceAttributes") or {}
        target = RI(path=nr.get("path", ""), verb=nr.get("verb", ""))
    from .rbac import decide

    selector = ((attrs or {}).get("fieldSelector") or {}).get("rawSelector", "") if attrs else ""
    allowed, reason = await decide(srv.authorizer, subject, target, selector)
    out = {**body, "status": {"allowed": allowed, **({"reason": reason} if reason else {})}}
    out.setdefault("metadata", {})
    return _json(out, 201)


async def handle_openapi(srv: APIServer, request: web.Request, parts: list[str]) -> web.Response:
    from minikube_py.api import openapi

    if parts == ["openapi", "v2"]:
        accept = request.headers.get("Accept", "")
        if "protobuf" in accept:
            return web.Response(body=await asyncio.to_thread(openapi.v2_protobuf), headers={
                "Content-Type": "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"})
        return _json(await asyncio.to_thread(openapi.v2_json))
    if parts == ["openapi", "v3"]:
        return _json(await asyncio.to_thread(openapi.v3_index))
    if len(parts) > 2 and parts[:2] == ["openapi", "v3"]:
        gv = "/".join(parts[2:])
        body = await asyncio.to_thread(openapi.v3_document_bytes, gv)
        if body is None:
            raise errors.not_found_path()
        resp = web.Response(body=body, content_type="application/json")
        if request.query.get("hash"):
            # Hashed URLs never change content, as on the real apiserver: clients may cache forever.
            resp.headers["Cache-Control"] = "public, immutable"
            resp.headers["Etag"] = f'"{openapi.v3_hash(gv)}"'
        return resp
    raise errors.not_found_path()


# ---- responses --------------------------------------------------------------------------------------

def _json(obj: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    from .server import json_response

    return json_response(obj, status, warnings)


def _object_response(request: web.Request, info: ResourceInfo, obj: dict[str, Any]) -> web.Response:
    if wants_table(request.headers.get("Accept")):
        return _json(to_table(info, [obj], obj["metadata"].get("resourceVersion", ""),
                              request.query.get("includeObject", "Metadata")))
    return _json(obj)


def to_table(info: ResourceInfo, items: list[dict[str, Any]], rv: str, include: str = "Metadata",
             with_columns: bool = True) -> dict[str, Any]:
    from minikube_py.api.tables import column_definitions, row_cells

    now = dt.datetime.now(dt.UTC)
    rows = []
    for obj in items:
        row: dict[str, Any] = {"cells": row_cells(info, obj, now)}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj.get("metadata", {})}
        rows.append(row)
    table: dict[str, Any] = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv}}
    if with_columns:
        table["columnDefinitions"] = column_definitions(info)
    table["rows"] = rows
    return table
