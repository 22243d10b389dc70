"""A store watch on etcd's own watch stream, re-established on another member when one is lost.

A background task reads etcd's stream into a bounded buffer; the consumer iterates the buffer.
The task remembers the revision after the last event it buffered, so when the member goes away it
re-creates the watch on the next endpoint from exactly there: etcd replays from its history, so the
consumer sees no gap and (events at or below the resume point being dropped) no duplicate. If
the history was compacted meanwhile the stream ends with :class:`CompactedError` instead.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable

import grpc
from aetcd import rpc

from .etcd_endpoints import (
    REQUIRE_LEADER,
    EndpointPool,
    Member,
    error_details,
    is_retryable,
    translate_rpc_error,
)
from .interface import (
    CompactedError,
    Event,
    EventType,
    KeyValue,
    StoreError,
    StoreUnavailableError,
    Watch,
    WatchDroppedError,
)


def kv_from_pb(kv: rpc.KeyValue) -> KeyValue:
    return KeyValue(
        key=kv.key.decode("utf-8", "surrogateescape"),
        value=bytes(kv.value),
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        lease=kv.lease,
    )


def event_from_pb(ev: rpc.Event) -> Event:
    kv = kv_from_pb(ev.kv)
    prev = kv_from_pb(ev.prev_kv) if ev.HasField("prev_kv") else None
    if ev.type == rpc.Event.DELETE:
        # etcd's DELETE kv carries only key and mod_revision; the interface wants the value empty
        # and the deleted value in prev_kv.
        return Event(EventType.DELETE, kv, prev)
    return Event(EventType.PUT, kv, prev)


class EtcdWatch(Watch):
    """One prefix watch; see the module docstring."""

    def __init__(
        self,
        pool: EndpointPool,
        key: bytes,
        range_end: bytes,
        from_revision: int,
        buffer: int,
        on_revision: Callable[[int], None],
        on_done: Callable[[EtcdWatch], None],
    ) -> None:
        self._pool = pool
        self._key = key
        self._range_end = range_end
        # The first revision not yet buffered: where a re-created watch starts.
        self._next = from_revision + 1
        self._buffer_size = buffer
        self._on_revision = on_revision
        self._on_done = on_done
        self._events: collections.deque[Event] = collections.deque()
        self._error: StoreError | None = None
        self._closed = False
        self._wakeup = asyncio.Event()
        self._call: grpc.aio.StreamStreamCall | None = None
        # Set once a stream delivered its first answer: the fail-over clock restarts after that.
        self._healthy = False
        self._streams_opened = 0
        self._task = asyncio.get_running_loop().create_task(self._run())

    # -- consumer side ---------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            if self._closed:
                return
            if self._events:
                yield self._events.popleft()
                continue
            if self._error is not None:
                raise self._error
            self._wakeup.clear()
            await self._wakeup.wait()

    @property
    def reconnects(self) -> int:
        """How many times the watch was re-established after losing its member."""
        return max(0, self._streams_opened - 1)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._events.clear()
        self._wakeup.set()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._on_done(self)

    def fail(self, error: StoreError) -> None:
        """End the stream with ``error`` after what is buffered (used when the store closes)."""
        if self._error is None:
            self._error = error
        self._wakeup.set()
        self._task.cancel()
        if self._call is not None:
            self._call.cancel()

    # -- producer side ---------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failing_since: float | None = None
        last: BaseException | None = None
        pause = 0.02
        try:
            while True:
                index = self._pool.current
                try:
                    await self._stream(await self._pool.ready(index, self._pool.first_try))
                    # The member ended the stream without an error status: treat it as lost.
                    last = None
                except grpc.aio.AioRpcError as err:
                    if not is_retryable(err) and err.code() != grpc.StatusCode.CANCELLED:
                        raise translate_rpc_error(err) from err
                    last = err
                except TimeoutError as err:
                    last = err
                except asyncio.CancelledError as err:
                    # grpc.aio raises CancelledError from a read on a call that was cancelled under
                    # it (a member going away can do that too); only our own task's cancellation
                    # may end the loop.
                    task = asyncio.current_task()
                    if self._closed or (task is not None and task.cancelling()):
                        raise
                    last = err
                self._pool.failed(index)
                now = loop.time()
                if failing_since is None or self._healthy:
                    failing_since = now
                    pause = 0.02
                self._healthy = False
                if now - failing_since > self._pool.timeout:
                    detail = error_details(last) if isinstance(last, grpc.aio.AioRpcError) else last
                    raise StoreUnavailableError(
                        f"watch lost its etcd member and none answered within {self._pool.timeout}s: {detail}"
                    )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.5)
        except StoreError as err:
            self._finish(err)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # never leave the consumer waiting on a dead task
            self._finish(StoreError(f"etcd watch failed: {err!r}"))

    async def _stream(self, member: Member) -> None:
        call = member.watch.Watch(metadata=REQUIRE_LEADER)
        self._call = call
        try:
            await call.write(
                rpc.WatchRequest(
                    create_request=rpc.WatchCreateRequest(
                        key=self._key,
                        range_end=self._range_end,
                        start_revision=self._next,
                        prev_kv=True,
                    )
                )
            )
            first = await asyncio.wait_for(call.read(), self._pool.first_try)
            if first is not grpc.aio.EOF:
                self._streams_opened += 1
            while first is not grpc.aio.EOF:
                self._handle(first)
                self._healthy = True
                first = await call.read()
        finally:
            self._call = None
            call.cancel()

    def _handle(self, resp: rpc.WatchResponse) -> None:
        self._on_revision(resp.header.revision)
        if resp.compact_revision:
            raise CompactedError(self._next - 1, resp.compact_revision)
        if resp.canceled:
            raise StoreError(f"etcd cancelled the watch: {resp.cancel_reason or 'no reason given'}")
        for pb in resp.events:
            rev = pb.kv.mod_revision
            if rev < self._next:
                continue  # replayed after a re-connect: already buffered
            if len(self._events) >= self._buffer_size:
                raise WatchDroppedError(
                    f"watcher fell more than {self._buffer_size} events behind; re-list and watch again"
                )
            self._events.append(event_from_pb(pb))
            self._wakeup.set()
        if resp.events:
            # Every event of one revision arrives in one response (etcd only splits a revision when
            # asked to fragment), so resuming after the last one's revision loses nothing.
            self._next = resp.events[-1].kv.mod_revision + 1

    def _finish(self, error: StoreError) -> None:
        if self._error is None:
            self._error = error
        self._wakeup.set()
