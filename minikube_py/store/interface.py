"""The one store interface the API server uses, with etcd v3 semantics.

Both backends (``sqlite`` embedded, ``etcd`` real) implement :class:`Store`. Keys are text
(``/registry/<resource>/<namespace>/<name>``), values are bytes. Every write gets the next
cluster-wide revision; each key keeps ``create_revision``, ``mod_revision`` and ``version`` as etcd
does, so the API server can use ``mod_revision`` as an object's resourceVersion.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

# etcd's default request limit (--max-request-bytes) is 1.5 MiB; Kubernetes objects never exceed it.
MAX_VALUE_BYTES = 1536 * 1024


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class KeyExistsError(StoreError):
    """``create`` found the key already present."""

    def __init__(self, key: str, current: KeyValue | None = None) -> None:
        super().__init__(f"key {key!r} already exists")
        self.key = key
        self.current = current


class KeyNotFoundError(StoreError):
    """``update`` or ``delete`` found no such key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key {key!r} not found")
        self.key = key


class ConflictError(StoreError):
    """A guarded write saw another mod_revision; ``current`` is what is there now (None: deleted)."""

    def __init__(self, key: str, expected: int, current: KeyValue | None) -> None:
        have = current.mod_revision if current is not None else "nothing"
        super().__init__(f"key {key!r}: expected mod_revision {expected}, found {have}")
        self.key = key
        self.expected = expected
        self.current = current


class CompactedError(StoreError):
    """The requested revision was compacted away; the API server maps this to 410 Gone."""

    def __init__(self, requested: int, compact_revision: int) -> None:
        super().__init__(
            f"required revision {requested} has been compacted (compacted up to {compact_revision})"
        )
        self.requested = requested
        self.compact_revision = compact_revision


class FutureRevisionError(StoreError):
    """The requested revision is newer than the store's current revision."""

    def __init__(self, requested: int, current: int) -> None:
        super().__init__(f"required revision {requested} is a future revision (current is {current})")
        self.requested = requested
        self.current = current


class WatchDroppedError(StoreError):
    """A watcher fell too far behind and its stream was ended; the client must re-list."""


class ValueTooLargeError(StoreError, ValueError):
    """A value over :data:`MAX_VALUE_BYTES`."""


class LeaseNotFoundError(StoreError):
    """An unknown or expired lease id."""


class StoreClosedError(StoreError):
    """An operation on a store that was closed."""


class StoreUnavailableError(StoreError):
    """No backend endpoint answered (every etcd endpoint down, disk gone, ...)."""


