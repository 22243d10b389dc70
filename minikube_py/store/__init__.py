"""The cluster store: one interface (:mod:`.interface`), two backends (``sqlite``, ``etcd``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from .etcd_tls import EtcdTLS

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


async def open_store(url: str, etcd_tls: EtcdTLS | None = None) -> Store:
    """Open a store from a URL: ``sqlite:///path/to/db`` or ``etcd://host:port[,host:port...]``
    (endpoints may carry ``http://`` or ``https://``; ``etcd_tls`` gives the CA and client pair)."""
    if url.startswith("sqlite://"):
        from .sqlite import SqliteStore

        if etcd_tls is not None:
            raise ValueError("etcd TLS files are given but the store is SQLite")
        return await SqliteStore.open(url.removeprefix("sqlite://"))
    if url.startswith("etcd://"):
        import os

        # gRPC's C core prints TLS failures to stderr itself ("E1123 ... Corruption detected"); the
        # store reports each of them in words, so a command's error stays one line. Only takes
        # effect before grpc is first imported; an explicit GRPC_VERBOSITY wins.
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        from .etcd import EtcdStore

        endpoints = [e for e in url.removeprefix("etcd://").split(",") if e]
        return await EtcdStore.open(endpoints, tls=etcd_tls)
    raise ValueError(f"unknown store URL {url!r}: use sqlite:///path or etcd://host:port[,host:port]")
