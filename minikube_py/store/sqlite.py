"""The embedded store: etcd v3 semantics on one SQLite file, kine-style.

Layout and threads:

* one append-only revision log plus a ``current`` index (:mod:`.sqlite_schema`);
* one writer thread and connection; writes queue up and run in one transaction per batch (group
  commit: concurrent writers share one fsync, each keeps its own revision and its own result)
  (:mod:`.sqlite_writes`, :mod:`.sqlite_threads`);
* reader threads with their own connections; WAL lets them read while the writer commits
  (:mod:`.sqlite_reads`);
* watches replay the log and then follow live commits (:mod:`.sqlite_watch`);
* two background tasks: the lease reaper and the periodic compactor (like kube-apiserver's
  five-minute compaction, keeping the newest ``compact_keep`` revisions).

Revision rules: ``get``/``range`` at a revision newer than the current one raise
:class:`FutureRevisionError`; a watch may start from a future revision (as etcd allows) and just
waits. Reads at a revision below the compacted one raise :class:`CompactedError`; reading at exactly
the compacted revision works (compaction keeps each key's state as of it), as in etcd. For the same
reason a watch whose ``from_revision`` equals the compacted revision works (it needs only later
events); one below it raises :class:`CompactedError`.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from . import sqlite_reads as reads
from .interface import (
    CompactedError,
    Event,
    KeyValue,
    LeaseNotFoundError,
    RangeResult,
    Store,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
    Watch,
    check_key,
    check_limit,
    check_prefix,
    check_revision,
    check_value,
)
from .sqlite_schema import connect_reader, connect_writer
from .sqlite_threads import DbThreads, Job, settle
from .sqlite_watch import REPLAY_PAGE, SqliteWatch, WatchHub
from .sqlite_writes import LogWriter

log = logging.getLogger(__name__)

T = TypeVar("T")

# Two readers: this is mostly a 2-CPU control-plane node, and SQLite releases the GIL while it
# reads, so a second reader overlaps with the writer's fsync and with the other reader.
READER_THREADS = 2


def check_lease_id(lease: object) -> int:
    if isinstance(lease, bool) or not isinstance(lease, int):
        raise TypeError(f"lease ids are int, not {type(lease).__name__}")
    if lease < 0:
        raise ValueError(f"lease id {lease} is negative")
    return lease


def check_ttl(ttl: object) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise TypeError(f"lease TTLs are whole seconds (int), not {type(ttl).__name__}")
    if ttl <= 0:
        raise ValueError(f"lease TTL {ttl} is not positive")
    return ttl


def _run_reads(conn: sqlite3.Connection, jobs: list[Job[sqlite3.Connection]]) -> Callable[[], None]:
    outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
    for job in jobs:
        try:
            outcomes.append((job.future, job.fn(conn), None))
        except StoreError as e:
            outcomes.append((job.future, None, e))
        except sqlite3.Error as e:
            outcomes.append((job.future, None, StoreUnavailableError(f"sqlite store read failed: {e!r}")))
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    return lambda: settle(outcomes)


class SqliteStore(Store):
    """Use :meth:`open`; the constructor is internal."""

    def __init__(
        self,
        path: str,
        loop: asyncio.AbstractEventLoop,
        *,
        watch_buffer: int,
        lock_fd: int,
    ) -> None:
        self.path = path
        self._loop = loop
        self._watch_buffer = watch_buffer
        self._lock_fd = lock_fd
        self._hub = WatchHub()
        self._closed = False
        self._revision = 0
        self._compacted = 0
        self._lease_expiry: dict[int, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._compaction_lock = asyncio.Lock()
        self._writer_state: LogWriter | None = None
        self._writer = DbThreads("sqlite-writer", loop, self._connect_writer, self._run_writes)
        self._readers = DbThreads(
            "sqlite-reader", loop, lambda: connect_reader(path), _run_reads, threads=READER_THREADS
        )

    @classmethod
    async def open(
        cls,
        path: str,
        *,
        watch_buffer: int = 1000,
        compact_interval: float | None = 300.0,
        compact_keep: int = 1000,
        lease_check_interval: float = 0.5,
    ) -> SqliteStore:
        """Open (creating if needed) the store in the SQLite file ``path``.

        One process at a time: a second open of the same file fails with
        :class:`StoreUnavailableError` (the revision counter lives in the writer).
        """
        if not isinstance(path, str) or not path:
            raise TypeError("path must be a non-empty str")
        if isinstance(watch_buffer, bool) or not isinstance(watch_buffer, int) or watch_buffer <= 0:
            raise ValueError(f"watch_buffer must be a positive int, not {watch_buffer!r}")
        if compact_interval is not None and not compact_interval > 0:
            raise ValueError(f"compact_interval must be positive or None, not {compact_interval!r}")
        if isinstance(compact_keep, bool) or not isinstance(compact_keep, int) or compact_keep < 0:
            raise ValueError(f"compact_keep must be a non-negative int, not {compact_keep!r}")
        if not lease_check_interval > 0:
            raise ValueError(f"lease_check_interval must be positive, not {lease_check_interval!r}")
        lock_fd = _lock(path)
        store = cls(path, asyncio.get_running_loop(), watch_buffer=watch_buffer, lock_fd=lock_fd)
        try:
            await store._writer.start()
            revision, compacted, leases = await store._writer.submit(
                lambda w: (w.revision, w.compacted, w.leases())
            )
            await store._readers.start()
        except BaseException as e:
            await store._writer.stop()
            await store._readers.stop()
            os.close(lock_fd)
            if isinstance(e, sqlite3.Error):
                raise StoreUnavailableError(f"cannot open sqlite store {path!r}: {e}") from e
            raise
        store._revision, store._compacted, store._lease_expiry = revision, compacted, leases
        store._tasks.append(asyncio.create_task(store._reap_leases(lease_check_interval)))
        if compact_interval is not None:
            compactor = store._compact_periodically(compact_interval, compact_keep)
            store._tasks.append(asyncio.create_task(compactor))
        return store

    # -- plumbing -------------------------------------------------------------------------------

    def _connect_writer(self) -> sqlite3.Connection:
        conn = connect_writer(self.path)
        self._writer_state = LogWriter(conn)
        return conn

    def _run_writes(self, conn: sqlite3.Connection, jobs: list[Job[Any]]) -> Callable[[], None]:
        assert self._writer_state is not None
        return self._writer_state.run_batch(jobs, self._on_commit)

    def _on_commit(self, events: list[Event], revision: int) -> None:
        self._revision = max(self._revision, revision)
        self._hub.publish(events)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"sqlite store {self.path!r} is closed")

    async def _write(self, fn: Callable[[LogWriter], T]) -> T:
        self._check_open()
        return await self._writer.submit(fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._check_open()
        return await self._readers.submit(fn)

    # -- keys -----------------------------------------------------------------------------------

    async def get(self, key: str, revision: int | None = None) -> KeyValue | None:
        kb = check_key(key).encode()
        rev = check_revision(revision)
        if rev:
            return await self._read(lambda c: reads.get_at(c, kb, rev))
        return await self._read(lambda c: reads.get_current(c, kb))

    async def range(
        self,
        prefix: str,
        limit: int = 0,
        start_after: str | None = None,
        revision: int | None = None,
    ) -> RangeResult:
        pb = check_prefix(prefix).encode()
        check_limit(limit)
        after = None if start_after is None else check_key(start_after).encode()
        rev = check_revision(revision)
        return await self._read(lambda c: reads.range_keys(c, pb, limit, after, rev))

    async def create(self, key: str, value: bytes, lease: int = 0) -> KeyValue:
        key, value, lease = check_key(key), check_value(value), check_lease_id(lease)
        return await self._write(lambda w: w.create(key, value, lease))

    async def update(self, key: str, value: bytes, expected_mod_revision: int, lease: int = 0) -> KeyValue:
        key, value, lease = check_key(key), check_value(value), check_lease_id(lease)
        expected = check_revision(expected_mod_revision, allow_none=False)
        assert expected is not None
        return await self._write(lambda w: w.update(key, value, expected, lease))

    async def delete(self, key: str, expected_mod_revision: int | None = None) -> KeyValue:
        key = check_key(key)
        expected = check_revision(expected_mod_revision)
        return await self._write(lambda w: w.delete(key, expected))

    # -- watches --------------------------------------------------------------------------------

    def watch(self, prefix: str, from_revision: int) -> Watch:
        prefix = check_prefix(prefix)
        start = check_revision(from_revision, allow_none=False)
        assert start is not None
        self._check_open()
        if 0 < start < self._compacted:
            raise CompactedError(start, self._compacted)
        pb = prefix.encode()

        async def history(after: int) -> list[Event]:
            return await self._read(lambda c: reads.history(c, pb, after, start, REPLAY_PAGE))

        return SqliteWatch(self._hub, prefix, start, self._watch_buffer, history)

    # -- revisions ------------------------------------------------------------------------------

    async def current_revision(self) -> int:
        self._check_open()
        return self._revision

    async def compacted_revision(self) -> int:
        self._check_open()
        return self._compacted

    async def compact(self, revision: int) -> None:
        rev = check_revision(revision, allow_none=False)
        assert rev is not None
        # One compaction at a time; the steps run as separate writer jobs so that writes queued
        # meanwhile are served between them.
        async with self._compaction_lock:
            if not await self._write(lambda w: w.begin_compaction(rev)):
                return
            self._compacted = max(self._compacted, rev)
            after: int | None = 0
            while after is not None:
                step = functools.partial(LogWriter.compact_step, after=after, revision=rev)
                after = await self._write(step)

    async def _compact_periodically(self, interval: float, keep: int) -> None:
        while True:
            await asyncio.sleep(interval)
            target = self._revision - keep
            if target <= self._compacted:
                continue
            try:
                await self.compact(target)
            except StoreClosedError:
                return
            except StoreError as e:  # e.g. an I/O error: try again next round
                log.warning("periodic compaction to %d failed: %s", target, e)

    # -- leases ---------------------------------------------------------------------------------

    async def grant_lease(self, ttl_seconds: int) -> int:
        ttl = check_ttl(ttl_seconds)
        lease, expires_at = await self._write(lambda w: w.grant_lease(ttl))
        self._lease_expiry[lease] = expires_at
        return lease

    async def keepalive_lease(self, lease_id: int) -> int:
        lease = check_lease_id(lease_id)
        ttl, expires_at = await self._write(lambda w: w.keepalive_lease(lease))
        self._lease_expiry[lease] = expires_at
        return ttl

    async def revoke_lease(self, lease_id: int) -> None:
        lease = check_lease_id(lease_id)
        try:
            await self._write(lambda w: w.revoke_lease(lease))
        finally:
            self._lease_expiry.pop(lease, None)

    async def _reap_leases(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            now = time.time()
            for lease, expires_at in list(self._lease_expiry.items()):
                if expires_at > now:
                    continue
                try:
                    revoked = await self._write(
                        functools.partial(LogWriter.revoke_lease, lease=lease, only_if_expired=True)
                    )
                except LeaseNotFoundError:
                    revoked = True
                except StoreClosedError:
                    return
                except StoreError as e:
                    log.warning("expiring lease %d failed: %s", lease, e)
                    continue
                if revoked and self._lease_expiry.get(lease) == expires_at:
                    del self._lease_expiry[lease]

    # -- closing --------------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._hub.end_all(StoreClosedError(f"sqlite store {self.path!r} was closed"))
        await self._writer.stop()
        await self._readers.stop()
        os.close(self._lock_fd)


def _lock(path: str) -> int:
    """Hold an exclusive lock on ``path``-lock while open, so two processes never share the log."""
    try:
        fd = os.open(path + "-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise StoreUnavailableError(f"cannot open sqlite store {path!r}: {e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        raise StoreUnavailableError(f"sqlite store {path!r} is in use by another process") from e
    return fd


__all__ = ["SqliteStore"]
