"""Watch semantics over raw HTTP, as client-go's reflector relies on them: the initial state for
rv=0/unset, resuming from a list's resourceVersion, bookmarks and timeoutSeconds, 410 Expired after
compaction, and 504 ResourceVersionTooLarge for a revision that does not exist yet."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from minikube_py.store import open_store

from .conftest import LocalAPIServer, start_apiserver, stop_apiserver

# A watch that should have ended (or sent something) by itself fails the test instead of hanging it.
TIMEOUT = 15.0


def http_client(server: LocalAPIServer) -> httpx.Client:
    return server.http_client(TIMEOUT)


@pytest.fixture
def http(apiserver: LocalAPIServer) -> Iterator[httpx.Client]:
    with http_client(apiserver) as c:
        yield c


def make_namespace(http: httpx.Client) -> str:
    name = f"watch-{uuid.uuid4().hex[:8]}"
    r = http.post("/api/v1/namespaces", json={"metadata": {"name": name}})
    assert r.status_code == 201, r.text
    return name


@pytest.fixture
def ns(http: httpx.Client) -> str:
    return make_namespace(http)


def cm_path(ns: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/configmaps" + (f"/{name}" if name else "")


def create_cm(http: httpx.Client, ns: str, name: str, **data: str) -> dict[str, Any]:
    r = http.post(cm_path(ns), json={"metadata": {"name": name}, "data": data})
    assert r.status_code == 201, r.text
    return r.json()


def list_rv(http: httpx.Client, ns: str) -> str:
    r = http.get(cm_path(ns))
    assert r.status_code == 200, r.text
    return r.json()["metadata"]["resourceVersion"]


def events_of(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The events of an open watch stream, one at a time, until the server ends the stream."""
    assert response.status_code == 200, response.read()
    assert response.headers["content-type"].startswith("application/json")
    for line in response.iter_lines():
        if line:
            yield json.loads(line)


def take(events: Iterator[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    out = list(itertools.islice(events, count))
    assert len(out) == count, f"the stream ended after {len(out)} of {count} events: {out}"
    return out


@pytest.mark.parametrize("rv", ["0", None], ids=["rv-0", "rv-unset"])
def test_initial_state_comes_first_as_added(http: httpx.Client, ns: str, rv: str | None) -> None:
    for name in ("a", "b", "c"):
        create_cm(http, ns, name)
    params = {"watch": "1", "timeoutSeconds": "10"}
    if rv is not None:
        params["resourceVersion"] = rv
    with http.stream("GET", cm_path(ns), params=params) as resp:
        events = events_of(resp)
        initial = take(events, 3)
        create_cm(http, ns, "d")
        (live,) = take(events, 1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in initial] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("ADDED", "c"),
    ]
    assert all(e["object"]["kind"] == "ConfigMap" and e["object"]["apiVersion"] == "v1" for e in initial)
    assert (live["type"], live["object"]["metadata"]["name"]) == ("ADDED", "d")
    assert int(live["object"]["metadata"]["resourceVersion"]) > max(
        int(e["object"]["metadata"]["resourceVersion"]) for e in initial
    )


def test_resume_from_list_resource_version(http: httpx.Client, ns: str) -> None:
    create_cm(http, ns, "old")
    rv = list_rv(http, ns)
    create_cm(http, ns, "x", v="1")
    r = http.patch(
        cm_path(ns, "x"), json={"data": {"v": "2"}}, headers={"Content-Type": "application/merge-patch+json"}
    )
    assert r.status_code == 200, r.text
    assert http.delete(cm_path(ns, "x")).status_code == 200
    with http.stream(
        "GET", cm_path(ns), params={"watch": "true", "resourceVersion": rv, "timeoutSeconds": "10"}
    ) as resp:
        events = take(events_of(resp), 3)
    assert [(e["type"], e["object"]["metadata"]["name"], e["object"]["data"]["v"]) for e in events] == [
        ("ADDED", "x", "1"),
        ("MODIFIED", "x", "2"),
        ("DELETED", "x", "2"),
    ]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert int(rv) < rvs[0] < rvs[1] < rvs[2]


def test_watch_with_selectors_sees_only_matching_objects(http: httpx.Client, ns: str) -> None:
    rv = list_rv(http, ns)
    http.post(cm_path(ns), json={"metadata": {"name": "no", "labels": {"app": "other"}}})
    http.post(cm_path(ns), json={"metadata": {"name": "yes", "labels": {"app": "web"}}})
    with http.stream(
        "GET",
        cm_path(ns),
        params={"watch": "1", "resourceVersion": rv, "labelSelector": "app=web", "timeoutSeconds": "1"},
    ) as resp:
        events = list(events_of(resp))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "yes")]


