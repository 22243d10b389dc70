"""The RBAC authorizer's watch-fed cache: read-your-writes for bindings and roles, a dropped watch that
re-lists, decisions identical to the store path over generated policies, and no store read per
decision. In-process (a Registry on a SQLite store), plus one end-to-end check through the server."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minikube_py.api.resources import lookup
from minikube_py.apiserver import objects
from minikube_py.apiserver.rbac import (
    GROUP,
    RBACAuthorizer,
    bootstrap_cluster_role_bindings,
    bootstrap_cluster_roles,
    controller_cluster_role_bindings,
    controller_cluster_roles,
)
from minikube_py.apiserver.rbac_cache import RBACCache
from minikube_py.apiserver.registry import DeleteOptions, Registry
from minikube_py.apiserver.requests import RequestInfo
from minikube_py.apiserver.server import User
from minikube_py.store.sqlite import SqliteStore
from tests.apiserver.conftest import LocalAPIServer

from .conftest import admin, as_user, ok

RBAC = "/apis/rbac.authorization.k8s.io/v1"


def info(plural: str) -> Any:
    i = lookup(GROUP, "v1", plural) or lookup("", "v1", plural)
    assert i is not None
    return i


class GatedWatch:
    """A store watch whose events wait for ``gate``: holds the cache behind the store on purpose."""

    def __init__(self, inner: Any, gate: asyncio.Event) -> None:
        self.inner, self.gate = inner, gate

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._events()

    async def _events(self) -> AsyncIterator[Any]:
        async for ev in self.inner:
            await self.gate.wait()
            yield ev

    async def close(self) -> None:
        await self.inner.close()


class CountingStore:
    """The store, counting reads; its watches deliver only while ``gate`` is set."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.reads = 0
        self.gate = asyncio.Event()
        self.gate.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get(self, *args: Any, **kw: Any) -> Any:
        self.reads += 1
        return await self.inner.get(*args, **kw)

    async def range(self, *args: Any, **kw: Any) -> Any:
        self.reads += 1
        return await self.inner.range(*args, **kw)

    def watch(self, prefix: str, from_revision: int) -> Any:
        return GatedWatch(self.inner.watch(prefix, from_revision), self.gate)


class Env:
    def __init__(self, store: CountingStore, registry: Registry, cache: RBACCache) -> None:
        self.store, self.registry, self.cache = store, registry, cache
        self.authz = RBACAuthorizer(registry, cache)

    async def create(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        return await self.registry.create(info(plural), obj["metadata"].get("namespace"), obj)


async def open_env(path: Path, *, watch_buffer: int = 1000, start: bool = True) -> Env:
    inner = await SqliteStore.open(str(path), watch_buffer=watch_buffer)
    store = CountingStore(inner)
    registry = Registry(store)  # type: ignore[arg-type]
    await registry.start()
    cache = RBACCache(registry)
    if start:
        await cache.start()
    env = Env(store, registry, cache)
    for ns in ("default", "ns1", "ns2"):
        await env.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    return env


async def close_env(env: Env) -> None:
    await env.cache.stop()
    await env.registry.stop()
    await env.store.inner.close()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = await open_env(tmp_path / "store.db")
    for obj in bootstrap_cluster_roles() + controller_cluster_roles():
        await e.create("clusterroles", obj)
    for obj in bootstrap_cluster_role_bindings() + controller_cluster_role_bindings():
        await e.create("clusterrolebindings", obj)
    yield e
    await close_env(e)


def binding(name: str, ns: str | None, role: str, subjects: list[dict[str, Any]],
            role_kind: str = "ClusterRole") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **({"namespace": ns} if ns else {})}
    return {"apiVersion": f"{GROUP}/v1", "kind": "RoleBinding" if ns else "ClusterRoleBinding", "metadata": meta,
            "roleRef": {"apiGroup": GROUP, "kind": role_kind, "name": role}, "subjects": subjects}


def res(verb: str, resource: str, ns: str | None = None, name: str | None = None, group: str = "",
        sub: str = "") -> RequestInfo:
    return RequestInfo(path="/x", verb=verb, is_resource=True, group=group, version="v1", resource=resource,
                       namespace=ns, name=name, subresource=sub)


BOB = User("bob", "uid-bob", ("system:authenticated",))
SA = User("system:serviceaccount:ns1:reader", "uid-sa",
          ("system:serviceaccounts", "system:serviceaccounts:ns1", "system:authenticated"))


