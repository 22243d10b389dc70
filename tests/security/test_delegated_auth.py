"""Delegated authentication and authorization without an API server: the kubelet's request -> attributes
mapping, the SubjectAccessReview spec, the caches, the always-allowed paths and the middleware's answers
(with stand-ins for the TokenReview and SubjectAccessReview calls)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from minikube_py.client.delegated_auth import (
    ANONYMOUS,
    USER,
    Attributes,
    AuthenticationError,
    DelegatedAuth,
    TokenReviewer,
    TTLCache,
    UserInfo,
    WebhookAuthorizer,
    auth_flag_values,
    parse_always_allow_paths,
    user_from_peercert,
)
from minikube_py.kubelet.server import request_attributes

BOB = UserInfo("bob", "uid-bob", ("devs", "system:authenticated"))


@pytest.mark.parametrize("method,path,verb,sub", [
    ("GET", "/containerLogs/default/p/c", "get", "proxy"),
    ("GET", "/exec/default/p/c", "get", "proxy"),  # a WebSocket upgrade is a GET, as in Kubernetes
    ("POST", "/exec/default/p/c", "create", "proxy"),
    ("POST", "/run/default/p/c", "create", "proxy"),
    ("POST", "/attach/default/p/c", "create", "proxy"),
    ("POST", "/portForward/default/p", "create", "proxy"),
    ("GET", "/pods", "get", "proxy"),
    ("GET", "/healthz", "get", "proxy"),
    ("GET", "/metrics", "get", "metrics"),
    ("GET", "/metrics/cadvisor", "get", "metrics"),
    ("GET", "/metricsfoo", "get", "proxy"),  # a prefix that is not a path segment is not a subpath
    ("GET", "/stats/summary", "get", "stats"),
    ("GET", "/logs/syslog", "get", "log"),
    ("GET", "/logs", "get", "log"),
    ("GET", "/spec/", "get", "spec"),
    ("POST", "/checkpoint/default/p/c", "create", "checkpoint"),
    ("PUT", "/pods", "update", "proxy"),
    ("PATCH", "/pods", "patch", "proxy"),
    ("DELETE", "/pods", "delete", "proxy"),
    ("HEAD", "/pods", "", "proxy"),  # no verb: nothing grants it
    ("GET", "/stats/../exec/default/p/c", "get", "proxy"),  # judged by where it really leads
])
def test_kubelet_request_attributes(method: str, path: str, verb: str, sub: str) -> None:
    attrs = request_attributes(method, path, "node1", BOB)
    assert (attrs.verb, attrs.resource, attrs.subresource, attrs.name) == (verb, "nodes", sub, "node1")
    assert attrs.namespace == "" and attrs.group == "" and attrs.version == "v1" and attrs.path == path
    assert attrs.resource_request


def test_review_spec_resource_and_non_resource() -> None:
    user = UserInfo("alice", "u1", ("g", "system:authenticated"), {"scopes": ("a", "b")})
    spec = request_attributes("GET", "/pods", "node1", user).review_spec()
    assert spec == {"user": "alice", "uid": "u1", "groups": ["g", "system:authenticated"],
                    "extra": {"scopes": ["a", "b"]},
                    "resourceAttributes": {"verb": "get", "version": "v1", "resource": "nodes",
                                           "subresource": "proxy", "name": "node1"}}
    spec = Attributes(user=ANONYMOUS, verb="get", path="/metrics").review_spec()
    assert spec == {"user": "system:anonymous", "groups": ["system:unauthenticated"],
                    "nonResourceAttributes": {"path": "/metrics", "verb": "get"}}


def test_user_from_peercert() -> None:
    peer = {"subject": ((("organizationName", "system:masters"),), (("organizationName", "ops"),),
                        (("commonName", "kube-apiserver-kubelet-client"),))}
    user = user_from_peercert(peer)
    assert user == UserInfo("kube-apiserver-kubelet-client", "", ("system:masters", "ops", "system:authenticated"))
    assert user_from_peercert(None) is None
    assert user_from_peercert({}) is None
    assert user_from_peercert({"subject": ((("organizationName", "x"),),)}) is None  # no CN, no user


def test_always_allow_paths() -> None:
    assert parse_always_allow_paths("/healthz, /readyz,/livez,") == ("/healthz", "/readyz", "/livez")
    auth = DelegatedAuth(authorizer=_Deny(), always_allow_paths=parse_always_allow_paths("/healthz,/debug/*"))
    assert auth.always_allowed("/healthz") and auth.always_allowed("/debug/pprof/heap")
    assert not auth.always_allowed("/healthz/ping") and not auth.always_allowed("/metrics")
    with pytest.raises(ValueError, match="must start with /"):
        parse_always_allow_paths("healthz")
    with pytest.raises(ValueError, match=r"\* is only allowed at the end"):
        parse_always_allow_paths("/a/*/b")
    with pytest.raises(ValueError) as e:
        auth_flag_values(Path("/nonexistent/ca.crt"), "/healthz")
    assert str(e.value) == "--client-ca-file /nonexistent/ca.crt: no such file"


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_ttl_cache_expires_evicts_and_shares_one_computation() -> None:
    clock = _Clock()
    cache = TTLCache(max_entries=2, clock=clock)
    calls = 0
    gate = asyncio.Event()

    async def compute() -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return "v"

    waiters = [asyncio.create_task(cache.get_or_compute("k", compute, lambda v: 10.0)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiters) == ["v"] * 5
    assert calls == 1  # five requests at once, one question to the API
    assert await cache.get_or_compute("k", compute, lambda v: 10.0) == "v" and calls == 1
    clock.now += 10.0
    assert await cache.get_or_compute("k", compute, lambda v: 10.0) == "v" and calls == 2
    cache.put("a", 1, 10.0)
    cache.put("b", 2, 10.0)
    assert len(cache) == 2 and cache.get("k") == (False, None)  # least recently used went first
    cache.put("zero", 3, 0.0)
    assert cache.get("zero") == (False, None)  # a TTL of 0 caches nothing


async def test_errors_are_not_cached() -> None:
    cache = TTLCache()
    calls = 0

    async def failing() -> str:
        nonlocal calls
        calls += 1
        raise AuthenticationError("API down")

    for _ in range(2):
        with pytest.raises(AuthenticationError):
            await cache.get_or_compute("k", failing, lambda v: 60.0)
    assert calls == 2


class _FakeAPI:
    """Answers TokenReviews and SubjectAccessReviews as the API server would, counting them."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.tokens = {"bob-token": {"username": "bob", "uid": "uid-bob", "groups": ["devs", "system:authenticated"]}}
        self.allowed: set[tuple[str, str]] = {("bob", "/metrics")}
        self.down = False

    async def request(self, method: str, path: str, *, body: Any = None, **kw: Any) -> Any:
        self.calls.append(path.rsplit("/", 1)[-1])
        if self.down:
            from minikube_py.client.rest import APIConnectionError

            raise APIConnectionError("connection refused")
        if path.endswith("tokenreviews"):
            user = self.tokens.get(body["spec"]["token"])
            return {"status": {"authenticated": True, "user": user} if user else {"authenticated": False}}
        spec = body["spec"]
        target = (spec.get("nonResourceAttributes") or {}).get("path", "")
        return {"status": {"allowed": (spec["user"], target) in self.allowed}}


