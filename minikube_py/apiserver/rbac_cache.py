"""The RBAC authorizer's view of Roles, ClusterRoles and their bindings: kept in memory by store watches
(kube-apiserver's RBAC authorizer reads informer caches the same way), with bindings indexed by
subject so that a decision looks only at the bindings that name the user, one of its groups or its
ServiceAccount.

Read-your-writes: the registry tells the cache about every RBAC write made through this API server
(:meth:`RBACCache.note_write`); until the watches have delivered all of them the cache is not
:meth:`~RBACCache.fresh` and the authorizer waits for it, bounded, then falls back to reading the
store. A binding created or deleted through this server therefore counts for the very next request.
Writes made through another API server (or straight into the store) reach this one when its watch
delivers them — eventually consistent, as in Kubernetes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from minikube_py.api.resources import lookup
from minikube_py.store import Event, EventType, RangeResult

from . import objects
from .rbac import GROUP, allowed_reason, first_subject, role_ref_key, role_rules, rule_allows
from .registry import follow_prefix

if TYPE_CHECKING:
    from .registry import Registry
    from .requests import RequestInfo
    from .server import User

PLURALS = ("clusterroles", "roles", "clusterrolebindings", "rolebindings")


def _prefix(plural: str) -> str:
    info = lookup(GROUP, "v1", plural)
    assert info is not None, plural
    return info.prefix(None)


@dataclass(frozen=True, slots=True)
class Binding:
    kind: str  # ClusterRoleBinding or RoleBinding
    name: str
    namespace: str | None  # None for a ClusterRoleBinding
    subjects: list[Any]
    ref: Any
    role_key: str | None  # the store key of the role the roleRef names (None: it names none)
    index_keys: tuple[str, ...]


def index_keys(subjects: Any, namespace: str | None) -> tuple[str, ...]:
    """The index entries under which a binding is found: ``u:<user name>`` for a User subject and for a
    ServiceAccount (whose user name is ``system:serviceaccount:<ns>:<name>``), ``g:<group>``. They are
    exactly the names :func:`~minikube_py.apiserver.rbac.subject_matches` compares with."""
    if not isinstance(subjects, list):
        return ()
    keys: list[str] = []
    for s in subjects:
        if not isinstance(s, dict):
            continue
        kind, name = s.get("kind"), s.get("name")
        if kind == "User" and isinstance(name, str):
            keys.append("u:" + name)
        elif kind == "Group" and isinstance(name, str):
            keys.append("g:" + name)
        elif kind == "ServiceAccount":
            keys.append(f"u:system:serviceaccount:{s.get('namespace') or namespace}:{name}")
    return tuple(dict.fromkeys(keys))


class RBACCache:
    """Roles and bindings of one store, followed by four watches (one per kind)."""

    def __init__(self, registry: Registry, *, fresh_timeout: float = 2.0) -> None:
        self.registry = registry
        self.fresh_timeout = fresh_timeout
        self._prefixes = {p: _prefix(p) for p in PLURALS}
        # Store key -> rules, for ClusterRoles and Roles (the key is what a roleRef resolves to).
        self._rules: dict[str, list[dict[str, Any]]] = {}
        # Store key -> Binding; and the subject indexes: cluster-wide, and namespace -> ...
        self._bindings: dict[str, Binding] = {}
        self._cluster_index: dict[str, dict[str, Binding]] = {}
        self._ns_index: dict[str, dict[str, dict[str, Binding]]] = {}
        # Store key -> mod_revision of every cached object: tells whether a delete made here was seen.
        self._revs: dict[str, int] = {}
        self._seen: dict[str, int] = dict.fromkeys(PLURALS, 0)
        self._listed: set[str] = set()
        # Writes made through this server that the watches have not delivered yet:
        # store key -> (plural, revision, deleted); for a delete, revision is the deleted value's.
        self._pending: dict[str, tuple[str, int, bool]] = {}
        self._progress = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.relists = 0  # watches that ended and were listed again (tests and benchmarks read it)
        registry.write_observers[GROUP] = self.note_write

    # ---- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        readies = []
        for plural, prefix in self._prefixes.items():
            ready: asyncio.Future[None] = loop.create_future()
            readies.append(ready)
            self._tasks.append(asyncio.create_task(follow_prefix(
                self.registry.store, prefix, on_list=functools.partial(self._listed_kind, plural),
                on_event=functools.partial(self._event, plural), on_lost=self._lost, ready=ready)))
        await asyncio.gather(*readies)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    # ---- freshness ---------------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """Every kind has been listed at least once."""
        return len(self._listed) == len(PLURALS)

    def fresh(self) -> bool:
        """Listed, and every RBAC write made through this server has been delivered by the watches."""
        return not self._pending and len(self._listed) == len(PLURALS)

    async def wait_fresh(self, timeout: float | None = None) -> bool:
        """Wait (at most ``timeout``, default ``fresh_timeout``) until :meth:`fresh`; whether it is.
        A cache that is not running (never started, or stopped) is not waited for."""
        if not self._tasks:
            return self.fresh()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.fresh_timeout if timeout is None else timeout)
        while not self.fresh():
            left = deadline - loop.time()
            if left <= 0:
                return False
            progress = self._progress
            try:
                await asyncio.wait_for(progress.wait(), left)
            except TimeoutError:
                return False
        return True

    def note_write(self, plural: str, key: str, revision: int, deleted: bool) -> None:
        """The registry wrote ``key`` (at ``revision``; for a delete, the revision of the value it
        deleted): decisions wait until the cache has caught up with it."""
        if plural not in self._prefixes:
            return
        if plural in self._listed and self._caught_up(plural, key, revision, deleted):
            return
        self._pending[key] = (plural, revision, deleted)

    def _caught_up(self, plural: str, key: str, revision: int, deleted: bool) -> bool:
        if deleted:
            seen = self._revs.get(key)
            return seen is None or seen > revision
        return self._seen[plural] >= revision

    def _settle(self, plural: str) -> None:
        if self._pending:
            for key, (p, revision, deleted) in list(self._pending.items()):
                if p == plural and self._caught_up(p, key, revision, deleted):
                    del self._pending[key]
        # Wake the waiters; they check fresh() again.
        self._progress.set()
        self._progress = asyncio.Event()

    # ---- feeding -----------------------------------------------------------------------------------

    def _listed_kind(self, plural: str, res: RangeResult) -> None:
        prefix = self._prefixes[plural]
        for key in [k for k in self._revs if k.startswith(prefix)]:
            self._forget(key)
        for kv in res.items:
            self._put(plural, kv.key, kv.value, kv.mod_revision)
        self._seen[plural] = res.revision
        self._listed.add(plural)
        self._settle(plural)

    def _event(self, plural: str, ev: Event) -> None:
        if ev.type is EventType.DELETE:
            self._forget(ev.kv.key)
        else:
            self._put(plural, ev.kv.key, ev.kv.value, ev.kv.mod_revision)
        self._seen[plural] = max(self._seen[plural], ev.revision)
        self._settle(plural)

    def _lost(self) -> None:
        # The old view keeps serving while the kind is listed again, as an informer's does; writes
        # made here meanwhile are pending, so decisions wait for the new list (or read the store).
        self.relists += 1

    def _put(self, plural: str, key: str, value: bytes, revision: int) -> None:
        self._forget(key)
        try:
            obj = objects.loads(value)
            meta = obj["metadata"]
        except Exception:
            return  # not an object: the store path would fail on it too; it grants nothing here
        self._revs[key] = revision
        if plural in ("clusterroles", "roles"):
            self._rules[key] = role_rules(obj)
            return
        cluster = plural == "clusterrolebindings"
        ns = None if cluster else meta.get("namespace")
        subjects = obj.get("subjects") or []
        b = Binding("ClusterRoleBinding" if cluster else "RoleBinding", meta["name"], ns,
                    subjects if isinstance(subjects, list) else [], obj.get("roleRef"),
                    role_ref_key(obj.get("roleRef"), ns), index_keys(subjects, ns))
        self._bindings[key] = b
        index = self._cluster_index if cluster else self._ns_index.setdefault(self._key_namespace(key), {})
        for k in b.index_keys:
            index.setdefault(k, {})[key] = b

    def _forget(self, key: str) -> None:
        self._revs.pop(key, None)
        self._rules.pop(key, None)
        b = self._bindings.pop(key, None)
        if b is None:
            return
        cluster = b.kind == "ClusterRoleBinding"
        index = self._cluster_index if cluster else self._ns_index.get(self._key_namespace(key), {})
        for k in b.index_keys:
            hits = index.get(k)
            if hits is not None:
                hits.pop(key, None)
                if not hits:
                    del index[k]
        if not cluster and not index:
            self._ns_index.pop(self._key_namespace(key), None)

    def _key_namespace(self, key: str) -> str:
        # A RoleBinding is found by the namespace of its key, as a list of the namespace finds it.
        return key[len(self._prefixes["rolebindings"]):].partition("/")[0]

    # ---- decisions ---------------------------------------------------------------------------------

    @staticmethod
    def _candidates(index: dict[str, dict[str, Binding]], keys: Iterable[str]) -> list[Binding]:
        found: dict[str, Binding] = {}
        for k in keys:
            hits = index.get(k)
            if hits:
                found.update(hits)
        # Store key order, the order in which a list from the store would return them.
        return [found[k] for k in sorted(found)] if len(found) > 1 else list(found.values())

    def decide(self, user: User, ri: RequestInfo) -> tuple[bool, str]:
        """The RBAC decision from the cached view, with the store path's order and reasons:
        ClusterRoleBindings, then the request namespace's RoleBindings, each by name."""
        keys = ["u:" + user.name, *["g:" + g for g in user.groups]]
        candidates = self._candidates(self._cluster_index, keys)
        if ri.is_resource and ri.namespace:
            ns_index = self._ns_index.get(ri.namespace)
            if ns_index:
                candidates += self._candidates(ns_index, keys)
        for b in candidates:
            match = first_subject(b.subjects, user, b.namespace)
            if match is None:
                continue
            rules = self._rules.get(b.role_key, ()) if b.role_key is not None else ()
            if any(rule_allows(rule, ri) for rule in rules):
                return True, allowed_reason(b.kind, b.name, b.namespace, b.ref, match)
        return False, ""