async def test_binding_is_honoured_at_once_and_its_removal_refused_at_once(env: Env) -> None:
    list_pods = res("list", "pods", "default")
    for _ in range(5):
        assert await env.authz.authorize(BOB, list_pods) == (False, "")
        await env.create("rolebindings", binding("bob-view", "default", "view", [{"kind": "User", "name": "bob"}]))
        reads = env.store.reads
        # No sleep: the decision waits for the watch to deliver the write made through this registry.
        allowed, reason = await env.authz.authorize(BOB, list_pods)
        assert allowed, reason
        assert reason == ('RBAC: allowed by RoleBinding "bob-view/default" of ClusterRole "view" to User "bob"'
                          ' in namespace "default"')
        assert env.store.reads == reads, "decided from the store, not the cache"
        await env.registry.delete(info("rolebindings"), "default", "bob-view", DeleteOptions())
        reads = env.store.reads
        assert await env.authz.authorize(BOB, list_pods) == (False, "")
        assert env.store.reads == reads


async def test_decisions_wait_for_the_watch_to_deliver_a_write_made_here(env: Env) -> None:
    """With the watch held back, a decision after a write waits for it instead of answering from the
    old view (and answers from the cache, not the store, once the watch delivers)."""
    list_pods = res("list", "pods", "ns2")
    env.cache.fresh_timeout = 60.0  # however slow the machine, the wait outlasts the pause below
    for create in (True, False):
        env.store.gate.clear()
        if create:
            await env.create("rolebindings", binding("bob-view", "ns2", "view", [{"kind": "User", "name": "bob"}]))
        else:
            await env.registry.delete(info("rolebindings"), "ns2", "bob-view", DeleteOptions())
        assert not env.cache.fresh()
        reads = env.store.reads
        decision = asyncio.create_task(env.authz.authorize(BOB, list_pods))
        await asyncio.sleep(0.05)
        assert not decision.done(), "answered from a view that has not seen the write"
        env.store.gate.set()
        assert (await decision)[0] is create
        assert env.store.reads == reads


async def test_service_account_bound_then_unbound_cluster_wide(env: Env) -> None:
    get_cm = res("get", "configmaps", "ns2", "c")
    crb = binding("sa-view", None, "view", [{"kind": "ServiceAccount", "name": "reader", "namespace": "ns1"}])
    await env.create("clusterrolebindings", crb)
    assert (await env.authz.authorize(SA, get_cm))[0]
    await env.registry.delete(info("clusterrolebindings"), None, "sa-view", DeleteOptions())
    assert not (await env.authz.authorize(SA, get_cm))[0]


async def test_role_edit_is_honoured_at_once(env: Env) -> None:
    role = {"apiVersion": f"{GROUP}/v1", "kind": "Role", "metadata": {"name": "pods", "namespace": "ns1"},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}
    await env.create("roles", role)
    await env.create("rolebindings", binding("bob-pods", "ns1", "pods", [{"kind": "User", "name": "bob"}], "Role"))
    assert (await env.authz.authorize(BOB, res("get", "pods", "ns1", "p")))[0]
    assert not (await env.authz.authorize(BOB, res("list", "pods", "ns1")))[0]

    def with_verbs(*verbs: str) -> Any:
        return lambda old: {**old, "rules": [{"verbs": list(verbs), "apiGroups": [""], "resources": ["pods"]}]}

    await env.registry.update(info("roles"), "ns1", "pods", with_verbs("get", "list"))
    assert (await env.authz.authorize(BOB, res("list", "pods", "ns1")))[0]
    await env.registry.update(info("roles"), "ns1", "pods", with_verbs("watch"))
    assert not (await env.authz.authorize(BOB, res("get", "pods", "ns1", "p")))[0]
    assert not (await env.authz.authorize(BOB, res("list", "pods", "ns1")))[0]
    await env.registry.delete(info("roles"), "ns1", "pods", DeleteOptions())
    assert not (await env.authz.authorize(BOB, res("watch", "pods", "ns1")))[0]


