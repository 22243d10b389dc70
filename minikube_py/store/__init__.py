"""The cluster store: one interface (:mod:`.interface`), two backends (``sqlite``, ``etcd``)."""

from __future__ import annotations

from .interface import (
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
    RangeResult,
    Store,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
    ValueTooLargeError,
    Watch,
    WatchDroppedError,
)

__all__ = [
    "MAX_VALUE_BYTES",
    "CompactedError",
    "ConflictError",
    "Event",
    "EventType",
    "FutureRevisionError",
    "KeyExistsError",
    "KeyNotFoundError",
    "KeyValue",
    "LeaseNotFoundError",
    "RangeResult",
    "Store",
    "StoreClosedError",
    "StoreError",
    "StoreUnavailableError",
    "ValueTooLargeError",
    "Watch",
    "WatchDroppedError",
    "open_store",
]


async def open_store(url: str) -> Store:
    """Open a store from a URL: ``sqlite:///path/to/db`` or ``etcd://host:port[,host:port...]``."""
    if url.startswith("sqlite://"):
        from .sqlite import SqliteStore

        return await SqliteStore.open(url.removeprefix("sqlite://"))
    if url.startswith("etcd://"):
        from .etcd import EtcdStore

        endpoints = [e for e in url.removeprefix("etcd://").split(",") if e]
        return await EtcdStore.open(endpoints)
    raise ValueError(f"unknown store URL {url!r}: use sqlite:///path or etcd://host:port[,host:port]")
