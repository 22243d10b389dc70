"""The store contract: every test runs against both backends (``store`` fixture: sqlite, etcd).

The etcd member is shared by the whole session, so tests keep to their own ``prefix`` and compare
revisions relative to ones they observed, never to absolute numbers.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from minikube_py.store import (
    MAX_VALUE_BYTES,
    CompactedError,
    ConflictError,
    Event,
    EventType,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    LeaseNotFoundError,
    Store,
    StoreClosedError,
    ValueTooLargeError,
    Watch,
    WatchDroppedError,
)

from .conftest import TEST_WATCH_BUFFER

# Generous: only a hang should ever hit it.
WAIT = 10.0


async def collect(watch: Watch, n: int, wait: float = WAIT) -> list[Event]:
    events: list[Event] = []
    async with asyncio.timeout(wait):
        async for event in watch:
            events.append(event)
            if len(events) == n:
                break
    return events


async def mark(store: Store, prefix: str) -> int:
    """A revision to watch from: a write just outside ``prefix`` (a fresh store is at revision 0,
    and watching from 0 means "from now")."""
    return (await store.create(prefix.rstrip("/") + "-mark", b"")).mod_revision


# -- revisions and per-key bookkeeping -------------------------------------------------------------


async def test_writes_get_increasing_revisions_and_etcd_key_fields(store: Store, prefix: str) -> None:
    key = prefix + "a"
    before = await store.current_revision()
    created = await store.create(key, b"1")
    assert created.mod_revision > before
    assert (created.create_revision, created.version, created.value) == (created.mod_revision, 1, b"1")

    updated = await store.update(key, b"2", created.mod_revision)
    assert updated.mod_revision > created.mod_revision
    assert (updated.create_revision, updated.version) == (created.create_revision, 2)

    deleted = await store.delete(key)
    assert deleted == updated  # the value as it was before the delete
    assert await store.get(key) is None
    assert await store.current_revision() > updated.mod_revision

    again = await store.create(key, b"3")
    assert again.create_revision == again.mod_revision > updated.mod_revision
    assert again.version == 1
    assert await store.get(key) == again


async def test_get_at_an_old_revision(store: Store, prefix: str) -> None:
    key = prefix + "k"
    v1 = await store.create(key, b"one")
    v2 = await store.update(key, b"two", v1.mod_revision)
    await store.delete(key)
    assert await store.get(key, revision=v1.mod_revision) == v1
    assert await store.get(key, revision=v2.mod_revision) == v2
    assert await store.get(key, revision=v1.mod_revision - 1) is None
    assert await store.get(key) is None


async def test_range_limit_start_after_more_count_and_revision(store: Store, prefix: str) -> None:
    names = ["a", "b", "c", "d", "e"]
    written = [await store.create(prefix + n, n.encode()) for n in names]
    # Neighbours that share the prefix's characters but not the prefix itself stay out.
    await store.create(prefix.rstrip("/") + "x", b"outside")
    await store.create(prefix.rstrip("/"), b"outside")

    everything = await store.range(prefix)
    assert [kv.key for kv in everything.items] == [prefix + n for n in names]
    assert everything.items == written
    assert (everything.more, everything.count) == (False, 5)
    assert everything.revision >= written[-1].mod_revision

    first = await store.range(prefix, limit=2)
    assert [kv.key for kv in first.items] == [prefix + "a", prefix + "b"]
    assert (first.more, first.count) == (True, 5)

    second = await store.range(prefix, limit=2, start_after=first.items[-1].key)
    assert [kv.key for kv in second.items] == [prefix + "c", prefix + "d"]
    assert (second.more, second.count) == (True, 3)

    last = await store.range(prefix, limit=2, start_after=second.items[-1].key)
    assert [kv.key for kv in last.items] == [prefix + "e"]
    assert (last.more, last.count) == (False, 1)

    # Change things, then read the range as it was.
    at = everything.revision
    await store.delete(prefix + "b")
    await store.update(prefix + "c", b"C", written[2].mod_revision)
    await store.create(prefix + "f", b"f")
    old = await store.range(prefix, revision=at)
    assert old.items == written
    assert old.revision == at
    old_page = await store.range(prefix, limit=2, start_after=prefix + "a", revision=at)
    assert [kv.key for kv in old_page.items] == [prefix + "b", prefix + "c"]
    assert (old_page.more, old_page.count) == (True, 4)
    now = await store.range(prefix)
    assert [(kv.key, kv.value) for kv in now.items] == [
        (prefix + "a", b"a"), (prefix + "c", b"C"), (prefix + "d", b"d"), (prefix + "e", b"e"),
        (prefix + "f", b"f"),
    ]


# -- guarded writes --------------------------------------------------------------------------------


async def test_create_on_an_existing_key_raises_key_exists(store: Store, prefix: str) -> None:
    kv = await store.create(prefix + "x", b"1")
    with pytest.raises(KeyExistsError) as info:
        await store.create(prefix + "x", b"2")
    assert info.value.key == prefix + "x"
    assert info.value.current is None or info.value.current == kv
    assert await store.get(prefix + "x") == kv


async def test_update_with_a_stale_mod_revision_conflicts(store: Store, prefix: str) -> None:
    key = prefix + "x"
    v1 = await store.create(key, b"1")
    v2 = await store.update(key, b"2", v1.mod_revision)
    with pytest.raises(ConflictError) as info:
        await store.update(key, b"3", v1.mod_revision)
    assert info.value.expected == v1.mod_revision
    assert info.value.current == v2
    assert await store.get(key) == v2
    with pytest.raises(KeyNotFoundError):
        await store.update(prefix + "missing", b"1", v1.mod_revision)


async def test_delete_is_guarded_by_mod_revision(store: Store, prefix: str) -> None:
    key = prefix + "x"
    v1 = await store.create(key, b"1")
    v2 = await store.update(key, b"2", v1.mod_revision)
    with pytest.raises(ConflictError) as info:
        await store.delete(key, expected_mod_revision=v1.mod_revision)
    assert info.value.current == v2
    assert await store.get(key) == v2
    assert await store.delete(key, expected_mod_revision=v2.mod_revision) == v2
    with pytest.raises(KeyNotFoundError):
        await store.delete(key)


async def test_concurrent_creates_of_one_key_have_one_winner(store: Store, prefix: str) -> None:
    key = prefix + "contested"
    results = await asyncio.gather(
        *(store.create(key, str(i).encode()) for i in range(16)), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, KeyValue)]
    assert len(winners) == 1
    assert all(isinstance(r, KeyExistsError) for r in results if r is not winners[0])
    assert await store.get(key) == winners[0]
    # Concurrent writes to different keys (one group commit for sqlite) each get their own revision.
    others = await asyncio.gather(*(store.create(f"{prefix}{i}", b"x") for i in range(16)))
    assert len({kv.mod_revision for kv in others}) == 16


async def test_guaranteed_update_retries_under_concurrent_updaters(store: Store, prefix: str) -> None:
    key = prefix + "counter"
    tasks, increments = 8, 10

    def bump(current: KeyValue | None) -> bytes:
        return str(int(current.value) + 1 if current else 1).encode()

    async def worker() -> None:
        for _ in range(increments):
            await store.guaranteed_update(key, bump, create_if_missing=True)

    await asyncio.gather(*(worker() for _ in range(tasks)))
    final = await store.get(key)
    assert final is not None
    assert int(final.value) == tasks * increments
    assert final.version == tasks * increments
    with pytest.raises(KeyNotFoundError):
        await store.guaranteed_update(prefix + "missing", bump)


# -- watches ---------------------------------------------------------------------------------------


async def test_watch_replays_from_a_revision_then_goes_live(store: Store, prefix: str) -> None:
    start = await mark(store, prefix)
    a1 = await store.create(prefix + "a", b"1")
    a2 = await store.update(prefix + "a", b"2", a1.mod_revision)
    b1 = await store.create(prefix + "b", b"1")
    await store.create(prefix.rstrip("/") + "-other", b"not mine")
    gone = await store.delete(prefix + "a")

    async with store.watch(prefix, start) as watch:
        replayed = await collect(watch, 4)
        c1 = await store.create(prefix + "c", b"1")
        await store.delete(prefix + "b", expected_mod_revision=b1.mod_revision)
        live = await collect(watch, 2)

    events = replayed + live
    assert [e.type for e in events] == [
        EventType.PUT, EventType.PUT, EventType.PUT, EventType.DELETE, EventType.PUT, EventType.DELETE,
    ]
    assert [e.kv.key for e in events] == [prefix + k for k in ("a", "a", "b", "a", "c", "b")]
    revisions = [e.revision for e in events]
    assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)
    assert events[0].kv == a1 and events[1].kv == a2 and events[2].kv == b1 and events[4].kv == c1
    assert events[3].prev_kv == gone == a2
    assert events[3].kv.value == b""
    assert events[5].prev_kv == b1


async def test_watch_from_the_middle_of_history_starts_after_that_revision(store: Store, prefix: str) -> None:
    kvs = [await store.create(prefix + str(i), b"x") for i in range(5)]
    async with store.watch(prefix, kvs[2].mod_revision) as watch:
        events = await collect(watch, 2)
    assert [e.kv for e in events] == kvs[3:]


@pytest.mark.watch_buffer(4096)
async def test_watch_sees_every_write_of_concurrent_writers_in_order(store: Store, prefix: str) -> None:
    writers, writes = 8, 200
    start = await mark(store, prefix)
    watch = store.watch(prefix, start)
    consumer = asyncio.create_task(collect(watch, writers * writes, wait=60))

    async def writer(w: int) -> list[int]:
        return [(await store.create(f"{prefix}{w}/{i}", b"v")).mod_revision for i in range(writes)]

    acked = sorted(r for revs in await asyncio.gather(*(writer(w) for w in range(writers))) for r in revs)
    events = await consumer
    await watch.close()
    assert [e.revision for e in events] == acked
    assert all(e.type is EventType.PUT for e in events)


async def test_watch_from_zero_sees_only_new_events(store: Store, prefix: str) -> None:
    await store.create(prefix + "old", b"1")
    async with store.watch(prefix, 0) as watch:
        new = await store.create(prefix + "new", b"2")
        events = await collect(watch, 1)
    assert [e.kv for e in events] == [new]


async def test_watch_from_a_future_revision_waits_for_it(store: Store, prefix: str) -> None:
    now = await store.current_revision()
    future = now + 3
    try:
        watch = store.watch(prefix, future)
    except FutureRevisionError:
        return  # allowed: the backend refuses instead of waiting
    async with watch:
        kvs = [await store.create(prefix + str(i), b"x") for i in range(6)]
        events = await collect(watch, 1)
    assert events[0].revision > future
    assert events[0].kv in kvs


async def test_a_slow_watcher_is_dropped_and_never_sees_a_gap(store: Store, prefix: str) -> None:
    watch = store.watch(prefix, 0)
    try:
        keys = [f"{prefix}{i:04}" for i in range(TEST_WATCH_BUFFER * 4)]
        acked = [(await store.create(key, b"v")).mod_revision for key in keys]
        got: list[int] = []
        with pytest.raises(WatchDroppedError):
            async with asyncio.timeout(WAIT):
                async for event in watch:
                    got.append(event.revision)
        assert len(got) < len(acked)
        assert got == acked[: len(got)]  # a contiguous prefix: nothing skipped silently
    finally:
        await watch.close()


async def test_watch_close_ends_iteration(store: Store, prefix: str) -> None:
    watch = store.watch(prefix, 0)
    received: list[Event] = []

    async def consume() -> None:
        async for event in watch:
            received.append(event)

    task = asyncio.create_task(consume())
    kv = await store.create(prefix + "a", b"1")
    async with asyncio.timeout(WAIT):
        while not received:  # noqa: ASYNC110 - polling a list the consumer task fills
            await asyncio.sleep(0.01)
    await watch.close()
    async with asyncio.timeout(WAIT):
        await task  # iteration ends without an error
    assert [e.kv for e in received] == [kv]


# -- compaction ------------------------------------------------------------------------------------


async def test_compaction_drops_old_revisions_and_keeps_current_values(store: Store, prefix: str) -> None:
    key = prefix + "k"
    v1 = await store.create(key, b"1")
    v2 = await store.update(key, b"2", v1.mod_revision)
    other = await store.create(prefix + "other", b"o")
    removed = await store.create(prefix + "removed", b"r")
    await store.delete(prefix + "removed")
    v3 = await store.update(key, b"3", v2.mod_revision)
    await store.compact(v3.mod_revision)

    assert await store.compacted_revision() >= v3.mod_revision
    with pytest.raises(CompactedError):
        await store.get(key, revision=v1.mod_revision)
    with pytest.raises(CompactedError):
        await store.range(prefix, revision=v2.mod_revision)
    with pytest.raises(CompactedError):
        watch = store.watch(prefix, v1.mod_revision)
        async with asyncio.timeout(WAIT):
            async for _ in watch:
                pass
    assert await store.get(key) == v3
    assert (await store.range(prefix)).items == [v3, other]
    assert await store.get(removed.key) is None

    # History after the compaction point is intact.
    v4 = await store.update(key, b"4", v3.mod_revision)
    async with store.watch(prefix, v3.mod_revision) as watch:
        assert [e.kv for e in await collect(watch, 1)] == [v4]
    assert await store.get(key, revision=v4.mod_revision) == v4


async def test_history_matches_a_model_before_and_after_compaction(store: Store, prefix: str) -> None:
    """Random guarded writes on a few keys; every past revision must read back as the model says."""
    rng = random.Random(20240611)
    keys = [f"{prefix}k{i}" for i in range(6)]
    state: dict[str, KeyValue] = {}
    snapshots: list[tuple[int, dict[str, KeyValue]]] = []
    for step in range(150):
        key = rng.choice(keys)
        current = state.get(key)
        if current is None:
            kv = await store.create(key, f"{step}".encode())
            state[key] = kv
        elif rng.random() < 0.3:
            assert await store.delete(key, expected_mod_revision=current.mod_revision) == current
            del state[key]
            kv = None
        else:
            kv = await store.update(key, f"{step}".encode(), current.mod_revision)
            assert kv.version == current.version + 1 and kv.create_revision == current.create_revision
            state[key] = kv
        revision = kv.mod_revision if kv else await store.current_revision()
        snapshots.append((revision, dict(state)))

    async def check(revision: int, expected: dict[str, KeyValue]) -> None:
        result = await store.range(prefix, revision=revision)
        assert result.items == [expected[k] for k in sorted(expected)], f"range at {revision}"
        for key in keys:
            assert await store.get(key, revision=revision) == expected.get(key), f"{key} at {revision}"

    for revision, expected in snapshots[::7]:
        await check(revision, expected)

    middle, _ = snapshots[len(snapshots) // 2]
    await store.compact(middle)
    for revision, expected in snapshots:
        if revision < middle:
            with pytest.raises(CompactedError):
                await store.range(prefix, revision=revision)
        elif revision % 3 == 0 or revision == middle:
            await check(revision, expected)
    assert (await store.range(prefix)).items == [state[k] for k in sorted(state)]


async def test_compacting_a_future_revision_is_refused(store: Store, prefix: str) -> None:
    await store.create(prefix + "a", b"1")
    with pytest.raises(FutureRevisionError):
        await store.compact(await store.current_revision() + 1000)


# -- leases ----------------------------------------------------------------------------------------


async def test_lease_expiry_deletes_attached_keys_with_delete_events(store: Store, prefix: str) -> None:
    lease = await store.grant_lease(2)
    a = await store.create(prefix + "a", b"1", lease=lease)
    b = await store.create(prefix + "b", b"2", lease=lease)
    kept = await store.create(prefix + "kept", b"3")
    assert a.lease == lease
    async with store.watch(prefix, kept.mod_revision) as watch:
        events = await collect(watch, 2, wait=15)
    assert {e.type for e in events} == {EventType.DELETE}
    assert {e.kv.key for e in events} == {a.key, b.key}
    assert {e.prev_kv for e in events} == {a, b}
    assert events[0].revision <= events[1].revision
    assert await store.get(a.key) is None and await store.get(b.key) is None
    assert await store.get(kept.key) == kept
    with pytest.raises(LeaseNotFoundError):
        await store.keepalive_lease(lease)


async def test_lease_keepalive_and_revoke(store: Store, prefix: str) -> None:
    lease = await store.grant_lease(30)
    assert await store.keepalive_lease(lease) == 30
    kv = await store.create(prefix + "a", b"1", lease=lease)
    async with store.watch(prefix, kv.mod_revision) as watch:
        await store.revoke_lease(lease)
        events = await collect(watch, 1)
    assert events[0].type is EventType.DELETE and events[0].prev_kv == kv
    assert await store.get(kv.key) is None
    with pytest.raises(LeaseNotFoundError):
        await store.revoke_lease(lease)
    with pytest.raises(LeaseNotFoundError):
        await store.keepalive_lease(lease)
    with pytest.raises(LeaseNotFoundError):
        await store.create(prefix + "b", b"1", lease=lease)


# -- bad input and closing -------------------------------------------------------------------------


async def test_bad_input_gets_clear_errors(store: Store, prefix: str) -> None:
    kv = await store.create(prefix + "a", b"1")
    with pytest.raises(TypeError):
        await store.get(b"/bytes/key")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await store.create(prefix + "b", "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await store.create("", b"1")
    with pytest.raises(ValueTooLargeError):
        await store.create(prefix + "big", b"x" * (MAX_VALUE_BYTES + 1))
    with pytest.raises(TypeError):
        await store.update(prefix + "a", b"2", "1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await store.get(prefix + "a", revision=-1)
    with pytest.raises(FutureRevisionError):
        await store.get(prefix + "a", revision=kv.mod_revision + 1_000_000)
    with pytest.raises(FutureRevisionError):
        await store.range(prefix, revision=kv.mod_revision + 1_000_000)
    with pytest.raises(TypeError):
        store.watch(prefix, "0")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.watch(prefix, -1)
    # None of that changed anything.
    assert (await store.range(prefix)).items == [kv]
    assert await store.get(prefix + "big") is None


async def test_a_value_of_exactly_the_limit_is_accepted(store: Store, prefix: str) -> None:
    value = bytes(range(256)) * (MAX_VALUE_BYTES // 256)
    kv = await store.create(prefix + "big", value)
    got = await store.get(prefix + "big")
    assert got == kv and got.value == value


async def test_close_ends_watches_and_later_calls_fail(store: Store, prefix: str) -> None:
    watch = store.watch(prefix, 0)

    async def consume() -> None:
        async for _ in watch:
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    await store.close()
    with pytest.raises(StoreClosedError):
        async with asyncio.timeout(WAIT):
            await task
    await store.close()  # idempotent
    with pytest.raises(StoreClosedError):
        await store.get(prefix + "a")
    with pytest.raises(StoreClosedError):
        await store.create(prefix + "a", b"1")
    with pytest.raises(StoreClosedError):
        store.watch(prefix, 0)