class EventType(enum.Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    """One change. For DELETE, ``kv.value`` is empty, ``kv.mod_revision`` is the delete's revision,
    and ``prev_kv`` is the value that was deleted (always set for DELETE)."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@dataclass(frozen=True, slots=True)
class RangeResult:
    items: list[KeyValue]
    revision: int  # the revision the range was read at
    more: bool  # True when ``limit`` cut the result
    count: int  # how many keys match the prefix at that revision (after start_after)


class Watch(abc.ABC):
    """An open watch. Iterate it for events; ``close()`` ends it (iteration then stops).

    The stream ends with :class:`WatchDroppedError` when the watcher falls behind, with
    :class:`CompactedError` when ``from_revision`` is compacted, and with :class:`StoreClosedError`
    when the store closes. It never skips an event silently.
    """

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[Event]: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Store(abc.ABC):
    """A revisioned key-value store with etcd v3 semantics. Safe to share within one event loop."""

    @abc.abstractmethod
    async def get(self, key: str, revision: int | None = None) -> KeyValue | None:
        """The key's value at ``revision`` (default: now), or None."""

    @abc.abstractmethod
    async def range(
        self,
        prefix: str,
        limit: int = 0,
        start_after: str | None = None,
        revision: int | None = None,
    ) -> RangeResult:
        """Keys starting with ``prefix`` in key order, after ``start_after`` if given, at most
        ``limit`` of them (0: all), as of ``revision`` (default: now)."""

    @abc.abstractmethod
    async def create(self, key: str, value: bytes, lease: int = 0) -> KeyValue:
        """Write a new key; raise :class:`KeyExistsError` if present."""

    @abc.abstractmethod
    async def update(
        self, key: str, value: bytes, expected_mod_revision: int, lease: int = 0
    ) -> KeyValue:
        """Overwrite a key if its mod_revision is ``expected_mod_revision``; else
        :class:`ConflictError` (or :class:`KeyNotFoundError` when it is gone)."""

    @abc.abstractmethod
    async def delete(self, key: str, expected_mod_revision: int | None = None) -> KeyValue:
        """Delete a key, guarded by ``expected_mod_revision`` when given (:class:`ConflictError`);
        :class:`KeyNotFoundError` when absent. Returns the value as it was before the delete."""

    async def guaranteed_update(
        self,
        key: str,
        update_fn: Callable[[KeyValue | None], Awaitable[bytes | None] | bytes | None],
        *,
        create_if_missing: bool = False,
        max_attempts: int = 100,
    ) -> KeyValue | None:
        """Read-modify-write with retry on conflict.

        ``update_fn`` gets the current value (None when the key is missing) and returns the new
        bytes, or None to leave the key as it is. Raises :class:`KeyNotFoundError` when the key is
        missing and ``create_if_missing`` is false.
        """
        for _ in range(max_attempts):
            current = await self.get(key)
            if current is None and not create_if_missing:
                raise KeyNotFoundError(key)
            new = update_fn(current)
            if isinstance(new, Awaitable):
                new = await new
            if new is None:
                return current
            try:
                if current is None:
                    return await self.create(key, new)
                return await self.update(key, new, current.mod_revision)
            except (ConflictError, KeyExistsError, KeyNotFoundError):
                continue
        raise ConflictError(key, -1, None)

    @abc.abstractmethod
    def watch(self, prefix: str, from_revision: int) -> Watch:
        """Every PUT and DELETE on keys under ``prefix`` with revision > ``from_revision``, in
        revision order. ``from_revision=0`` means "from now"."""

    @abc.abstractmethod
    async def current_revision(self) -> int: ...

    @abc.abstractmethod
    async def compact(self, revision: int) -> None:
        """Forget history up to and including ``revision`` (the newest value of each key stays)."""

    @abc.abstractmethod
    async def compacted_revision(self) -> int: ...

    @abc.abstractmethod
    async def grant_lease(self, ttl_seconds: int) -> int:
        """A new lease; keys attached to it are deleted (with DELETE events) when it expires."""

    @abc.abstractmethod
    async def keepalive_lease(self, lease_id: int) -> int:
        """Renew a lease; return its TTL. :class:`LeaseNotFoundError` if expired."""

    @abc.abstractmethod
    async def revoke_lease(self, lease_id: int) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """Release resources; later calls raise :class:`StoreClosedError`. Idempotent."""

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def check_key(key: object) -> str:
    """Validate a key argument; shared by both backends so they reject the same input."""
    if not isinstance(key, str):
        raise TypeError(f"store keys are str, not {type(key).__name__}")
    if not key or "\x00" in key:
        raise ValueError("store keys must be non-empty and contain no NUL")
    return key


def check_prefix(prefix: object, what: str = "prefix") -> str:
    """Validate a prefix (or range start) argument; unlike a key it may be empty."""
    if not isinstance(prefix, str):
        raise TypeError(f"store {what}es are str, not {type(prefix).__name__}")
    if "\x00" in prefix:
        raise ValueError(f"store {what}es contain no NUL")
    return prefix


def check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit is an int, not {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"limit {limit} is negative")
    return limit


def check_value(value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"store values are bytes, not {type(value).__name__}")
    value = bytes(value)
    if len(value) > MAX_VALUE_BYTES:
        raise ValueTooLargeError(
            f"value of {len(value)} bytes exceeds the {MAX_VALUE_BYTES}-byte limit"
        )
    return value


def check_revision(revision: object, *, allow_none: bool = True) -> int | None:
    if revision is None and allow_none:
        return None
    if isinstance(revision, bool) or not isinstance(revision, int):
        raise TypeError(f"revisions are int, not {type(revision).__name__}")
    if revision < 0:
        raise ValueError(f"revision {revision} is negative")
    return revision
