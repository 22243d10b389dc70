"""client-go's shared informer, asyncio flavour: a local cache of one resource kept current by
list-then-watch, with indexes and event handlers.

The reflector loop lists every page, replaces the cache (emitting the difference to the handlers),
then watches from the list's resourceVersion. A watch the server ends normally (its timeout) is
re-opened from the last resourceVersion seen; a 410 Gone, an ERROR event, a dropped connection or any
other failure leads to a fresh list whose difference with the cache is emitted — so a change made
while the informer was disconnected is never lost, deletions included.

Handlers run synchronously in the event loop after the cache is updated. They should only enqueue
keys: the objects they get are the cache's own and must never be mutated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

from minikube_py.api.resources import ResourceInfo

from .rest import APIClient, ApiStatusError, resource

log = logging.getLogger(__name__)

AddHandler = Callable[[dict[str, Any]], None]
UpdateHandler = Callable[[dict[str, Any], dict[str, Any]], None]
DeleteHandler = Callable[[dict[str, Any]], None]
IndexFunc = Callable[[dict[str, Any]], list[str]]

# client-go's reflector: watches last between 5 and 10 minutes so that load spreads over time.
MIN_WATCH_TIMEOUT = 300
# Back-off between failed list/watch attempts: short enough that a restarted API server is picked up
# within seconds, capped so that a down server is not hammered.
BACKOFF_INITIAL = 0.2
BACKOFF_CAP = 5.0


def key_of(obj: dict[str, Any]) -> str:
    """The cache key of an object: ``namespace/name``, or ``name`` for cluster-scoped objects."""
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise ValueError("object has no metadata.name")
    ns = meta.get("namespace")
    return f"{ns}/{name}" if ns else str(name)


def split_key(key: str) -> tuple[str | None, str]:
    """``"ns/name"`` -> ``("ns", "name")``; ``"name"`` -> ``(None, "name")``."""
    parts = key.split("/")
    if len(parts) == 1 and parts[0]:
        return None, parts[0]
    if len(parts) == 2 and parts[0] and parts[1]:
        return parts[0], parts[1]
    raise ValueError(f"unexpected key format: {key!r}")


def _rv(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class Informer:
    """A cache of one resource (optionally one namespace, filtered by selectors) kept in sync."""

    def __init__(self, client: APIClient, res: str | ResourceInfo, namespace: str | None = None, *,
                 label_selector: str | None = None, field_selector: str | None = None,
                 resync_period: float = 0) -> None:
        if resync_period < 0:
            raise ValueError("resync_period must not be negative")
        self.client = client
        self.info = resource(res)
        self.namespace = namespace if self.info.namespaced else None
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self._items: dict[str, dict[str, Any]] = {}
        self._handlers: list[tuple[AddHandler | None, UpdateHandler | None, DeleteHandler | None]] = []
        self._index_funcs: dict[str, IndexFunc] = {}
        self._indices: dict[str, dict[str, set[str]]] = {}
        self._index_values: dict[str, dict[str, list[str]]] = {}  # index -> key -> values it has
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._resync_task: asyncio.Task[None] | None = None
        self._last_rv = ""
        # How many times the cache was rebuilt from a list after the first: for metrics and tests.
        self.relists = 0
        self.add_index("namespace", lambda obj: [str((obj.get("metadata") or {}).get("namespace") or "")])

    # ---- configuration ---------------------------------------------------------------------------

    def add_handlers(self, on_add: AddHandler | None = None, on_update: UpdateHandler | None = None,
                     on_delete: DeleteHandler | None = None) -> None:
        """Register handlers; added to a running informer, ``on_add`` first sees every cached object."""
        self._handlers.append((on_add, on_update, on_delete))
        if on_add is not None:
            for obj in list(self._items.values()):
                self._call(on_add, obj)

    def add_index(self, name: str, fn: IndexFunc) -> None:
        """An index: ``fn(obj)`` gives the values ``by_index(name, value)`` finds the object under."""
        if name in self._index_funcs and name != "namespace":
            raise ValueError(f"index {name!r} already exists")
        self._index_funcs[name] = fn
        self._indices[name] = {}
        self._index_values[name] = {}
        for key, obj in self._items.items():
            self._index_one(name, key, obj)

    # ---- running ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the list-and-watch loop in the background (returns at once; see wait_synced)."""
        if self._task is not None:
            return
        self._task = asyncio.create_task(self._run(), name=f"informer-{self.info.qualified}")
        if self.resync_period > 0:
            self._resync_task = asyncio.create_task(self._resync_loop())

    async def wait_synced(self, timeout: float | None = None) -> bool:
        """True once the first list is in the cache; False if ``timeout`` passes first."""
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        for task in (self._task, self._resync_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._resync_task = None

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    @property
    def last_resource_version(self) -> str:
        return self._last_rv

    # ---- reading the cache -----------------------------------------------------------------------

    def get(self, key: str) -> dict[str, Any] | None:
        return self._items.get(key)

    def list(self, namespace: str | None = None) -> list[dict[str, Any]]:
        if namespace is None:
            return list(self._items.values())
        return self.by_index("namespace", namespace)

    def keys(self) -> list[str]:
        return list(self._items)

    def by_index(self, name: str, value: str) -> list[dict[str, Any]]:
        index = self._indices.get(name)
        if index is None:
            raise ValueError(f"no index named {name!r}")
        return [self._items[k] for k in sorted(index.get(value, ()))]

    def __len__(self) -> int:
        return len(self._items)

    # ---- the reflector ---------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = BACKOFF_INITIAL
        need_list = True
        while True:
            try:
                if need_list:
                    items, rv = await self.client.list_all(
                        self.info, self.namespace, label_selector=self.label_selector,
                        field_selector=self.field_selector)
                    self._replace(items, rv)
                    need_list = False
                    delay = BACKOFF_INITIAL
                await self._watch()
                # The server ended the watch (its timeout): carry on from the last resourceVersion.
                continue
            except asyncio.CancelledError:
                raise
            except ApiStatusError as e:
                if e.code == 410:
                    log.info("%s: watch expired (%s); re-listing", self.info.qualified, e.message)
                    need_list = True
                    continue  # not a failure: re-list at once, as client-go does
                log.warning("%s: list/watch failed: %s", self.info.qualified, e)
            except Exception as e:
                log.warning("%s: list/watch failed: %s: %s", self.info.qualified, type(e).__name__, e)
            need_list = True
            await asyncio.sleep(delay * (1 + random.random() * 0.5))
            delay = min(delay * 2, BACKOFF_CAP)

    async def _watch(self) -> None:
        timeout = int(MIN_WATCH_TIMEOUT * (1 + random.random()))
        async for kind, obj in self.client.watch(
                self.info, self.namespace, resource_version=self._last_rv or None,
                label_selector=self.label_selector, field_selector=self.field_selector,
                timeout_seconds=timeout, allow_bookmarks=True):
            rv = _rv(obj)
            if kind == "BOOKMARK":
                if rv:
                    self._last_rv = rv
                continue
            obj.setdefault("apiVersion", self.info.api_version)
            obj.setdefault("kind", self.info.kind)
            if kind in ("ADDED", "MODIFIED"):
                self._upsert(obj)
            elif kind == "DELETED":
                self._remove(key_of(obj), obj)
            else:
                log.warning("%s: unknown watch event type %r ignored", self.info.qualified, kind)
            if rv:
                self._last_rv = rv

    def _replace(self, items: list[dict[str, Any]], rv: str) -> None:
        """Make the cache exactly ``items``, telling the handlers what changed since the last state."""
        fresh = {key_of(obj): obj for obj in items}
        if self._synced.is_set():
            self.relists += 1
        for key in [k for k in self._items if k not in fresh]:
            # client-go hands over a DeletedFinalStateUnknown here; the last known state serves the same need.
            self._remove(key, self._items[key])
        for obj in fresh.values():
            self._upsert(obj)
        self._last_rv = rv
        self._synced.set()

    def _upsert(self, obj: dict[str, Any]) -> None:
        key = key_of(obj)
        old = self._items.get(key)
        if old is not None and _rv(old) == _rv(obj) and _rv(obj):
            return  # the same version (a re-list of an unchanged object): nothing happened
        self._items[key] = obj
        self._reindex(key, obj)
        for on_add, on_update, _ in self._handlers:
            if old is None:
                if on_add is not None:
                    self._call(on_add, obj)
            elif on_update is not None:
                self._call(on_update, old, obj)

    def _remove(self, key: str, obj: dict[str, Any]) -> None:
        if self._items.pop(key, None) is None:
            return
        self._unindex(key)
        for _, _, on_delete in self._handlers:
            if on_delete is not None:
                self._call(on_delete, obj)

    async def _resync_loop(self) -> None:
        """client-go's resync: every object is handed to on_update(obj, obj) again, so that controllers
        re-check state they keep outside the API (and recover from a handler bug)."""
        while True:
            await asyncio.sleep(self.resync_period)
            if not self._synced.is_set():
                continue
            for obj in list(self._items.values()):
                for _, on_update, _ in self._handlers:
                    if on_update is not None:
                        self._call(on_update, obj, obj)

    def _call(self, fn: Callable[..., None], *args: dict[str, Any]) -> None:
        try:
            fn(*args)
        except Exception:
            # One bad handler must not stop the informer nor starve the other handlers.
            log.exception("%s: event handler %r failed", self.info.qualified, fn)

    # ---- indexes ---------------------------------------------------------------------------------

    def _reindex(self, key: str, obj: dict[str, Any]) -> None:
        self._unindex(key)
        for name in self._index_funcs:
            self._index_one(name, key, obj)

    def _index_one(self, name: str, key: str, obj: dict[str, Any]) -> None:
        try:
            values = list(self._index_funcs[name](obj))
        except Exception:
            log.exception("%s: index function %r failed on %s", self.info.qualified, name, key)
            values = []
        self._index_values[name][key] = values
        index = self._indices[name]
        for v in values:
            index.setdefault(v, set()).add(key)

    def _unindex(self, key: str) -> None:
        for name, by_key in self._index_values.items():
            index = self._indices[name]
            for v in by_key.pop(key, ()):
                keys = index.get(v)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[v]