class _Deny:
    async def authorize(self, attrs: Attributes) -> tuple[bool, str]:
        return False, ""


async def _serve(auth: DelegatedAuth) -> tuple[web.AppRunner, str]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello {request[USER].name}" if USER in request else "hello")

    app = web.Application(middlewares=[auth.middleware()])
    app.router.add_get("/metrics", hello)
    app.router.add_get("/healthz", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def test_middleware_answers_and_caches() -> None:
    api = _FakeAPI()
    auth = DelegatedAuth(authorizer=WebhookAuthorizer(api), token_reviewer=TokenReviewer(api),  # type: ignore[arg-type]
                         always_allow_paths=("/healthz",))
    runner, url = await _serve(auth)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/healthz") as r:
                assert r.status == 200 and api.calls == []  # health needs nothing, asks nothing
            async with http.get(url + "/metrics") as r:
                assert r.status == 401 and (await r.json())["message"] == "Unauthorized" and api.calls == []
            async with http.get(url + "/metrics", headers={"Authorization": "Basic Ym9iOng="}) as r:
                assert r.status == 401  # credentials that cannot be checked are not anonymous
            for _ in range(3):
                async with http.get(url + "/metrics", headers={"Authorization": "Bearer bob-token"}) as r:
                    assert r.status == 200 and await r.text() == "hello bob"
            assert api.calls == ["tokenreviews", "subjectaccessreviews"]  # then both from the caches
            api.calls.clear()
            for _ in range(2):
                async with http.get(url + "/metrics", headers={"Authorization": "Bearer forged"}) as r:
                    assert r.status == 401
            assert api.calls == ["tokenreviews"]  # a rejection is cached too (briefly)
            api.tokens["carol-token"] = {"username": "carol", "groups": []}
            async with http.get(url + "/metrics", headers={"Authorization": "Bearer carol-token"}) as r:
                body = await r.json()
                assert r.status == 403 and body["reason"] == "Forbidden" and body["code"] == 403
                assert body["message"] == 'forbidden: User "carol" cannot get path "/metrics"'
            api.down = True
            api.tokens["dave-token"] = {"username": "dave", "groups": []}
            async with http.get(url + "/metrics", headers={"Authorization": "Bearer dave-token"}) as r:
                assert r.status == 401  # the API cannot vouch for the token: not let in
    finally:
        await runner.cleanup()


async def test_anonymous_when_enabled_is_authorized_as_system_anonymous() -> None:
    api = _FakeAPI()
    api.allowed.add(("system:anonymous", "/metrics"))
    auth = DelegatedAuth(authorizer=WebhookAuthorizer(api), anonymous=True)  # type: ignore[arg-type]
    runner, url = await _serve(auth)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/metrics") as r:
                assert r.status == 200 and await r.text() == "hello system:anonymous"
    finally:
        await runner.cleanup()
