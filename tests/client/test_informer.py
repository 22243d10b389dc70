"""Informers against a real API server: initial sync, handlers, indexes, resync, resuming a watch the
server ended, and the re-list (with a correct diff) after the server restarts with its history
compacted, so that a change made while the informer was disconnected is never lost."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from minikube_py.client import informer as informer_module
from minikube_py.client.informer import Informer, key_of, split_key
from minikube_py.client.rest import APIClient
from minikube_py.store import open_store
from tests.apiserver.conftest import start_apiserver, stop_apiserver

from .conftest import configmap, eventually


class Recorder:
    """Every handler call, as (event, name, data) triples."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []
        self.updates: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def attach(self, inf: Informer) -> None:
        inf.add_handlers(on_add=self.add, on_update=self.update, on_delete=self.delete)

    def add(self, obj: dict[str, Any]) -> None:
        self.events.append(("add", obj["metadata"]["name"], obj.get("data")))

    def update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.updates.append((old, new))
        self.events.append(("update", new["metadata"]["name"], new.get("data")))

    def delete(self, obj: dict[str, Any]) -> None:
        self.events.append(("delete", obj["metadata"]["name"], obj.get("data")))

    def of(self, kind: str) -> list[str]:
        return sorted(name for k, name, _ in self.events if k == kind)


def test_keys() -> None:
    assert key_of({"metadata": {"name": "a", "namespace": "ns"}}) == "ns/a"
    assert key_of({"metadata": {"name": "node1"}}) == "node1"
    assert split_key("ns/a") == ("ns", "a")
    assert split_key("node1") == (None, "node1")
    for bad in ("", "a/b/c", "/a", "a/"):
        with pytest.raises(ValueError):
            split_key(bad)
    with pytest.raises(ValueError):
        key_of({"metadata": {}})


async def test_sync_handlers_and_indexes(client: APIClient, ns: str) -> None:
    for name, app in (("one", "a"), ("two", "a"), ("three", "b")):
        cm = configmap(name, ns, v="0")
        cm["metadata"]["labels"] = {"app": app}  # type: ignore[index]
        await client.create("configmaps", cm)

    inf = Informer(client, "configmaps", ns)
    rec = Recorder()
    rec.attach(inf)
    inf.add_index("app", lambda o: [o["metadata"].get("labels", {}).get("app", "")])
    await inf.start()
    try:
        assert await inf.wait_synced(15)
        assert inf.has_synced
        assert rec.of("add") == ["one", "three", "two"] and rec.of("update") == []
        assert inf.get(f"{ns}/one")["data"] == {"v": "0"}  # type: ignore[index]
        assert inf.get(f"{ns}/absent") is None
        assert sorted(o["metadata"]["name"] for o in inf.list(ns)) == ["one", "three", "two"]
        assert inf.list("another-namespace") == []
        assert [o["metadata"]["name"] for o in inf.by_index("app", "a")] == ["one", "two"]
        assert all(o["kind"] == "ConfigMap" for o in inf.list())

        await client.create("configmaps", configmap("four", ns, v="0"))
        relabel = {"metadata": {"labels": {"app": "b"}}, "data": {"v": "1"}}
        await client.patch("configmaps", "one", relabel, ns)
        await client.delete("configmaps", "two", ns)
        await eventually(lambda: rec.of("delete") == ["two"], what="the delete")
        assert rec.of("add") == ["four", "one", "three", "two"]
        assert rec.of("update") == ["one"]
        old, new = rec.updates[-1]
        assert old["data"] == {"v": "0"} and new["data"] == {"v": "1"}
        # The index follows the change of label and the deletion.
        assert [o["metadata"]["name"] for o in inf.by_index("app", "a")] == []
        assert [o["metadata"]["name"] for o in inf.by_index("app", "b")] == ["one", "three"]
        assert inf.get(f"{ns}/two") is None
        with pytest.raises(ValueError):
            inf.by_index("no-such-index", "x")

        # A handler added to a running informer first sees every cached object as an add.
        late = Recorder()
        late.attach(inf)
        assert late.of("add") == ["four", "one", "three"]
        assert inf.relists == 0
    finally:
        await inf.stop()


async def test_failing_handler_does_not_stop_the_informer(client: APIClient, ns: str) -> None:
    inf = Informer(client, "configmaps", ns)

    def explode(obj: dict[str, Any]) -> None:
        raise RuntimeError("handler bug")

    inf.add_handlers(on_add=explode)
    rec = Recorder()
    rec.attach(inf)
    await inf.start()
    try:
        assert await inf.wait_synced(15)
        await client.create("configmaps", configmap("x", ns))
        await eventually(lambda: rec.of("add") == ["x"], what="the add after a failing handler")
    finally:
        await inf.stop()


async def test_resync_replays_updates(client: APIClient, ns: str) -> None:
    await client.create("configmaps", configmap("r", ns))
    inf = Informer(client, "configmaps", ns, resync_period=0.1)
    rec = Recorder()
    rec.attach(inf)
    await inf.start()
    try:
        await eventually(lambda: len(rec.updates) >= 2, what="resyncs")
        old, new = rec.updates[0]
        assert old is new and new["metadata"]["name"] == "r"
    finally:
        await inf.stop()


