"""Write transactions of the SQLite store; they run on the one writer thread.

:class:`LogWriter` owns the revision counter. A batch of queued writes runs in one transaction
(group commit); each write checks its guard before touching anything, so a failed guard
(:class:`KeyExistsError`, :class:`ConflictError`, ...) leaves the batch's other writes intact and
takes no revision. Events are collected per batch and published only after COMMIT returned.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from .interface import (
    CompactedError,
    ConflictError,
    Event,
    EventType,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    LeaseNotFoundError,
    StoreError,
    StoreUnavailableError,
)
from .sqlite_reads import get_current, read_meta
from .sqlite_threads import Job, settle

# Rows one compaction step deletes: small enough that writes queued behind it wait only milliseconds.
COMPACT_CHUNK_ROWS = 5000


class LogWriter:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.revision, self.compacted = read_meta(conn)
        self.events: list[Event] = []

    def leases(self) -> dict[int, float]:
        return dict(self.conn.execute("SELECT id, expires_at FROM leases"))

    # -- the batch ---------------------------------------------------------------------------

    def run_batch(
        self, jobs: list[Job[LogWriter]], on_commit: Callable[[list[Event], int], None]
    ) -> Callable[[], None]:
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        start_revision, start_compacted = self.revision, self.compacted
        self.events = []
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for job in jobs:
                    try:
                        outcomes.append((job.future, job.fn(self), None))
                    except StoreError as e:
                        outcomes.append((job.future, None, e))
                if self.revision != start_revision:
                    conn.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (self.revision,))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except Exception as e:  # disk full, I/O error, a bug: nothing of this batch happened
            self.revision, self.compacted = start_revision, start_compacted
            failure = StoreUnavailableError(f"sqlite store write failed: {e!r}")
            return functools.partial(settle, [(j.future, None, failure) for j in jobs])
        events, self.events = self.events, []
        revision = self.revision

        def deliver() -> None:
            on_commit(events, revision)  # publish first: whoever resumes on a result sees its event sent
            settle(outcomes)

        return deliver

    def _next_revision(self) -> int:
        self.revision += 1
        return self.revision

    def _current(self, key: bytes) -> KeyValue | None:
        return get_current(self.conn, key)

    def _check_lease(self, lease: int) -> None:
        if lease == 0:
            return
        row = self.conn.execute("SELECT expires_at FROM leases WHERE id = ?", (lease,)).fetchone()
        if row is None or row[0] <= time.time():
            raise LeaseNotFoundError(f"lease {lease} not found or expired")

    # -- keys -----------------------------------------------------------------------------------

    def create(self, key: str, value: bytes, lease: int) -> KeyValue:
        kb = key.encode()
        current = self._current(kb)
        if current is not None:
            raise KeyExistsError(key, current)
        self._check_lease(lease)
        rev = self._next_revision()
        self.conn.execute("INSERT INTO log VALUES (?, ?, ?, ?, 0, 1, 0, ?)", (rev, kb, value, rev, lease))
        self.conn.execute("INSERT INTO current VALUES (?, ?, ?)", (kb, rev, lease))
        kv = KeyValue(key, value, rev, rev, 1, lease)
        self.events.append(Event(EventType.PUT, kv))
        return kv

    def update(self, key: str, value: bytes, expected_mod_revision: int, lease: int) -> KeyValue:
        kb = key.encode()
        current = self._current(kb)
        if current is None:
            raise KeyNotFoundError(key)
        if current.mod_revision != expected_mod_revision:
            raise ConflictError(key, expected_mod_revision, current)
        self._check_lease(lease)
        rev = self._next_revision()
        version = current.version + 1
        self.conn.execute(
            "INSERT INTO log VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
            (rev, kb, value, current.create_revision, current.mod_revision, version, lease),
        )
        self.conn.execute("UPDATE current SET rev = ?, lease = ? WHERE key = ?", (rev, lease, kb))
        kv = KeyValue(key, value, current.create_revision, rev, version, lease)
        self.events.append(Event(EventType.PUT, kv, current))
        return kv

    def delete(self, key: str, expected_mod_revision: int | None) -> KeyValue:
        kb = key.encode()
        current = self._current(kb)
        if current is None:
            raise KeyNotFoundError(key)
        if expected_mod_revision is not None and current.mod_revision != expected_mod_revision:
            raise ConflictError(key, expected_mod_revision, current)
        self._delete(kb, current)
        return current

    def _delete(self, kb: bytes, current: KeyValue) -> None:
        rev = self._next_revision()
        self.conn.execute(
            "INSERT INTO log VALUES (?, ?, x'', ?, ?, 0, 1, 0)",
            (rev, kb, current.create_revision, current.mod_revision),
        )
        self.conn.execute("DELETE FROM current WHERE key = ?", (kb,))
        # Like etcd's tombstone: no value, no create_revision, version 0.
        self.events.append(Event(EventType.DELETE, KeyValue(current.key, b"", 0, rev, 0, 0), current))

    # -- leases ---------------------------------------------------------------------------------

    def grant_lease(self, ttl: int) -> tuple[int, float]:
        expires_at = time.time() + ttl
        cur = self.conn.execute("INSERT INTO leases (ttl, expires_at) VALUES (?, ?)", (ttl, expires_at))
        assert cur.lastrowid is not None
        return cur.lastrowid, expires_at

    def keepalive_lease(self, lease: int) -> tuple[int, float]:
        row = self.conn.execute("SELECT ttl, expires_at FROM leases WHERE id = ?", (lease,)).fetchone()
        now = time.time()
        if row is None or row[1] <= now:
            raise LeaseNotFoundError(f"lease {lease} not found or expired")
        expires_at = now + row[0]
        self.conn.execute("UPDATE leases SET expires_at = ? WHERE id = ?", (expires_at, lease))
        return row[0], expires_at

    def revoke_lease(self, lease: int, *, only_if_expired: bool = False) -> bool:
        """Delete the lease and its keys (each delete at its own revision); False if not yet due."""
        row = self.conn.execute("SELECT expires_at FROM leases WHERE id = ?", (lease,)).fetchone()
        if row is None:
            raise LeaseNotFoundError(f"lease {lease} not found")
        if only_if_expired and row[0] > time.time():
            return False  # renewed after the reaper looked
        keys = self.conn.execute(
            "SELECT key FROM current WHERE lease = ? ORDER BY key", (lease,)
        ).fetchall()
        for (kb,) in keys:
            current = self._current(kb)
            if current is not None:
                self._delete(kb, current)
        self.conn.execute("DELETE FROM leases WHERE id = ?", (lease,))
        return True

    # -- compaction -----------------------------------------------------------------------------

    def begin_compaction(self, revision: int) -> bool:
        """Record the new compacted revision (reads below it fail from now on); False: nothing to do."""
        if revision > self.revision:
            raise FutureRevisionError(revision, self.revision)
        if revision < self.compacted:
            raise CompactedError(revision, self.compacted)
        if revision == self.compacted:
            return False
        self.conn.execute("UPDATE meta SET value = ? WHERE name = 'compacted'", (revision,))
        self.compacted = revision
        return True

    def compact_step(self, after: int, revision: int) -> int | None:
        """Drop history in (after, next chunk end]: every row <= ``revision`` that is a tombstone or
        has a newer row of its key <= ``revision``. Returns where the next step starts (None: done).

        Rows a previous compaction kept (a key's newest value then) may be superseded now, so every
        step range starts from 0, not from the previous compacted revision.
        """
        row = self.conn.execute(
            "SELECT rev FROM log WHERE rev > ? AND rev <= ? ORDER BY rev LIMIT 1 OFFSET ?",
            (after, revision, COMPACT_CHUNK_ROWS - 1),
        ).fetchone()
        upto = row[0] if row else revision
        self.conn.execute(
            "DELETE FROM log WHERE rev > ? AND rev <= ? AND (deleted = 1 OR EXISTS ("
            "SELECT 1 FROM log n WHERE n.key = log.key AND n.rev > log.rev AND n.rev <= ?))",
            (after, upto, revision),
        )
        return upto if upto < revision else None
