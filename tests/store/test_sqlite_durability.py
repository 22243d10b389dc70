"""kill -9 of a process in the middle of writing loses no acknowledged write (sqlite backend)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from minikube_py.store import CompactedError, EventType, LeaseNotFoundError, StoreUnavailableError
from minikube_py.store.sqlite import SqliteStore

WRITER = Path(__file__).with_name("sqlite_writer_proc.py")
ACKS_BEFORE_KILL = 400


@pytest.fixture
def writer_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    db = tmp_path / "store.db"
    # Several writer tasks, so group commit (many writes per transaction) is what gets killed.
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(db), "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc, db
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def read_acks_then_kill(proc: subprocess.Popen[str]) -> dict[str, int]:
    assert proc.stdout is not None
    ready = proc.stdout.readline()
    if ready.strip() != "ready":
        pytest.fail(f"writer did not start: {ready!r} {proc.stderr.read() if proc.stderr else ''}")
    acked: dict[str, int] = {}
    while len(acked) < ACKS_BEFORE_KILL:
        line = proc.stdout.readline()
        assert line, f"writer ended early: {proc.stderr.read() if proc.stderr else ''}"
        key, rev = line.split()
        acked[key] = int(rev)
    os.kill(proc.pid, signal.SIGKILL)  # mid-load: the writers never stop on their own
    proc.wait(timeout=30)
    # Lines already in the pipe were acknowledged before the kill too.
    assert proc.stdout is not None
    rest = proc.stdout.read().split("\n")
    for line in rest[:-1]:  # the last piece has no newline: a line cut by the kill, not an ack
        key, rev = line.split()
        acked[key] = int(rev)
    return acked


async def test_acknowledged_writes_survive_kill_9(
    writer_process: tuple[subprocess.Popen[str], Path],
) -> None:
    proc, db = writer_process
    acked = await asyncio.to_thread(read_acks_then_kill, proc)
    assert proc.returncode == -signal.SIGKILL

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    store = await SqliteStore.open(str(db), compact_interval=None)
    try:
        for key, rev in acked.items():
            kv = await store.get(key)
            assert kv is not None, f"acknowledged write {key} (revision {rev}) lost"
            assert kv.mod_revision == rev
            task, index = key.split("/")[2:]
            assert kv.value == f"value-{task}-{int(index)}".encode()
        everything = await store.range("/durable/")
        # Whatever else committed is whole: one log row per revision, nothing half-written.
        assert len({kv.mod_revision for kv in everything.items}) == everything.count >= len(acked)
        last = await store.current_revision()
        assert last >= max(acked.values())
        assert last == max(kv.mod_revision for kv in everything.items)
        after = await store.create("/durable/after-restart", b"x")
        assert after.mod_revision == last + 1  # revisions continue where they stopped
    finally:
        await store.close()


async def test_a_second_process_cannot_open_the_same_store(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    store = await SqliteStore.open(str(db), compact_interval=None)
    try:
        with pytest.raises(StoreUnavailableError):
            await SqliteStore.open(str(db), compact_interval=None)
        await store.create("/still/works", b"1")
    finally:
        await store.close()
    reopened = await SqliteStore.open(str(db), compact_interval=None)
    try:
        kv = await reopened.get("/still/works")
        assert kv is not None and kv.value == b"1"
    finally:
        await reopened.close()


# -- state that must survive a restart ---------------------------------------------------------


async def test_leases_survive_reopen_and_expire_after_it(tmp_path: Path) -> None:
    db = str(tmp_path / "store.db")
    store = await SqliteStore.open(db, compact_interval=None)
    try:
        long_lease = await store.grant_lease(60)
        short_lease = await store.grant_lease(1)
        kept = await store.create("/leased/long", b"1", lease=long_lease)
        await store.create("/leased/short", b"2", lease=short_lease)
    finally:
        await store.close()
    store = await SqliteStore.open(db, compact_interval=None, lease_check_interval=0.05)
    try:
        assert await store.keepalive_lease(long_lease) == 60
        async with asyncio.timeout(10):
            while await store.get("/leased/short") is not None:  # noqa: ASYNC110 - polling the store
                await asyncio.sleep(0.05)
        assert await store.get("/leased/long") == kept
        with pytest.raises(LeaseNotFoundError):
            await store.keepalive_lease(short_lease)
        # Each key of an expired lease is deleted at its own revision.
        lease = await store.grant_lease(1)
        a = await store.create("/leased/a", b"", lease=lease)
        b = await store.create("/leased/b", b"", lease=lease)
        async with store.watch("/leased/", b.mod_revision) as watch:
            events = []
            async with asyncio.timeout(10):
                async for event in watch:
                    events.append(event)
                    if len(events) == 2:
                        break
        assert [(e.type, e.prev_kv) for e in events] == [(EventType.DELETE, a), (EventType.DELETE, b)]
        assert events[0].revision < events[1].revision
    finally:
        await store.close()


async def test_periodic_compaction_keeps_the_newest_revisions(tmp_path: Path) -> None:
    db = str(tmp_path / "store.db")
    store = await SqliteStore.open(db, compact_interval=0.05, compact_keep=10)
    try:
        kv = await store.create("/c/k", b"0")
        history = [kv]
        for i in range(1, 50):
            kv = await store.update("/c/k", str(i).encode(), kv.mod_revision)
            history.append(kv)
        async with asyncio.timeout(10):
            while await store.compacted_revision() < kv.mod_revision - 10:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        compacted = await store.compacted_revision()
        assert compacted == kv.mod_revision - 10
        with pytest.raises(CompactedError):
            await store.get("/c/k", revision=compacted - 1)
        for old in history[-10:]:
            assert await store.get("/c/k", revision=old.mod_revision) == old
        # Compaction really dropped the rows, and the compacted revision survives a restart.
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM log").fetchone()[0] == 11
    finally:
        await store.close()
    store = await SqliteStore.open(db, compact_interval=None)
    try:
        assert await store.compacted_revision() == compacted
        assert await store.get("/c/k") == kv
    finally:
        await store.close()
