"""The etcd backend against real etcd processes: member loss, total loss, ambiguous retries.

The backend-neutral behaviour is in test_contract.py (run with ``-k etcd``); this file holds what
only a real cluster can show.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from minikube_py.store import (
    Event,
    EventType,
    KeyExistsError,
    StoreError,
    StoreUnavailableError,
)
from minikube_py.store.etcd import EtcdStore
from tests import helpers

from .etcd_harness import EtcdCluster, etcd_available

pytestmark = pytest.mark.skipif(not etcd_available(), reason="etcd is not installed (Debian package etcd-server)")

# Hang guards only: generous bounds that fail a stuck test instead of blocking the suite.
GUARD = 60.0


wait_until = functools.partial(helpers.eventually, timeout=GUARD, interval=0.01)


@pytest.fixture
def cluster3(tmp_path: Path) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path / "etcd3", members=3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def leader_first(cluster: EtcdCluster) -> tuple[int, list[str]]:
    """The leader's index and the endpoints with the leader first, so the store (and its watch)
    start on the member the test will kill."""
    leader = cluster.leader_index()
    eps = cluster.endpoints
    return leader, [eps[leader]] + [e for i, e in enumerate(eps) if i != leader]


async def test_leader_killed_under_load_loses_no_acknowledged_write(cluster3: EtcdCluster) -> None:
    leader, endpoints = leader_first(cluster3)
    store = await EtcdStore.open(endpoints, watch_buffer=100_000, timeout=10.0)
    try:
        start = await store.current_revision()
        watch = store.watch("/ha/", start)
        seen: list[Event] = []
        watch_error: list[BaseException] = []

        async def consume() -> None:
            try:
                async for ev in watch:
                    seen.append(ev)
            except StoreError as e:
                watch_error.append(e)

        consumer = asyncio.create_task(consume())
        acked: dict[str, int] = {}
        failed: list[BaseException] = []
        stop = asyncio.Event()

        async def writer(w: int) -> None:
            i = 0
            while not stop.is_set():
                key = f"/ha/w{w}/{i:06d}"
                i += 1
                try:
                    kv = await store.create(key, key.encode())
                except StoreError as e:
                    failed.append(e)  # not acknowledged: allowed to be there or not
                    continue
                acked[key] = kv.mod_revision

        writers = [asyncio.create_task(writer(w)) for w in range(4)]
        try:
            await wait_until(lambda: len(acked) >= 200, "writes before the kill")
            cluster3.kill(leader)
            before_kill = len(acked)
            await wait_until(lambda: len(acked) >= before_kill + 200, "writes after the new election")
        finally:
            stop.set()
            await asyncio.gather(*writers)

        # Fail-over hides the lost leader entirely: with two of three members alive no write fails.
        assert failed == []
        new_leader = cluster3.leader_index()
        assert new_leader != leader

        # Every acknowledged write is there, with the revision it was acknowledged with.
        for key, rev in acked.items():
            kv = await store.get(key)
            assert kv is not None, f"acknowledged {key} lost"
            assert (kv.value, kv.mod_revision, kv.version) == (key.encode(), rev, 1)
        listed = await store.range("/ha/")
        assert listed.count == len(acked)

        # The watch, opened on the killed member, moved to another one and missed nothing.
        final = max(acked.values())
        await wait_until(lambda: bool(watch_error) or (bool(seen) and seen[-1].revision >= final), "watch to catch up")
        await watch.close()
        await consumer
        assert watch_error == []
        assert watch.reconnects >= 1  # type: ignore[attr-defined]
        revisions = [ev.revision for ev in seen]
        # Only these creates wrote to this cluster, one revision each: the stream must be exactly
        # every revision after the start, in order, each once.
        expected = list(range(start + 1, final + 1))
        assert revisions == expected, (
            f"missing {sorted(set(expected) - set(revisions))[:20]}, "
            f"extra {sorted(set(revisions) - set(expected))[:20]}, "
            f"out of order or repeated: {len(revisions) != len(set(revisions)) or revisions != sorted(revisions)}"
        )
        assert all(ev.type is EventType.PUT for ev in seen)
        delivered = {ev.kv.key: ev.revision for ev in seen}
        assert delivered == acked
    finally:
        await store.close()


async def test_all_members_dead_raises_unavailable_not_hang(cluster3: EtcdCluster) -> None:
    store = await EtcdStore.open(cluster3.endpoints, timeout=1.0)
    try:
        await store.create("/dead/a", b"1")
        watch = store.watch("/dead/", 0)
        for i in range(3):
            cluster3.kill(i)

        async def drain() -> list[Event]:
            return [ev async for ev in watch]

        outcomes = await asyncio.wait_for(
            asyncio.gather(
                store.get("/dead/a"),
                store.create("/dead/b", b"2"),
                store.range("/dead/"),
                store.grant_lease(10),
                drain(),
                return_exceptions=True,
            ),
            GUARD,
        )
        assert [type(o) for o in outcomes] == [StoreUnavailableError] * 5, outcomes
    finally:
        await store.close()
    with pytest.raises(StoreUnavailableError):
        await asyncio.wait_for(EtcdStore.open(cluster3.endpoints, timeout=1.0), GUARD)


async def test_a_member_of_another_cluster_is_never_used(tmp_path: Path) -> None:
    """An endpoint that answers for a different cluster (a dead member's port taken over by another
    etcd) counts as unavailable: nothing is read from or written to it."""
    ours, theirs = EtcdCluster(tmp_path / "ours"), EtcdCluster(tmp_path / "theirs")
    try:
        ours.start()
        theirs.start()
        store = await EtcdStore.open([*ours.endpoints, *theirs.endpoints], timeout=1.0)
        try:
            await store.create("/x/mine", b"1")
            ours.kill(0)
            with pytest.raises(StoreUnavailableError, match="belongs to cluster"):
                await asyncio.wait_for(store.create("/x/lost", b"2"), GUARD)
            with pytest.raises(StoreUnavailableError):
                await asyncio.wait_for(store.get("/x/mine"), GUARD)
        finally:
            await store.close()
        other = await EtcdStore.open(theirs.endpoints)
        try:
            assert (await other.range("/x/")).items == []
        finally:
            await other.close()
    finally:
        ours.stop()
        theirs.stop()


# -- ambiguous failures: applied by etcd, but the answer lost ------------------------------------


class AnswerLost:
    """Wraps a KV stub: the first ``times`` calls of ``method`` reach etcd and are applied, then
    fail as if the member died before answering (what a client sees when the leader is killed
    right after commit)."""

    def __init__(self, stub: Any, method: str, times: int = 1, applied: bool = True) -> None:
        self._stub = stub
        self._method = method
        self.remaining = times
        self._applied = applied

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._stub, name)
        if name != self._method:
            return real

        async def call(request: Any, **kwargs: Any) -> Any:
            if self.remaining > 0:
                self.remaining -= 1
                if self._applied:
                    await real(request, **kwargs)
                raise grpc.aio.AioRpcError(
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.aio.Metadata(),
                    grpc.aio.Metadata(),
                    details="injected: connection lost after sending",
                )
            return await real(request, **kwargs)

        return call


@pytest.fixture
async def one_member_store(etcd_cluster: EtcdCluster) -> AsyncIterator[EtcdStore]:
    store = await EtcdStore.open(etcd_cluster.endpoints)
    try:
        yield store
    finally:
        await store.close()


def break_answers(store: EtcdStore, method: str, *, applied: bool = True) -> AnswerLost:
    member = store._pool.member(store._pool.current)
    flaky = AnswerLost(member.kv, method, applied=applied)
    member.kv = flaky
    return flaky


async def test_retried_create_whose_first_try_landed_succeeds_once(one_member_store: EtcdStore, prefix: str) -> None:
    store = one_member_store
    flaky = break_answers(store, "Txn")
    kv = await store.create(prefix + "a", b"v1")
    assert flaky.remaining == 0
    assert (kv.value, kv.version) == (b"v1", 1)
    # One application only: the retry did not write a second revision.
    assert await store.get(prefix + "a") == kv
    assert await store.current_revision() == kv.mod_revision


async def test_retried_update_whose_first_try_landed_bumps_version_once(
    one_member_store: EtcdStore, prefix: str
) -> None:
    store = one_member_store
    first = await store.create(prefix + "a", b"v1")
    break_answers(store, "Txn")
    kv = await store.update(prefix + "a", b"v2", first.mod_revision)
    assert (kv.value, kv.version, kv.create_revision) == (b"v2", 2, first.create_revision)
    assert await store.get(prefix + "a") == kv
    assert await store.current_revision() == kv.mod_revision


async def test_retried_write_that_never_landed_is_applied_by_the_retry(
    one_member_store: EtcdStore, prefix: str
) -> None:
    store = one_member_store
    break_answers(store, "Txn", applied=False)
    kv = await store.create(prefix + "a", b"v1")
    assert await store.get(prefix + "a") == kv


async def test_retry_does_not_claim_someone_elses_create(one_member_store: EtcdStore, prefix: str) -> None:
    store = one_member_store
    await store.create(prefix + "a", b"theirs")
    break_answers(store, "Txn", applied=False)
    with pytest.raises(KeyExistsError) as exc:
        await store.create(prefix + "a", b"mine")
    assert exc.value.current is not None and exc.value.current.value == b"theirs"


async def test_retried_lease_grant_finds_its_own_lease(one_member_store: EtcdStore) -> None:
    store = one_member_store
    member = store._pool.member(store._pool.current)
    member.lease = AnswerLost(member.lease, "LeaseGrant")  # type: ignore[assignment]
    lease = await store.grant_lease(30)
    assert await store.keepalive_lease(lease) == 30
    await store.revoke_lease(lease)


async def test_watch_reconnect_resumes_without_gap_or_duplicate(one_member_store: EtcdStore, prefix: str) -> None:
    """Cut the watch's stream under it (as a member restart would) between writes."""
    store = one_member_store
    watch = store.watch(prefix, 0)
    written = [await store.create(f"{prefix}{i}", b"x") for i in range(5)]
    got: list[Event] = []
    async with asyncio.timeout(GUARD):  # a lost event would otherwise wait forever
        async for ev in watch:
            got.append(ev)
            if len(got) == 2:
                call = watch._call  # type: ignore[attr-defined]
                assert call is not None
                call.cancel()  # the producer sees the stream end and re-creates it
                written += [await store.create(f"{prefix}{i}", b"x") for i in range(5, 8)]
            if len(got) == len(written) == 8:
                break
    await watch.close()
    assert [ev.revision for ev in got] == [kv.mod_revision for kv in written]
    assert watch.reconnects >= 1  # type: ignore[attr-defined]