async def test_dropped_watch_relists_without_losing_a_binding(tmp_path: Path) -> None:
    # A 2-event watch buffer: a burst of bindings committed together overflows it and drops the watch.
    env = await open_env(tmp_path / "store.db", watch_buffer=2)
    try:
        await env.create("clusterroles", bootstrap_cluster_roles()[3])  # view
        users = [User(f"u{i}", "", ()) for i in range(12)]
        await env.create("clusterrolebindings", binding("u0", None, "view", [{"kind": "User", "name": "u0"}]))
        assert (await env.authz.authorize(users[0], res("list", "pods", "ns1")))[0]
        relists = env.cache.relists
        await asyncio.gather(*(env.create("clusterrolebindings", binding(
            u.name, None, "view", [{"kind": "User", "name": u.name}])) for u in users[1:]))
        for u in users:
            assert (await env.authz.authorize(u, res("list", "pods", "ns1")))[0], u.name
        assert env.cache.relists > relists, "the burst did not drop the watch: the test proves nothing"
        assert env.cache.fresh()
        # And the re-listed view keeps following: a delete after it is seen.
        await env.registry.delete(info("clusterrolebindings"), None, "u5", DeleteOptions())
        assert not (await env.authz.authorize(users[5], res("list", "pods", "ns1")))[0]
        assert (await env.authz.authorize(users[6], res("list", "pods", "ns1")))[0]
    finally:
        await close_env(env)


async def test_cache_does_not_read_the_store_per_decision(env: Env) -> None:
    await env.create("rolebindings", binding("bob-view", "default", "view", [{"kind": "User", "name": "bob"}]))
    assert await env.cache.wait_fresh()
    requests = [res("list", "pods", "default"), res("get", "configmaps", "default", "c"),
                res("create", "pods", "default"), res("get", "secrets", "ns1", "s"),
                RequestInfo(path="/healthz", verb="get"), RequestInfo(path="/metrics", verb="get")]
    reads = env.store.reads
    for _ in range(50):
        for ri in requests:
            await env.authz.authorize(BOB, ri)
            await env.authz.authorize(SA, ri)
    assert env.store.reads == reads
    # The reference path does read the store, so the counter would have seen it.
    await env.authz.authorize_from_store(BOB, requests[0])
    assert env.store.reads > reads


async def test_no_decision_from_a_cache_that_was_never_listed(tmp_path: Path) -> None:
    env = await open_env(tmp_path / "store.db", start=False)
    try:
        await env.create("clusterroles", bootstrap_cluster_roles()[3])
        await env.create("clusterrolebindings", binding("bob", None, "view", [{"kind": "User", "name": "bob"}]))
        assert not env.cache.synced and not env.cache.fresh()
        reads = env.store.reads
        assert (await env.authz.authorize(BOB, res("list", "pods", "ns1")))[0]  # from the store
        assert env.store.reads > reads
    finally:
        await close_env(env)


# ---- the cache against the store path over generated policies --------------------------------------------

# A small vocabulary, so that requests are often allowed, and often by several bindings (whose order
# then decides the reason).
NAMESPACES = ("ns1", "ns2")
names = st.sampled_from(["r1", "r2"])
rules = st.fixed_dictionaries(
    {"verbs": st.lists(st.sampled_from(["get", "list", "*"]), min_size=1, max_size=2),
     "apiGroups": st.lists(st.sampled_from(["", "", "apps", "*"]), min_size=1, max_size=2),
     "resources": st.lists(st.sampled_from(["pods", "pods/log", "*/log", "*", "configmaps"]), min_size=1, max_size=3)},
    optional={"resourceNames": st.lists(st.sampled_from(["a", "b"]), max_size=1),
              "nonResourceURLs": st.lists(st.sampled_from(["/healthz", "/api/*", "*"]), min_size=1, max_size=2)})
subjects = st.one_of(
    st.fixed_dictionaries({"kind": st.just("Group"), "name": st.sampled_from(["g1", "system:authenticated"])}),
    st.fixed_dictionaries({"kind": st.just("User"), "name": st.sampled_from(["alice", "bob"])}),
    st.fixed_dictionaries({"kind": st.just("ServiceAccount"), "name": st.sampled_from(["sa1", "sa2"])},
                          optional={"namespace": st.sampled_from(NAMESPACES)}),
    st.sampled_from([{"kind": "Other", "name": "alice"}, "not-a-subject"]))
role_refs = st.fixed_dictionaries({"kind": st.sampled_from(["Role", "ClusterRole", "ClusterRole"]),
                                   "name": st.sampled_from(["r1", "r2", "missing"])},
                                  optional={"apiGroup": st.sampled_from([GROUP, GROUP, "other"])})
scope = st.sampled_from([None, *NAMESPACES])
roles = st.tuples(scope, names, st.lists(rules, min_size=1, max_size=4))
bindings = st.tuples(scope, st.sampled_from(["b1", "b2", "b3", "b4"]), role_refs,
                     st.lists(subjects, min_size=1, max_size=3))
