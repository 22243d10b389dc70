"""Watches of the SQLite store: replay from the log, then live events from a bounded buffer.

A watch subscribes to the hub *before* it reads any history, so every event committed after the
history snapshot is in its live buffer; events that are in both are told apart by revision. The
buffer holds ``watch_buffer`` events; when a writer would overflow it, the watch is marked dropped
(writers never wait for watchers) and its reader gets what was buffered - a contiguous run - then
:class:`WatchDroppedError`, never a silent gap.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

from .interface import Event, StoreError, Watch, WatchDroppedError

# Events one history read returns; replay pages until it catches up with the live buffer.
REPLAY_PAGE = 500

# history(after_revision) -> the next page of events under the prefix (raises CompactedError).
HistoryReader = Callable[[int], Awaitable[list[Event]]]


class WatchHub:
    """Every open watch of one store; the writer's commits are published here, in revision order."""

    def __init__(self) -> None:
        self._watches: set[SqliteWatch] = set()

    def add(self, watch: SqliteWatch) -> None:
        self._watches.add(watch)

    def discard(self, watch: SqliteWatch) -> None:
        self._watches.discard(watch)

    def publish(self, events: list[Event]) -> None:
        if events:
            for watch in list(self._watches):
                watch.offer(events)

    def end_all(self, error: StoreError) -> None:
        for watch in list(self._watches):
            watch.end(error)
        self._watches.clear()

    def __len__(self) -> int:
        return len(self._watches)


class SqliteWatch(Watch):
    def __init__(
        self, hub: WatchHub, prefix: str, from_revision: int, buffer: int, history: HistoryReader
    ) -> None:
        self._hub = hub
        self._prefix = prefix
        self._from = from_revision
        self._buffer_size = buffer
        self._history = history
        self._live: deque[Event] = deque()
        # The newest revision handed to (or skipped for) the reader; live events at or below it are
        # duplicates of replayed ones. A watch from a future revision starts above "now".
        self._delivered = from_revision
        self._error: StoreError | None = None
        self._closed = False
        self._wakeup: asyncio.Future[None] | None = None
        self._iterator: AsyncIterator[Event] | None = None
        hub.add(self)

    # -- writer side (event loop thread, from the commit callback) ------------------------------

    def offer(self, events: list[Event]) -> None:
        if self._error is not None or self._closed:
            return
        for event in events:
            if event.revision <= self._delivered or not event.kv.key.startswith(self._prefix):
                continue
            if len(self._live) >= self._buffer_size:
                self.end(
                    WatchDroppedError(
                        f"watch on {self._prefix!r} fell {self._buffer_size} events behind at "
                        f"revision {event.revision}; re-list and watch again"
                    )
                )
                return
            self._live.append(event)
        self._wake()

    def end(self, error: StoreError) -> None:
        """End the stream with ``error`` once the buffered events are read."""
        if self._error is None and not self._closed:
            self._error = error
        self._hub.discard(self)
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    # -- reader side ----------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Event]:
        if self._iterator is None:
            self._iterator = self._events()
        return self._iterator

    async def close(self) -> None:
        self._closed = True
        self._hub.discard(self)
        self._live.clear()
        self._wake()

    async def _events(self) -> AsyncIterator[Event]:
        if self._from > 0:
            async for event in self._replay():
                yield event
        while not self._closed:
            if self._live:
                event = self._live.popleft()
                if event.revision > self._delivered:
                    self._delivered = event.revision
                    yield event
                continue
            if self._error is not None:
                raise self._error
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None

    async def _replay(self) -> AsyncIterator[Event]:
        while not self._closed:
            # The live buffer already continues right after what was delivered: no read needed.
            if self._live and self._live[0].revision <= self._delivered + 1:
                return
            if self._error is not None and not isinstance(self._error, WatchDroppedError):
                raise self._error
            page = await self._history(self._delivered)
            for event in page:
                if self._closed:
                    return
                self._delivered = event.revision
                yield event
            if len(page) < REPLAY_PAGE:
                return
