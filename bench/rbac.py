"""RBAC authorizer benchmark: a non-admin decision from the watch-fed cache vs from store reads.

    .venv/bin/python bench/rbac.py [--seconds 1] [--rounds 3] [--extra-bindings 40] [--no-http] [--json]

In one process, on a fresh SQLite store in a temporary directory: the registry, the bootstrap policy
as the API server creates it (the bootstrap and ``system:controller:*`` ClusterRoles and
ClusterRoleBindings), a ServiceAccount ``default/reader`` bound to ``view`` by a RoleBinding, and
``--extra-bindings`` more bindings for other users (half ClusterRoleBindings, half RoleBindings in
``default``), so that the store path lists about as many bindings as a running cluster holds. Then,
for each request below, the same ``RBACAuthorizer`` decides it from its cache (``authorize``, the
default path, freshness check included) and from the store (``authorize_from_store``, the path every
decision took before), taking turns for ``--rounds`` rounds of ``--seconds`` each; the best round of
each counts. The ratio is store / cache: how many times cheaper a decision got. Both sides check that
they gave the same answer. Then the same comparison inside whole HTTP requests (see ``run_http``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import aiohttp
from _util import fmt, positive_float, print_table

from minikube_py.api.resources import lookup
from minikube_py.apiserver.rbac import (
    GROUP,
    RBACAuthorizer,
    bootstrap_cluster_role_bindings,
    bootstrap_cluster_roles,
    controller_cluster_role_bindings,
    controller_cluster_roles,
)
from minikube_py.apiserver.rbac_cache import RBACCache
from minikube_py.apiserver.registry import Registry
from minikube_py.apiserver.requests import RequestInfo
from minikube_py.apiserver.server import APIServer, Config, User
from minikube_py.store.sqlite import SqliteStore

SA = User("system:serviceaccount:default:reader", "uid-reader",
          ("system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"))
SCHEDULER = User("system:kube-scheduler", "", ("system:authenticated",))


def _res(verb: str, resource: str, ns: str | None = None, name: str | None = None) -> RequestInfo:
    return RequestInfo(path="/", verb=verb, is_resource=True, version="v1", resource=resource, namespace=ns,
                       name=name)


CASES: list[tuple[str, User, RequestInfo]] = [
    ("SA bound to view: list pods (allowed)", SA, _res("list", "pods", "default")),
    ("SA bound to view: get configmap (allowed)", SA, _res("get", "configmaps", "default", "c")),
    ("SA bound to view: create pod (denied)", SA, _res("create", "pods", "default")),
    ("scheduler: list nodes (allowed)", SCHEDULER, _res("list", "nodes")),
]


def _info(plural: str) -> Any:
    info = lookup(GROUP, "v1", plural) or lookup("", "v1", plural)
    assert info is not None
    return info


def _binding(name: str, ns: str | None, role: str, subject: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1", "kind": "RoleBinding" if ns else "ClusterRoleBinding",
            "metadata": {"name": name, **({"namespace": ns} if ns else {})},
            "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role}, "subjects": [subject]}


async def _populate(registry: Registry, extra: int) -> int:
    async def create(plural: str, obj: dict[str, Any]) -> None:
        await registry.create(_info(plural), obj["metadata"].get("namespace"), obj)

    await create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
    for obj in bootstrap_cluster_roles() + controller_cluster_roles():
        await create("clusterroles", obj)
    crbs = bootstrap_cluster_role_bindings() + controller_cluster_role_bindings()
    for obj in crbs:
        await create("clusterrolebindings", obj)
    await create("rolebindings", _binding("reader-view", "default", "view",
                                          {"kind": "ServiceAccount", "name": "reader", "namespace": "default"}))
    for i in range(extra):
        ns = "default" if i % 2 else None
        await create("rolebindings" if ns else "clusterrolebindings",
                     _binding(f"extra-{i}", ns, "edit", {"kind": "User", "name": f"user-{i}"}))
    return len(crbs) + 1 + extra


async def _time(fn: Any, user: User, ri: RequestInfo, seconds: float) -> tuple[float, tuple[bool, str]]:
    """Microseconds per decision over about ``seconds`` (batches of 50 between clock reads)."""
    n, answer = 0, await fn(user, ri)
    t0 = time.perf_counter()
    stop = t0 + seconds
    while time.perf_counter() < stop:
        for _ in range(50):
            await fn(user, ri)
        n += 50
    return (time.perf_counter() - t0) / n * 1e6, answer


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        store = await SqliteStore.open(str(Path(tmp) / "store.db"))
        registry = Registry(store)
        await registry.start()
        cache = RBACCache(registry)
        await cache.start()
        authz = RBACAuthorizer(registry, cache)
        try:
            bindings = await _populate(registry, args.extra_bindings)
            assert await cache.wait_fresh(30)
            best: dict[str, dict[str, float]] = {name: {"store": float("inf"), "cache": float("inf")}
                                                 for name, _, _ in CASES}
            for _ in range(args.rounds):
                for name, user, ri in CASES:
                    store_us, store_answer = await _time(authz.authorize_from_store, user, ri, args.seconds)
                    cache_us, cache_answer = await _time(authz.authorize, user, ri, args.seconds)
                    if store_answer != cache_answer:
                        raise SystemExit(f"{name}: the cache answered {cache_answer}, the store {store_answer}")
                    best[name]["store"] = min(best[name]["store"], store_us)
                    best[name]["cache"] = min(best[name]["cache"], cache_us)
        finally:
            await cache.stop()
            await registry.stop()
            await store.close()
    return {"bindings": bindings, "cases": best, "load_before": load_before, "load_after": os.getloadavg()}


async def run_http(args: argparse.Namespace) -> dict[str, Any]:
    """The same decision inside whole requests: an in-process API server (plain HTTP on loopback, token
    authentication, Node,RBAC) and a keep-alive client at concurrency 1; GET of a ConfigMap by a token
    user bound to ``view``, with the server's RBAC authorizer using its cache, then (``cache`` set to
    None) the store path, taking turns. Client and server share this process: the figure is the whole
    round trip, and the difference between the two sides is the authorizer's."""
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tokens = Path(tmp) / "tokens.csv"
        tokens.write_text('admin-token,admin,1,"system:masters"\nreader-token,reader,2\n')
        store = await SqliteStore.open(str(Path(tmp) / "store.db"))
        srv = APIServer(Config(store_url="sqlite://", port=0, token_file=tokens), store)
        await srv.start()
        rbac = next(a for a in srv.authorizer.authorizers if isinstance(a, RBACAuthorizer))  # type: ignore[attr-defined]
        cache = rbac.cache
        base = f"http://127.0.0.1:{srv.port}"
        try:
            await srv._warm  # the OpenAPI warm-up runs in a thread at start: not during the measurement
            async with aiohttp.ClientSession(headers={"Authorization": "Bearer admin-token"}) as admin:
                for i in range(args.extra_bindings):
                    ns = "default" if i % 2 else None
                    path = "namespaces/default/rolebindings" if ns else "clusterrolebindings"
                    async with admin.post(f"{base}/apis/{GROUP}/v1/{path}", json=_binding(
                            f"extra-{i}", ns, "edit", {"kind": "User", "name": f"user-{i}"})) as r:
                        assert r.status == 201, await r.text()
                async with admin.post(f"{base}/apis/{GROUP}/v1/namespaces/default/rolebindings", json=_binding(
                        "reader-view", "default", "view", {"kind": "User", "name": "reader"})) as r:
                    assert r.status == 201, await r.text()
                async with admin.post(f"{base}/api/v1/namespaces/default/configmaps", json={
                        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}}) as r:
                    assert r.status == 201, await r.text()
            best = {"store": float("inf"), "cache": float("inf")}
            url = f"{base}/api/v1/namespaces/default/configmaps/c"
            async with aiohttp.ClientSession(headers={"Authorization": "Bearer reader-token"}) as reader:
                for _ in range(args.rounds):
                    for side in ("store", "cache"):
                        rbac.cache = cache if side == "cache" else None
                        n = 0
                        t0 = time.perf_counter()
                        while time.perf_counter() < t0 + args.seconds:
                            async with reader.get(url) as r:
                                assert r.status == 200, await r.text()
                                await r.read()
                            n += 1
                        best[side] = min(best[side], (time.perf_counter() - t0) / n * 1e6)
        finally:
            rbac.cache = cache
            with contextlib.suppress(Exception):
                await srv.stop()
            await store.close()
    return {"http_get_configmap_us": best, "load_before": load_before, "load_after": os.getloadavg()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=positive_float, default=1.0, help="per measurement (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="turns each side takes (default 3)")
    p.add_argument("--extra-bindings", type=int, default=40,
                   help="bindings for other users on top of the bootstrap policy (default 40)")
    p.add_argument("--no-http", action="store_true", help="skip the end-to-end HTTP comparison")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args()
    if args.rounds < 1 or args.extra_bindings < 0:
        p.error("--rounds must be >= 1 and --extra-bindings >= 0")
    out = asyncio.run(run(args))
    if not args.no_http:
        out["http"] = asyncio.run(run_http(args))
    if args.json:
        print(json.dumps(out, indent=2))
        return
    rows = [[name, fmt(v["store"], 1), fmt(v["cache"], 1), f"{v['store'] / v['cache']:.0f}x"]
            for name, v in out["cases"].items()]
    print_table(f"RBAC decision cost, {out['bindings']} bindings in the store (best of {args.rounds} rounds)",
                ["request", "store path µs", "cache µs", "ratio"], rows)
    before, after = (" ".join(f"{x:.2f}" for x in out[k]) for k in ("load_before", "load_after"))
    print(f"load average before {before}, after {after}\n")
    if "http" in out:
        h = out["http"]["http_get_configmap_us"]
        print_table("Whole request, in-process API server over HTTP, c=1 (best round)",
                    ["request", "store path µs", "cache µs", "ratio"],
                    [["token user bound to view: GET configmap", fmt(h["store"], 0), fmt(h["cache"], 0),
                      f"{h['store'] / h['cache']:.2f}x"]])
        before, after = (" ".join(f"{x:.2f}" for x in out["http"][k]) for k in ("load_before", "load_after"))
        print(f"load average before {before}, after {after}")


if __name__ == "__main__":
    main()
