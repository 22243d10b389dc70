"""APIClient against a real API server (CRUD, errors, paging, watch, subresources) and against a
small stand-in server for what a healthy API server rarely does (429, non-Status errors)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from minikube_py.api.resources import lookup
from minikube_py.client.rest import APIClient, APIConnectionError, ApiStatusError, resource
from tests.apiserver.conftest import LocalAPIServer

from .conftest import configmap


def test_resource_names() -> None:
    deployments = lookup("apps", "v1", "deployments")
    assert resource("deployments.apps") is deployments
    assert resource("apps/v1/deployments") is deployments
    assert resource("deploy") is deployments
    assert resource(deployments) is deployments  # type: ignore[arg-type]
    assert resource("pods") is lookup("", "v1", "pods")
    assert resource("v1/pods") is lookup("", "v1", "pods")
    assert resource("Pod") is lookup("", "v1", "pods")
    assert resource("leases").group == "coordination.k8s.io"
    for bad in ("", "widgets", "apps/v2/deployments", "a/b/c/d", "pods.apps"):
        with pytest.raises(ValueError):
            resource(bad)


async def test_crud_round_trip(client: APIClient, ns: str) -> None:
    created = await client.create("configmaps", configmap("cfg", ns, a="1"))
    assert created["metadata"]["namespace"] == ns and created["metadata"]["uid"]
    got = await client.get("configmaps", "cfg", ns)
    assert got["data"] == {"a": "1"}
    assert got["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]

    got["data"]["b"] = "2"
    updated = await client.update("configmaps", got)
    assert updated["data"] == {"a": "1", "b": "2"}
    assert int(updated["metadata"]["resourceVersion"]) > int(got["metadata"]["resourceVersion"])

    patched = await client.patch("configmaps", "cfg", {"data": {"a": None, "c": "3"}}, ns)
    assert patched["data"] == {"b": "2", "c": "3"}
    ops = [{"op": "replace", "path": "/data/b", "value": "20"}]
    patched = await client.patch("configmaps", "cfg", ops, ns, patch_type="json")
    assert patched["data"] == {"b": "20", "c": "3"}
    applied = await client.patch("configmaps", "cfg", configmap("cfg", ns, b="20", c="3", d="4"), ns,
                                 patch_type="apply", field_manager="client-test", force=True)
    assert applied["data"]["d"] == "4"

    await client.delete("configmaps", "cfg", ns)
    assert await client.get_or_none("configmaps", "cfg", ns) is None


async def test_errors_carry_the_status(client: APIClient, ns: str) -> None:
    with pytest.raises(ApiStatusError) as info:
        await client.get("configmaps", "missing", ns)
    e = info.value
    assert (e.code, e.reason) == (404, "NotFound")
    assert "missing" in e.message and e.status["kind"] == "Status"

    cm = await client.create("configmaps", configmap("once", ns))
    with pytest.raises(ApiStatusError) as info:
        await client.create("configmaps", configmap("once", ns))
    assert (info.value.code, info.value.reason) == (409, "AlreadyExists")

    # A stale resourceVersion makes the PUT a conflict: optimistic concurrency works end to end.
    await client.update("configmaps", {**cm, "data": {"v": "1"}})
    with pytest.raises(ApiStatusError) as info:
        await client.update("configmaps", {**cm, "data": {"v": "2"}})
    assert (info.value.code, info.value.reason) == (409, "Conflict")

    with pytest.raises(ApiStatusError) as info:
        await client.delete("configmaps", "once", ns, preconditions={"resourceVersion": "1"})
    assert info.value.code == 409

    with pytest.raises(ValueError, match="namespaced"):
        await client.create("configmaps", configmap("no-namespace"))
    with pytest.raises(ValueError, match="patch_type"):
        await client.patch("configmaps", "once", {}, ns, patch_type="yaml")
    with pytest.raises(ValueError, match="invalid name"):
        await client.get("configmaps", "../etc", ns)


async def test_list_all_pages(client: APIClient, ns: str) -> None:
    for i in range(7):
        await client.create("configmaps", configmap(f"page-{i}", ns, i=str(i)), field_manager="t")
    first = await client.list("configmaps", ns, limit=3)
    assert len(first["items"]) == 3 and first["metadata"].get("continue")

    items, rv = await client.list_all("configmaps", ns, page_size=3)
    names = sorted(i["metadata"]["name"] for i in items if i["metadata"]["name"].startswith("page-"))
    assert names == [f"page-{i}" for i in range(7)]
    assert all(i["kind"] == "ConfigMap" and i["apiVersion"] == "v1" for i in items)
    assert int(rv) > 0

    labelled, _ = await client.list_all("configmaps", ns, field_selector="metadata.name=page-4")
    assert [i["metadata"]["name"] for i in labelled] == ["page-4"]


async def test_watch_from_a_list(client: APIClient, ns: str) -> None:
    _, rv = await client.list_all("configmaps", ns)
    seen: list[tuple[str, str, dict[str, Any] | None]] = []

    async def consume() -> None:
        async for kind, obj in client.watch("configmaps", ns, resource_version=rv, timeout_seconds=20):
            if kind == "BOOKMARK":
                continue
            seen.append((kind, obj["metadata"]["name"], obj.get("data")))
            if kind == "DELETED":
                return

    task = asyncio.create_task(consume())
    await client.create("configmaps", configmap("w", ns, v="1"))
    await client.patch("configmaps", "w", {"data": {"v": "2"}}, ns)
    await client.delete("configmaps", "w", ns)
    await asyncio.wait_for(task, 15)
    assert seen == [("ADDED", "w", {"v": "1"}), ("MODIFIED", "w", {"v": "2"}), ("DELETED", "w", {"v": "2"})]


async def test_watch_ends_when_the_server_ends_it(client: APIClient, ns: str) -> None:
    _, rv = await client.list_all("configmaps", ns)
    events = [e async for e in client.watch("configmaps", ns, resource_version=rv, timeout_seconds=1)]
    assert all(kind == "BOOKMARK" for kind, _ in events)


async def test_watch_of_a_future_revision_is_an_error(client: APIClient, ns: str) -> None:
    with pytest.raises(ApiStatusError) as info:
        async for _ in client.watch("configmaps", ns, resource_version="999999999", timeout_seconds=5):
            pass
    assert info.value.code == 504


async def test_binding_subresource_and_status(client: APIClient, ns: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": ns},
           "spec": {"containers": [{"name": "c", "image": "demo/web"}]}}
    await client.create("pods", pod)
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p", "namespace": ns},
               "target": {"apiVersion": "v1", "kind": "Node", "name": "worker1"}}
    await client.create("pods", binding, ns, subresource_of="p", subresource="binding")
    got = await client.get("pods", "p", ns)
    assert got["spec"]["nodeName"] == "worker1"

    got["status"] = {**got.get("status", {}), "phase": "Running"}
    updated = await client.update_status("pods", got)
    assert updated["status"]["phase"] == "Running"


async def test_from_kubeconfig(apiserver: LocalAPIServer) -> None:
    async with APIClient.from_kubeconfig(apiserver.kubeconfig, user_agent="client-test/1") as c:
        ns = await c.get("namespaces", "kube-system")
    assert ns["metadata"]["name"] == "kube-system"


async def test_rate_limit_spaces_requests(apiserver: LocalAPIServer) -> None:
    async with apiserver.api_client(qps=20, burst=1) as c:
        start = time.monotonic()
        for _ in range(5):
            await c.get("namespaces", "default")
        elapsed = time.monotonic() - start
    # Four waits of 1/20 s at least: a lower bound only, which a slow machine cannot break.
    assert elapsed >= 0.19


# ---- a stand-in server for the unhappy paths --------------------------------------------------------

@pytest.fixture
async def standin() -> AsyncIterator[tuple[str, list[str]]]:
    hits: list[str] = []
    state = {"throttled": 0}

    async def throttled(request: web.Request) -> web.Response:
        hits.append(request.path)
        if state["throttled"] < 2:
            state["throttled"] += 1
            return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 429,
                                      "reason": "TooManyRequests", "message": "slow down"},
                                     status=429, headers={"Retry-After": "0"})
        return web.json_response({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "x"}})

    async def broken(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(status=502, text="<html>bad gateway</html>")

    async def bad_watch(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b'{"type":"ADDED","object":{"metadata":{"name":"a"}}}\n')
        await resp.write(b'{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","code":410,'
                         b'"reason":"Expired","message":"too old resource version"}}\n')
        return resp

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/x", throttled)
    app.router.add_get("/api/v1/namespaces/y", broken)
    app.router.add_get("/api/v1/namespaces/w/configmaps", bad_watch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", hits
    finally:
        await runner.cleanup()


async def test_retries_429_then_succeeds(standin: tuple[str, list[str]]) -> None:
    url, hits = standin
    async with APIClient(url) as c:
        got = await c.get("namespaces", "x")
    assert got["metadata"]["name"] == "x" and len(hits) == 3


async def test_non_status_error_body_is_synthesized(standin: tuple[str, list[str]]) -> None:
    url, hits = standin
    async with APIClient(url) as c:
        with pytest.raises(ApiStatusError) as info:
            await c.get("namespaces", "y")
    assert info.value.code == 502 and info.value.status["kind"] == "Status"
    assert "bad gateway" in info.value.message
    assert len(hits) == 1  # a 502 without Retry-After is not retried


async def test_watch_error_event_raises_410(standin: tuple[str, list[str]]) -> None:
    url, _ = standin
    got: list[str] = []
    async with APIClient(url) as c:
        with pytest.raises(ApiStatusError) as info:
            async for kind, _obj in c.watch("configmaps", "w"):
                got.append(kind)
    assert got == ["ADDED"] and info.value.code == 410 and info.value.reason == "Expired"


async def test_unreachable_server_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        async with APIClient(f"http://127.0.0.1:{port}") as c:
            with pytest.raises(APIConnectionError):
                await c.create("namespaces", {"metadata": {"name": "n"}})
    assert issubclass(APIConnectionError, OSError)  # callers may catch it as the OSError it is
