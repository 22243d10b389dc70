"""Generic storage of API objects: the create/get/list/update/delete/watch semantics of Kubernetes'
generic registry, with per-kind rules (``strategy``) for status, generation and allocation."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from minikube_py.api import errors
from minikube_py.api.resources import ResourceInfo, lookup
from minikube_py.store import (
    CompactedError,
    ConflictError,
    Event,
    EventType,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    RangeResult,
    Store,
    WatchDroppedError,
)

from . import objects, strategy
from .allocators import IPAllocator, PortAllocator
from .objects import decode, encode, meta, now_rfc3339

NAMESPACES = lookup("", "v1", "namespaces")
assert NAMESPACES is not None

# Pages read from the store while filtering a list by selectors.
_LIST_BATCH = 500


@dataclass
class ListResult:
    items: list[dict[str, Any]]
    resource_version: int
    continue_token: str | None = None
    remaining: int | None = None


@dataclass
class WatchEvent:
    type: str  # ADDED MODIFIED DELETED BOOKMARK ERROR
    object: dict[str, Any]
    # The encoded JSON line, set by the first watcher that sends a shared event.
    line: bytes | None = None


# Recent store events kept decoded for watchers that are a little behind the others.
_SHARED_EVENTS = 1024


@dataclass
class DeleteOptions:
    grace_period_seconds: int | None = None
    propagation_policy: str | None = None  # Orphan, Background, Foreground
    precondition_uid: str | None = None
    precondition_rv: str | None = None
    dry_run: bool = False

    @classmethod
    def parse(cls, body: dict[str, Any] | None, query: dict[str, str]) -> DeleteOptions:
        body = body or {}
        if not isinstance(body, dict):
            raise errors.bad_request("DeleteOptions must be an object")
        opts = cls()
        grace = body.get("gracePeriodSeconds", query.get("gracePeriodSeconds"))
        if grace is not None:
            try:
                opts.grace_period_seconds = int(grace)
            except (TypeError, ValueError):
                raise errors.bad_request(f"invalid gracePeriodSeconds {grace!r}") from None
        policy = body.get("propagationPolicy", query.get("propagationPolicy"))
        if body.get("orphanDependents") is True or query.get("orphanDependents") == "true":
            policy = policy or "Orphan"
        if policy is not None and policy not in ("Orphan", "Background", "Foreground"):
            raise errors.ApiError(
                422, "Invalid", f'propagationPolicy: Unsupported value: "{policy}": supported values: '
                '"Foreground", "Background", "Orphan"')
        opts.propagation_policy = policy
        pre = body.get("preconditions") or {}
        if not isinstance(pre, dict):
            raise errors.bad_request("preconditions must be an object")
        opts.precondition_uid = pre.get("uid")
        opts.precondition_rv = pre.get("resourceVersion")
        dry = body.get("dryRun") or ([query["dryRun"]] if "dryRun" in query else [])
        opts.dry_run = "All" in dry
        return opts


async def follow_prefix(
    store: Store,
    prefix: str,
    *,
    on_list: Callable[[RangeResult], None],
    on_event: Callable[[Event], None],
    on_lost: Callable[[], None],
    ready: asyncio.Future[None] | None = None,
    retry_delay: float = 0.5,
) -> None:
    """Keep an in-memory view of ``prefix`` (an informer): list it, then watch from the list's
    revision, until cancelled. The store never skips an event silently, so a watch that is dropped
    (a slow reader) or compacted ends with an error, and the view is re-listed at once; any other
    failure (the store unavailable) waits ``retry_delay`` first. ``on_lost`` is told each time the
    watch ends; ``ready`` is resolved after the first attempt, listed or not, so that a start never
    hangs on a store that is down (the views' users fall back to store reads meanwhile)."""
    while True:
        delay = retry_delay
        try:
            res = await store.range(prefix)
            on_list(res)
            if ready is not None and not ready.done():
                ready.set_result(None)
            watch = store.watch(prefix, res.revision)
            try:
                async for ev in watch:
                    on_event(ev)
            finally:
                await watch.close()
        except asyncio.CancelledError:
            raise
        except (WatchDroppedError, CompactedError):
            delay = 0.0
        except Exception:
            pass
        on_lost()
        if ready is not None and not ready.done():
            ready.set_result(None)
        await asyncio.sleep(delay)


@dataclass
class Registry:
    store: Store
    service_cidr: str = "10.96.0.0/12"
    node_port_range: tuple[int, int] = (30000, 32767)
    ips: IPAllocator = field(init=False)
    ports: PortAllocator = field(init=False)

    # Namespace name -> being terminated, fed by a watch: the NamespaceLifecycle check on every
    # create then costs no store read (kube-apiserver serves it from an informer the same way).
    _namespaces: dict[str, bool] = field(init=False, default_factory=dict)
    _ns_task: asyncio.Task[None] | None = field(init=False, default=None)
    _recent_events: dict[tuple[str, int], WatchEvent] = field(init=False, default_factory=dict)
    # API group -> called with (plural, key, revision, deleted) after each write of that group made
    # through here; for a delete, the revision is the deleted value's (the store returns that one).
    write_observers: dict[str, Callable[[str, str, int, bool], None]] = field(init=False, default_factory=dict)

    async def start(self) -> None:
        ready = asyncio.get_running_loop().create_future()
        self._ns_task = asyncio.create_task(follow_prefix(
            self.store, NAMESPACES.prefix(None), on_list=self._namespaces_listed,
            on_event=self._namespace_event, on_lost=self._namespaces.clear, ready=ready))
        await ready

    async def stop(self) -> None:
        if self._ns_task is not None:
            self._ns_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._ns_task
            self._ns_task = None

    def _namespaces_listed(self, res: RangeResult) -> None:
        prefix = NAMESPACES.prefix(None)
        # Replaced in place: on_lost above is bound to this dict's clear().
        self._namespaces.clear()
        self._namespaces.update({kv.key[len(prefix):]: bool(objects.loads(kv.value)["metadata"]
                                                            .get("deletionTimestamp")) for kv in res.items})

    def _namespace_event(self, ev: Event) -> None:
        name = ev.kv.key[len(NAMESPACES.prefix(None)):]
        if ev.type is EventType.DELETE:
            self._namespaces.pop(name, None)
        else:
            ns = objects.loads(ev.kv.value)
            self._namespaces[name] = bool(ns["metadata"].get("deletionTimestamp"))

    def _wrote(self, info: ResourceInfo, key: str, revision: int, deleted: bool = False) -> None:
        """Tell the observer of ``info``'s API group (the RBAC cache) about a write made here, so that
        it can tell when its watch has caught up with it (read-your-writes)."""
        observer = self.write_observers.get(info.group)
        if observer is not None:
            observer(info.plural, key, revision, deleted)

    def __post_init__(self) -> None:
        # 10.96.0.1 belongs to the `kubernetes` Service, allocated explicitly at start-up.
        first_ip = str(next(iter(__import__("ipaddress").ip_network(self.service_cidr).hosts())))
        self.ips = IPAllocator(self.store, self.service_cidr, reserved=(first_ip,))
        self.ports = PortAllocator(self.store, *self.node_port_range)

    # ---- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _key(info: ResourceInfo, namespace: str | None, name: str) -> str:
        return info.key(namespace if info.namespaced else None, name)

    async def _check_namespace(self, info: ResourceInfo, namespace: str | None) -> None:
        """NamespaceLifecycle: content may only be created in a namespace that exists and is active."""
        if not info.namespaced:
            return
        terminating = self._namespaces.get(namespace or "")
        if terminating is None:
            # Not (yet) in the cache: a namespace created a moment ago must still count.
            kv = await self.store.get(NAMESPACES.key(None, namespace or ""))
            if kv is None:
                raise errors.not_found("namespaces", namespace or "")
            terminating = bool(decode(kv)["metadata"].get("deletionTimestamp"))
        if terminating:
            raise errors.forbidden(
                f'{info.plural} "{{name}}" is forbidden: unable to create new content in namespace '
                f"{namespace} because it is being terminated")

    # ---- create ----------------------------------------------------------------------------------

    async def create(
        self, info: ResourceInfo, namespace: str | None, obj: dict[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        m = meta(obj)
        if info.namespaced:
            ns = m.get("namespace") or namespace
            if namespace and m.get("namespace") and m["namespace"] != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request")
            m["namespace"] = ns
            namespace = ns
        else:
            m.pop("namespace", None)
        if not m.get("name") and m.get("generateName"):
            m["name"] = m["generateName"] + uuid.uuid4().hex[:5]
        m.pop("resourceVersion", None)
        m["uid"] = str(uuid.uuid4())
        m["creationTimestamp"] = now_rfc3339()
        m.pop("deletionTimestamp", None)
        m.pop("deletionGracePeriodSeconds", None)
        if info.kind in strategy.GENERATION_KINDS:
            m["generation"] = 1
        strategy.prepare_for_create(info, obj)
        strategy.default_and_validate(info, obj, None)
        name = m["name"]
        try:
            await self._check_namespace(info, namespace)
        except errors.ApiError as e:
            e.message = e.message.replace("{name}", name)
            raise
        key = self._key(info, namespace, name)
        # The store's create refuses an existing key by itself; read first only where allocating or
        # a dry run would otherwise do work (or answer) for an object that already exists.
        if (dry_run or info.kind == "Service") and await self.store.get(key) is not None:
            raise errors.already_exists(info.plural, name, info.group)
        allocated = await strategy.allocate(self, info, obj, None, dry_run=dry_run)
        if dry_run:
            return obj
        try:
            kv = await self.store.create(key, encode(obj))
        except KeyExistsError:
            await strategy.release(self, info, allocated)
            raise errors.already_exists(info.plural, name, info.group) from None
        except BaseException:
            await strategy.release(self, info, allocated)
            raise
        m["resourceVersion"] = str(kv.mod_revision)
        self._wrote(info, key, kv.mod_revision)
        return obj

    # ---- get / list ------------------------------------------------------------------------------

    async def get(self, info: ResourceInfo, namespace: str | None, name: str) -> dict[str, Any]:
        kv = await self.store.get(self._key(info, namespace, name))
        if kv is None:
            raise errors.not_found(info.plural, name, info.group)
        return decode(kv)

    async def list(
        self,
        info: ResourceInfo,
        namespace: str | None,
        *,
        matches: Callable[[dict[str, Any]], bool] | None = None,
        limit: int = 0,
        continue_token: str | None = None,
        resource_version: int | None = None,
        exact: bool = False,
    ) -> ListResult:
        prefix = info.prefix(namespace if info.namespaced else None)
        revision: int | None = None
        start_after: str | None = None
        if continue_token:
            revision, start_after = objects.decode_continue(continue_token)
        elif exact and resource_version:
            revision = resource_version
        items: list[dict[str, Any]] = []
        try:
            while True:
                # Without a selector a page maps 1:1 onto store keys; with one, read in batches.
                want = limit - len(items) if (limit and matches is None) else (_LIST_BATCH if matches else 0)
                res = await self.store.range(prefix, limit=want, start_after=start_after, revision=revision)
                revision = res.revision
                consumed = 0
                for kv in res.items:
                    consumed += 1
                    start_after = kv.key
                    obj = decode(kv)
                    if matches is None or matches(obj):
                        items.append(obj)
                        if limit and len(items) >= limit:
                            break
                more_in_store = res.more or consumed < len(res.items)
                if limit and len(items) >= limit:
                    if not more_in_store:
                        return ListResult(items, revision)
                    remaining = res.count - consumed if matches is None else None
                    token = objects.encode_continue(revision, start_after or "")
                    return ListResult(items, revision, token, remaining)
                if not res.more:
                    return ListResult(items, revision)
        except CompactedError:
            if continue_token:
                raise errors.gone(
                    "The provided continue parameter is too old to display a consistent list result. You "
                    "can start a new list without the continue parameter, or use the continue token in "
                    "this response to retrieve the remainder of the results.") from None
            raise errors.gone(f"too old resource version: {resource_version}") from None
        except FutureRevisionError:
            raise errors.ApiError(
                504, "Timeout",
                f"Too large resource version: {resource_version}, current: {await self.store.current_revision()}",
                {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                 "retryAfterSeconds": 1}) from None

    # ---- update ----------------------------------------------------------------------------------

    async def update(
        self,
        info: ResourceInfo,
        namespace: str | None,
        name: str,
        mutate: Callable[[dict[str, Any] | None], Awaitable[dict[str, Any]] | dict[str, Any]],
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        allow_create: bool = False,
        precondition_rv: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Read-modify-write: ``mutate(current)`` returns the desired object (a fresh dict; never the
        current one changed in place). ``precondition_rv`` (the client's resourceVersion) turns a
        mismatch into 409 Conflict; without it the write retries on conflict, as PATCH does.
        Returns (object, created)."""
        key = self._key(info, namespace, name)
        for _attempt in range(20):
            kv = await self.store.get(key)
            old = decode(kv) if kv is not None else None
            if old is None:
                if not allow_create:
                    raise errors.not_found(info.plural, name, info.group)
                new = mutate(None)
                if isinstance(new, Awaitable):
                    new = await new
                if info.namespaced and namespace:
                    meta(new).setdefault("namespace", namespace)
                meta(new).setdefault("name", name)
                return await self.create(info, namespace, new, dry_run=dry_run), True
            old_rv = old["metadata"]["resourceVersion"]
            if precondition_rv and precondition_rv != old_rv:
                raise errors.conflict(info.plural, name, info.group)
            new = mutate(old)
            if isinstance(new, Awaitable):
                new = await new
            m = meta(new)
            if m.get("name", name) != name:
                raise errors.bad_request(
                    f"the name of the object ({m.get('name')}) does not match the name on the URL ({name})")
            if info.namespaced and m.get("namespace", namespace) != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request")
            m["name"] = name
            if info.namespaced:
                m["namespace"] = namespace
            m["resourceVersion"] = old_rv
            strategy.prepare_for_update(info, new, old, subresource)
            strategy.default_and_validate(info, new, old)
            # A no-op write does not bump resourceVersion, as in Kubernetes; unless the stored value
            # was encrypted with an old key ("stale"), when rewriting it is how keys rotate.
            if new == old and not getattr(kv, "stale", False):
                return old, False
            allocated = await strategy.allocate(self, info, new, old, dry_run=dry_run)
            if dry_run:
                return new, False
            if strategy.should_delete_now(new):
                # The last finalizer of an object being deleted is gone: the object goes with it.
                try:
                    gone = await self.store.delete(key, expected_mod_revision=kv.mod_revision)
                except (ConflictError, KeyNotFoundError):
                    await strategy.release(self, info, allocated)
                    continue
                self._wrote(info, key, gone.mod_revision, True)
                await strategy.release(self, info, strategy.owned_allocations(info, old))
                return new, False
            try:
                written = await self.store.update(key, encode(new), kv.mod_revision)
            except (ConflictError, KeyNotFoundError):
                await strategy.release(self, info, allocated)
                if precondition_rv:
                    raise errors.conflict(info.plural, name, info.group) from None
                continue
            self._wrote(info, key, written.mod_revision)
            await strategy.release(self, info, strategy.released_by_update(info, new, old))
            # Not ``m``: a status or finalize write replaces new["metadata"] with a fresh dict.
            meta(new)["resourceVersion"] = str(written.mod_revision)
            return new, False
        raise errors.conflict(info.plural, name, info.group, "too many concurrent updates; try again")

    # ---- delete ----------------------------------------------------------------------------------

    async def delete(
        self, info: ResourceInfo, namespace: str | None, name: str, opts: DeleteOptions
    ) -> tuple[dict[str, Any], bool]:
        """Returns (object, gone): gone is False when deletion is graceful or waits for finalizers."""
        key = self._key(info, namespace, name)
        for _attempt in range(20):
            kv = await self.store.get(key)
            if kv is None:
                raise errors.not_found(info.plural, name, info.group)
            obj = decode(kv)
            m = obj["metadata"]
            if opts.precondition_uid and opts.precondition_uid != m.get("uid"):
                raise errors.conflict(
                    info.plural, name, info.group,
                    f"Precondition failed: UID in precondition: {opts.precondition_uid}, UID in object meta: "
                    f"{m.get('uid')}")
            if opts.precondition_rv and opts.precondition_rv != m.get("resourceVersion"):
                raise errors.conflict(
                    info.plural, name, info.group,
                    f"Precondition failed: ResourceVersion in precondition: {opts.precondition_rv}, "
                    f"ResourceVersion in object meta: {m.get('resourceVersion')}")
            updated = strategy.begin_delete(info, obj, opts)
            if updated is not None:
                if opts.dry_run:
                    return updated, False
                if updated == obj:
                    return obj, False
                try:
                    written = await self.store.update(key, encode(updated), kv.mod_revision)
                except (ConflictError, KeyNotFoundError):
                    continue
                self._wrote(info, key, written.mod_revision)
                updated["metadata"]["resourceVersion"] = str(written.mod_revision)
                return updated, False
            if opts.dry_run:
                return obj, True
            try:
                gone = await self.store.delete(key, expected_mod_revision=kv.mod_revision)
            except (ConflictError, KeyNotFoundError):
                continue
            self._wrote(info, key, gone.mod_revision, True)
            await strategy.release(self, info, strategy.owned_allocations(info, obj))
            return obj, True
        raise errors.conflict(info.plural, name, info.group, "too many concurrent updates; try again")

    # ---- watch -----------------------------------------------------------------------------------

    def _shared_event(self, ev: Event) -> WatchEvent:
        """One WatchEvent per store event, shared by every watcher that sees it: with 100 watchers a
        change is decoded (and, by the first watcher that sends it, encoded) once, not 100 times.
        Watchers only read it."""
        cache_key = (ev.kv.key, ev.kv.mod_revision)
        event = self._recent_events.get(cache_key)
        if event is not None:
            return event
        if ev.type is EventType.DELETE:
            assert ev.prev_kv is not None
            obj = objects.loads(ev.prev_kv.value)
            meta(obj)["resourceVersion"] = str(ev.kv.mod_revision)
            event = WatchEvent("DELETED", obj)
        else:
            kind = "ADDED" if ev.kv.create_revision == ev.kv.mod_revision else "MODIFIED"
            event = WatchEvent(kind, decode(ev.kv))
        self._recent_events[cache_key] = event
        if len(self._recent_events) > _SHARED_EVENTS:
            del self._recent_events[next(iter(self._recent_events))]
        return event

    async def check_watch_start(self, resource_version: int) -> None:
        current = await self.store.current_revision()
        if resource_version > current:
            raise errors.ApiError(
                504, "Timeout", f"Too large resource version: {resource_version}, current: {current}",
                {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                 "retryAfterSeconds": 1})

    async def watch(
        self,
        info: ResourceInfo,
        namespace: str | None,
        *,
        resource_version: int | None,
        matches: Callable[[dict[str, Any]], bool] | None = None,
        send_initial: bool | None = None,
    ) -> AsyncIterator[WatchEvent]:
        """Events after ``resource_version``; with None/0 (or ``send_initial``), the current state
        first as ADDED events, as the real apiserver does for watches without a resourceVersion."""
        prefix = info.prefix(namespace if info.namespaced else None)
        if send_initial is None:
            send_initial = not resource_version
        if send_initial:
            listed = await self.list(info, namespace, matches=matches)
            for obj in listed.items:
                yield WatchEvent("ADDED", obj)
            start = listed.resource_version
            if resource_version:
                # sendInitialEvents with a resourceVersion: the initial state is as of "now" anyway.
                start = max(start, resource_version)
            yield WatchEvent("__INITIAL_END__", {"metadata": {"resourceVersion": str(start)}})
        else:
            start = resource_version or 0
        try:
            watch = self.store.watch(prefix, start)
        except CompactedError:
            # The sqlite store refuses a compacted start at once (etcd while streaming, below).
            yield WatchEvent("ERROR", errors.gone(
                f"too old resource version: {start} ({await self.store.compacted_revision()})").status())
            return
        try:
            async for ev in watch:
                event = self._shared_event(ev)
                if matches is not None and not matches(event.object):
                    continue
                yield event
        except CompactedError:
            yield WatchEvent("ERROR", errors.gone(
                f"too old resource version: {start} ({await self.store.compacted_revision()})").status())
        except WatchDroppedError:
            # The client re-lists, exactly what Kubernetes' watch cache asks of a slow watcher.
            yield WatchEvent("ERROR", errors.gone(
                "the watch fell too far behind and was dropped; re-list").status())
        finally:
            await watch.close()