async def test_watch_resumes_after_the_server_ends_it(client: APIClient, ns: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Watches of one second (or two: the timeout is jittered) end several times during this test.
    monkeypatch.setattr(informer_module, "MIN_WATCH_TIMEOUT", 1)
    inf = Informer(client, "configmaps", ns)
    rec = Recorder()
    rec.attach(inf)
    await inf.start()
    try:
        assert await inf.wait_synced(15)
        for i in range(3):
            await asyncio.sleep(1.0)
            await client.create("configmaps", configmap(f"late-{i}", ns))
        await eventually(lambda: rec.of("add") == ["late-0", "late-1", "late-2"], what="adds across watches")
        assert inf.relists == 0  # each new watch carried on from the last resourceVersion
    finally:
        await inf.stop()


async def test_informer_filters_with_selectors(client: APIClient, ns: str) -> None:
    cm = configmap("labelled", ns)
    cm["metadata"]["labels"] = {"tier": "web"}  # type: ignore[index]
    await client.create("configmaps", cm)
    await client.create("configmaps", configmap("plain", ns))
    inf = Informer(client, "configmaps", ns, label_selector="tier=web")
    await inf.start()
    try:
        assert await inf.wait_synced(15)
        assert inf.keys() == [f"{ns}/labelled"]
    finally:
        await inf.stop()


async def _change_store_while_down(db: Path, ns: str) -> None:
    """What other API servers could have done while this one was away, then a compaction so that no
    watch can replay it: one object deleted, one changed, one created."""
    store = await open_store(f"sqlite://{db}")
    try:
        prefix = f"/registry/configmaps/{ns}/"
        await store.delete(prefix + "gone")
        kv = await store.get(prefix + "changed")
        assert kv is not None
        obj = orjson.loads(kv.value)
        obj["data"] = {"v": "changed-while-down"}
        await store.update(prefix + "changed", orjson.dumps(obj), kv.mod_revision)
        obj["metadata"].update(name="new", uid=str(uuid.uuid4()))
        obj["data"] = {"v": "created-while-down"}
        await store.create(prefix + "new", orjson.dumps(obj))
        await store.compact(await store.current_revision())
    finally:
        await store.close()


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    # Reconnect attempts every 0.1-0.3 s, so the tests wait for the restarted server, not the back-off.
    monkeypatch.setattr(informer_module, "BACKOFF_INITIAL", 0.1)
    monkeypatch.setattr(informer_module, "BACKOFF_CAP", 0.2)


@pytest.mark.usefixtures("quick_backoff")
async def test_relist_after_restart_and_compaction_emits_the_diff(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_apiserver(data_dir)
    c = server.api_client()
    inf: Informer | None = None
    try:
        ns = "restart"
        await c.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for name in ("kept", "changed", "gone"):
            await c.create("configmaps", configmap(name, ns, v="0"))
        inf = Informer(c, "configmaps", ns)
        rec = Recorder()
        rec.attach(inf)
        await inf.start()
        assert await inf.wait_synced(15)
        assert rec.of("add") == ["changed", "gone", "kept"]
        rec.events.clear()

        port = server.port
        # A crash, not a clean stop: the open watch breaks mid-stream.
        server.proc.kill()
        server.proc.wait()
        await _change_store_while_down(data_dir / "store.db", ns)
        server = await asyncio.to_thread(start_apiserver, data_dir, "--port", str(port))

        await eventually(lambda: rec.of("delete") == ["gone"] and rec.of("add") == ["new"]
                         and rec.of("update") == ["changed"], what="the re-list diff")
        assert ("update", "changed", {"v": "changed-while-down"}) in rec.events
        assert ("delete", "gone", {"v": "0"}) in rec.events  # the last state the informer knew
        assert sorted(inf.keys()) == [f"{ns}/changed", f"{ns}/kept", f"{ns}/new"]
        assert inf.relists >= 1

        # And the informer is live again: a change after the restart arrives through the new watch.
        await c.patch("configmaps", "kept", {"data": {"v": "after"}}, ns)
        await eventually(lambda: ("update", "kept", {"v": "after"}) in rec.events, what="a live update")
    finally:
        if inf is not None:
            await inf.stop()
        await c.close()
        stop_apiserver(server)


@pytest.mark.usefixtures("quick_backoff")
async def test_relist_after_a_clean_restart(tmp_path: Path) -> None:
    """A server that stops cleanly ends the watch; the informer re-lists once it is back and sees the
    objects made in between (here by the restarted server before the informer reconnects)."""
    data_dir = tmp_path / "data"
    server = start_apiserver(data_dir)
    c = server.api_client()
    inf: Informer | None = None
    try:
        await c.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "clean"}})
        await c.create("configmaps", configmap("before", "clean"))
        inf = Informer(c, "configmaps", "clean")
        rec = Recorder()
        rec.attach(inf)
        await inf.start()
        assert await inf.wait_synced(15)
        port = server.port
        started = time.monotonic()
        await asyncio.to_thread(stop_apiserver, server)
        stop_seconds = time.monotonic() - started
        server = await asyncio.to_thread(start_apiserver, data_dir, "--port", str(port))
        await c.delete("configmaps", "before", "clean")
        await c.create("configmaps", configmap("after", "clean"))
        await eventually(lambda: rec.of("add") == ["after", "before"] and rec.of("delete") == ["before"],
                         what="changes after a restart")
        assert inf.relists >= 1
        print(f"apiserver stop with an open watch took {stop_seconds:.2f}s")
    finally:
        if inf is not None:
            await inf.stop()
        await c.close()
        stop_apiserver(server)
