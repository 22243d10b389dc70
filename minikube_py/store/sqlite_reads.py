"""Read queries of the SQLite store; they run on reader threads, each in one snapshot (WAL)."""

from __future__ import annotations

import sqlite3
from typing import Any

from .interface import (
    CompactedError,
    Event,
    EventType,
    FutureRevisionError,
    KeyValue,
    RangeResult,
)
from .sqlite_schema import prefix_end

KV_COLUMNS = "l.key, l.value, l.create_rev, l.rev, l.version, l.lease"


def row_to_kv(row: tuple[Any, ...]) -> KeyValue:
    key, value, create_rev, rev, version, lease = row[:6]
    return KeyValue(key.decode(), value, create_rev, rev, version, lease)


def read_meta(conn: sqlite3.Connection) -> tuple[int, int]:
    """(current revision, compacted revision)."""
    meta = dict(conn.execute("SELECT name, value FROM meta WHERE name IN ('revision', 'compacted')"))
    return meta["revision"], meta["compacted"]


def check_readable(requested: int, current: int, compacted: int) -> None:
    # etcd can read at exactly the compacted revision: compaction keeps each key's state as of it.
    if requested > current:
        raise FutureRevisionError(requested, current)
    if requested < compacted:
        raise CompactedError(requested, compacted)


def get_current(conn: sqlite3.Connection, key: bytes) -> KeyValue | None:
    row = conn.execute(
        f"SELECT {KV_COLUMNS} FROM current c JOIN log l ON l.rev = c.rev WHERE c.key = ?", (key,)
    ).fetchone()
    return row_to_kv(row) if row else None


def get_at(conn: sqlite3.Connection, key: bytes, revision: int) -> KeyValue | None:
    conn.execute("BEGIN")
    try:
        check_readable(revision, *read_meta(conn))
        row = conn.execute(
            f"SELECT {KV_COLUMNS}, l.deleted FROM log l WHERE l.key = ? AND l.rev <= ? "
            "ORDER BY l.rev DESC LIMIT 1",
            (key, revision),
        ).fetchone()
    finally:
        conn.execute("COMMIT")
    if row is None or row[6]:
        return None
    return row_to_kv(row)


def _key_bounds(column: str, prefix: bytes, start_after: bytes | None) -> tuple[str, list[Any]]:
    conds = [f"{column} >= ?"]
    params: list[Any] = [prefix]
    end = prefix_end(prefix)
    if end is not None:
        conds.append(f"{column} < ?")
        params.append(end)
    if start_after is not None:
        conds.append(f"{column} > ?")
        params.append(start_after)
    return " AND ".join(conds), params


def range_keys(
    conn: sqlite3.Connection, prefix: bytes, limit: int, start_after: bytes | None, revision: int | None
) -> RangeResult:
    conn.execute("BEGIN")
    try:
        current, compacted = read_meta(conn)
        if revision:
            check_readable(revision, current, compacted)
        at = revision or current
        limit_sql = " LIMIT ?" if limit else ""
        limit_params = [limit] if limit else []
        if at == current:
            where, params = _key_bounds("c.key", prefix, start_after)
            rows = conn.execute(
                f"SELECT {KV_COLUMNS} FROM current c JOIN log l ON l.rev = c.rev WHERE {where} "
                f"ORDER BY c.key{limit_sql}",
                [*params, *limit_params],
            ).fetchall()
            count_sql = f"SELECT count(*) FROM current c WHERE {where}"
        else:
            where, params = _key_bounds("key", prefix, start_after)
            # Each key's newest row at or before ``at``; the key exists then unless that row is a tombstone.
            newest = f"SELECT key, MAX(rev) AS rev FROM log WHERE {where} AND rev <= ? GROUP BY key"
            params = [*params, at]
            rows = conn.execute(
                f"SELECT {KV_COLUMNS} FROM ({newest}) m JOIN log l ON l.rev = m.rev WHERE l.deleted = 0 "
                f"ORDER BY l.key{limit_sql}",
                [*params, *limit_params],
            ).fetchall()
            count_sql = f"SELECT count(*) FROM ({newest}) m JOIN log l ON l.rev = m.rev WHERE l.deleted = 0"
        if limit and len(rows) == limit:
            count = conn.execute(count_sql, params).fetchone()[0]
        else:
            count = len(rows)
    finally:
        conn.execute("COMMIT")
    return RangeResult([row_to_kv(r) for r in rows], at, count > len(rows), count)


def history(
    conn: sqlite3.Connection, prefix: bytes, after: int, requested: int, page: int
) -> list[Event]:
    """Up to ``page`` events on keys under ``prefix`` with revision > ``after``, oldest first.

    ``requested`` is the watch's from_revision, for the error message only.
    """
    conn.execute("BEGIN")
    try:
        _, compacted = read_meta(conn)
        # Compaction removed events <= compacted; continuing from before it would skip some.
        if after < compacted:
            raise CompactedError(requested, compacted)
        where, params = _key_bounds("l.key", prefix, None)
        rows = conn.execute(
            f"SELECT {KV_COLUMNS}, l.deleted, p.value, p.create_rev, p.rev, p.version, p.lease "
            f"FROM log l LEFT JOIN log p ON p.rev = l.prev_rev AND l.prev_rev != 0 "
            f"WHERE l.rev > ? AND {where} ORDER BY l.rev LIMIT ?",
            [after, *params, page],
        ).fetchall()
    finally:
        conn.execute("COMMIT")
    events = []
    for row in rows:
        key = row[0].decode()
        prev = None
        if row[8] is not None:
            prev = KeyValue(key, row[7], row[8], row[9], row[10], row[11])
        if row[6]:
            events.append(Event(EventType.DELETE, KeyValue(key, b"", 0, row[3], 0, 0), prev))
        else:
            events.append(Event(EventType.PUT, row_to_kv(row), prev))
    return events