USERS = [User("alice", "", ("system:authenticated",)), User("bob", "", ("g1", "system:authenticated")),
         User("carol", "", ()),
         User("system:serviceaccount:ns1:sa1", "", ("system:serviceaccounts", "system:authenticated")),
         User("system:serviceaccount:ns2:sa2", "", ("system:serviceaccounts",)),
         User("system:serviceaccount:None:sa1", "", ())]
# Every user asks every one of these, for each generated policy.
REQUESTS = [res(verb, resource, ns, name, group, sub)
            for verb in ("get", "create") for resource in ("pods", "configmaps") for ns in (None, *NAMESPACES)
            for name in (None, "a") for group in ("", "apps") for sub in ("", "log")] + \
    [RequestInfo(path=path, verb=verb) for path in ("/healthz", "/api/v1", "/x") for verb in ("get", "post")]


def _key(plural: str, ns: str | None, name: str) -> str:
    return info(plural).key(ns, name)


async def _put(store: SqliteStore, key: str, obj: dict[str, Any]) -> Any:
    current = await store.get(key)
    if current is None:
        return await store.create(key, objects.dumps(obj))
    return await store.update(key, objects.dumps(obj), current.mod_revision)


async def _compare(policy: tuple[list[Any], list[Any], list[int]]) -> tuple[int, int]:
    role_list, binding_list, deletions = policy
    with tempfile.TemporaryDirectory() as d:
        env = await open_env(Path(d) / "store.db")
        try:
            written: list[tuple[str, str]] = []
            # Raw store writes (no validation, so odd shapes are covered too), told to the cache as
            # the registry tells it.
            for ns, name, rs in role_list:
                plural, kind = ("roles", "Role") if ns else ("clusterroles", "ClusterRole")
                meta = {"name": name, **({"namespace": ns} if ns else {})}
                key = _key(plural, ns, name)
                kv = await _put(env.store.inner, key,
                                {"apiVersion": f"{GROUP}/v1", "kind": kind, "metadata": meta, "rules": rs})
                env.cache.note_write(plural, key, kv.mod_revision, False)
                written.append((plural, key))
            for ns, name, ref, subs in binding_list:
                plural, kind = ("rolebindings", "RoleBinding") if ns else ("clusterrolebindings", "ClusterRoleBinding")
                meta = {"name": name, **({"namespace": ns} if ns else {})}
                key = _key(plural, ns, name)
                kv = await _put(env.store.inner, key, {"apiVersion": f"{GROUP}/v1", "kind": kind, "metadata": meta,
                                                       "roleRef": ref, "subjects": subs})
                env.cache.note_write(plural, key, kv.mod_revision, False)
                written.append((plural, key))
            for i in deletions:
                if written:
                    plural, key = written[i % len(written)]
                    current = await env.store.inner.get(key)
                    if current is not None:
                        gone = await env.store.inner.delete(key)
                        env.cache.note_write(plural, key, gone.mod_revision, True)
            assert await env.cache.wait_fresh(10)
            allowed = 0
            for user in USERS:
                for ri in REQUESTS:
                    decision = env.cache.decide(user, ri)
                    assert decision == await env.authz.authorize_from_store(user, ri), (user, ri)
                    allowed += decision[0]
            return allowed, len(USERS) * len(REQUESTS)
        finally:
            await close_env(env)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=st.tuples(st.lists(roles, min_size=3, max_size=8), st.lists(bindings, min_size=3, max_size=12),
                        st.lists(st.integers(0, 20), max_size=3)))
def test_cache_agrees_with_the_store_path(policy: Any) -> None:
    asyncio.run(_compare(policy))


# ---- end to end --------------------------------------------------------------------------------------------

def test_binding_through_the_server_counts_for_the_next_request(secured: LocalAPIServer) -> None:
    body = binding("frank-view", "default", "view", [{"apiGroup": GROUP, "kind": "User", "name": "frank"}])
    path = f"{RBAC}/namespaces/default/rolebindings"
    with admin(secured) as a, as_user(secured, "frank") as frank:
        for _ in range(3):
            assert frank.get("/api/v1/namespaces/default/configmaps").status_code == 403
            ok(a.post(path, json=body), 201)
            assert frank.get("/api/v1/namespaces/default/configmaps").status_code == 200
            ok(a.delete(f"{path}/frank-view"), 200)
            assert frank.get("/api/v1/namespaces/default/configmaps").status_code == 403