def test_timeout_seconds_ends_the_stream_with_bookmarks_allowed(http: httpx.Client, ns: str) -> None:
    rv = list_rv(http, ns)
    create_cm(http, ns, "one")
    with http.stream(
        "GET",
        cm_path(ns),
        params={"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true", "timeoutSeconds": "1"},
    ) as resp:
        events = list(events_of(resp))  # returns only because the server closes the stream
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "one"
    for bookmark in events[1:]:
        assert bookmark["type"] == "BOOKMARK"
        assert bookmark["object"]["kind"] == "ConfigMap"
        assert set(bookmark["object"]["metadata"]) <= {"resourceVersion", "annotations"}
    # The connection is reusable afterwards: the stream ended cleanly.
    assert http.get(cm_path(ns, "one")).status_code == 200


def test_watch_list_ends_initial_events_with_a_bookmark(http: httpx.Client, ns: str) -> None:
    create_cm(http, ns, "a")
    create_cm(http, ns, "b")
    with http.stream(
        "GET",
        cm_path(ns),
        params={
            "watch": "1",
            "sendInitialEvents": "true",
            "allowWatchBookmarks": "true",
            "resourceVersionMatch": "NotOlderThan",
            "resourceVersion": "",
            "timeoutSeconds": "10",
        },
    ) as resp:
        events = take(events_of(resp), 3)
    assert [e["type"] for e in events] == ["ADDED", "ADDED", "BOOKMARK"]
    bookmark = events[2]["object"]["metadata"]
    assert bookmark["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert int(bookmark["resourceVersion"]) >= max(
        int(e["object"]["metadata"]["resourceVersion"]) for e in events[:2]
    )


def test_too_large_resource_version(http: httpx.Client, ns: str) -> None:
    current = int(list_rv(http, ns))
    future = str(current + 1_000_000)
    r = http.get(cm_path(ns), params={"watch": "1", "resourceVersion": future, "timeoutSeconds": "5"})
    assert r.status_code == 504
    status = r.json()
    assert status["kind"] == "Status" and status["code"] == 504 and status["reason"] == "Timeout"
    assert status["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"
    assert "Too large resource version" in status["message"]

    r = http.get(cm_path(ns), params={"resourceVersion": future, "resourceVersionMatch": "Exact"})
    assert r.status_code == 504
    assert r.json()["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"
    # Still serving.
    assert http.get(cm_path(ns)).status_code == 200


def test_invalid_watch_parameters(http: httpx.Client, ns: str) -> None:
    for params in ({"resourceVersion": "abc"}, {"resourceVersion": "-5"}, {"timeoutSeconds": "soon"}):
        r = http.get(cm_path(ns), params={"watch": "1", **params})
        assert r.status_code == 400, (params, r.text)
        assert r.json()["reason"] == "BadRequest"


async def _compact_store(db: Path) -> int:
    store = await open_store(f"sqlite://{db}")
    try:
        revision = await store.current_revision()
        await store.compact(revision)
        return revision
    finally:
        await store.close()


def test_expired_after_compaction(tmp_path: Path) -> None:
    data_dir = tmp_path / "compacted"
    server = start_apiserver(data_dir)
    try:
        with http_client(server) as http:
            ns = make_namespace(http)
            create_cm(http, ns, "c", v="0")
            old_rv = list_rv(http, ns)
            for i in range(1, 4):
                r = http.put(cm_path(ns, "c"), json={"metadata": {"name": "c"}, "data": {"v": str(i)}})
                assert r.status_code == 200, r.text
        stop_apiserver(server)
        # The embedded store is locked by its one process: compact while the server is down.
        compacted = asyncio.run(_compact_store(data_dir / "store.db"))
        assert compacted > int(old_rv)
        server = start_apiserver(data_dir)
        with http_client(server) as http:
            with http.stream(
                "GET", cm_path(ns), params={"watch": "1", "resourceVersion": old_rv, "timeoutSeconds": "10"}
            ) as resp:
                events = list(events_of(resp))
            assert len(events) == 1 and events[0]["type"] == "ERROR"
            status = events[0]["object"]
            assert status["kind"] == "Status" and status["code"] == 410 and status["reason"] == "Expired"

            r = http.get(cm_path(ns), params={"resourceVersion": old_rv, "resourceVersionMatch": "Exact"})
            assert r.status_code == 410 and r.json()["reason"] == "Expired"

            # The re-list a reflector does next works, and a watch from its revision sees new changes.
            fresh = list_rv(http, ns)
            with http.stream(
                "GET", cm_path(ns), params={"watch": "1", "resourceVersion": fresh, "timeoutSeconds": "10"}
            ) as resp:
                r = http.put(cm_path(ns, "c"), json={"metadata": {"name": "c"}, "data": {"v": "after"}})
                assert r.status_code == 200, r.text
                (event,) = take(events_of(resp), 1)
            assert event["type"] == "MODIFIED" and event["object"]["data"] == {"v": "after"}
    finally:
        stop_apiserver(server)
