"""client-go's rate-limited work queue, for asyncio.

The guarantees controllers build on, as in client-go's ``workqueue``:
- a key is queued at most once, however many times it is added before a worker takes it;
- a key is never handed to two workers at once: added while being processed, it is queued again
  only when the worker calls ``done``;
- ``add_after`` delays a key (the earliest of several pending delays wins), ``add_rate_limited``
  delays it by a per-key exponential back-off that ``forget`` resets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class ExponentialBackoff:
    """client-go's ItemExponentialFailureRateLimiter: ``base * 2**failures``, capped at ``cap``."""

    def __init__(self, base: float = 0.005, cap: float = 1000.0) -> None:
        if base <= 0 or cap < base:
            raise ValueError("need 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._failures: dict[str, int] = {}

    def when(self, key: str) -> float:
        """The delay before ``key``'s next attempt; each call counts one more failure."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        if n >= 64:  # 2**n would overflow a float's useful range long before; the cap applies anyway
            return self.cap
        return min(self.base * 2**n, self.cap)

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    def retries(self, key: str) -> int:
        return self._failures.get(key, 0)


class WorkQueue:
    """A deduplicating FIFO of keys with delayed and rate-limited adds."""

    def __init__(self, name: str = "", backoff: ExponentialBackoff | None = None) -> None:
        self.name = name
        self.backoff = backoff or ExponentialBackoff()
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()  # queued, or to be queued again when its processing is done
        self._processing: set[str] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._delayed: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        self._shutting_down = False

    def add(self, key: str) -> None:
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # done() queues it again, so no two workers ever hold the same key
        self._queue.append(key)
        self._wake_one()

    def add_after(self, key: str, delay: float) -> None:
        """Queue ``key`` after ``delay`` seconds; an earlier pending add of the same key wins."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        ready = loop.time() + delay
        pending = self._delayed.get(key)
        if pending is not None:
            if pending[0] <= ready:
                return
            pending[1].cancel()
        self._delayed[key] = (ready, loop.call_at(ready, self._fire, key))

    def add_rate_limited(self, key: str) -> None:
        self.add_after(key, self.backoff.when(key))

    def forget(self, key: str) -> None:
        """Stop counting ``key``'s failures (after a success)."""
        self.backoff.forget(key)

    def num_requeues(self, key: str) -> int:
        return self.backoff.retries(key)

    async def get(self) -> str | None:
        """The next key (the caller must call ``done(key)``), or None once the queue is shut down."""
        while not self._queue:
            if self._shutting_down:
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # A wake-up meant for this getter must not be lost: hand it on.
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()
                raise
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
        if self._shutting_down:
            return None
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty and not self._shutting_down:
            self._queue.append(key)
            self._wake_one()

    def shutdown(self) -> None:
        """Stop handing out keys: every get(), waiting or future, returns None."""
        self._shutting_down = True
        for _, handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def __len__(self) -> int:
        return len(self._queue)

    def _fire(self, key: str) -> None:
        self._delayed.pop(key, None)
        self.add(key)

    def _wake_one(self) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                return


async def run_workers(queue: WorkQueue, reconcile: Callable[[str], Awaitable[None]], workers: int = 1, *,
                      log: logging.Logger | None = None) -> None:
    """The sample-controller loop on ``workers`` tasks until the queue shuts down: take a key,
    reconcile it, forget its failures on success or requeue it with back-off on error."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    logger = log or logging.getLogger(__name__)

    async def worker() -> None:
        while (key := await queue.get()) is not None:
            try:
                await reconcile(key)
            except asyncio.CancelledError:
                queue.done(key)
                raise
            except Exception as e:
                # A 409 is optimistic concurrency doing its job: the retry reads the newer object.
                level = logging.DEBUG if getattr(e, "code", None) == 409 else logging.WARNING
                logger.log(level, "%s: error syncing %r (retry %d): %s: %s", queue.name or "queue", key,
                           queue.num_requeues(key) + 1, type(e).__name__, e)
                queue.add_rate_limited(key)
            else:
                queue.forget(key)
            queue.done(key)

    label = queue.name or "queue"
    tasks = [asyncio.create_task(worker(), name=f"{label}-worker-{i}") for i in range(workers)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
