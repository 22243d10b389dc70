"""The scheduling queue: kube-scheduler's three sub-queues, for pod keys.

- active: ready to be tried now, highest spec.priority first, then first come first served;
- backoff: failed recently, waiting out a per-pod exponential back-off (1 s doubling to 10 s);
- unschedulable: failed and nothing has changed since; they wait for a cluster event (a node added
  or changed, a pod deleted, ...) that could make them fit, or for a 5-minute safety flush.

So unschedulable pods are retried when the cluster changes, never in a busy loop. A cluster event
that arrives while a pod is being tried is remembered (the "move request cycle"): if that attempt
then fails the pod goes to backoff, not to unschedulable, so the wake-up is not lost.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# kube-scheduler's defaults: podInitialBackoffDuration, podMaxBackoffDuration,
# podMaxInUnschedulablePodsDuration.
INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 10.0
MAX_UNSCHEDULABLE_AGE = 300.0
FLUSH_INTERVAL = 30.0


@dataclass(slots=True)
class QueuedPod:
    key: str
    priority: int = 0
    attempts: int = 0
    last_attempt: float = 0.0
    first_enqueued: float = field(default_factory=time.monotonic)
    popped_cycle: int = -1
    reasons: frozenset[str] = frozenset()   # why the last attempt failed (for targeted wake-ups)


class SchedulingQueue:
    def __init__(self, *, initial_backoff: float = INITIAL_BACKOFF, max_backoff: float = MAX_BACKOFF,
                 max_unschedulable_age: float = MAX_UNSCHEDULABLE_AGE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 <= initial_backoff <= max_backoff:
            raise ValueError("need 0 <= initial_backoff <= max_backoff")
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.max_unschedulable_age = max_unschedulable_age
        self._clock = clock
        self._pods: dict[str, QueuedPod] = {}        # every pod the queue knows, in any sub-queue
        # key -> "active" | "backoff" | "unschedulable" | "inflight" (popped, being tried)
        self._where: dict[str, str] = {}
        self._active: list[tuple[int, int, str]] = []
        self._backoff: list[tuple[float, int, str]] = []
        self._unschedulable: dict[str, float] = {}   # key -> when it was put there
        self._seq = itertools.count()
        self._move_cycle = 0
        self._wakeup = asyncio.Event()
        self._closed = False
        self._last_flush = clock()

    # ---- adding and removing -----------------------------------------------------------------------

    def add(self, key: str, priority: int = 0) -> None:
        """A new (or changed) pending pod. A pod already in flight is left alone: its attempt's outcome
        decides where it goes next."""
        qp = self._pods.get(key)
        if qp is None:
            qp = self._pods[key] = QueuedPod(key, priority)
        else:
            qp.priority = priority
        where = self._where.get(key)
        if where in ("active", "inflight"):
            return
        if where == "unschedulable":
            # The pod itself changed (tolerations, affinity ...): it deserves a new look.
            del self._unschedulable[key]
            self._to_active_or_backoff(qp)
            return
        if where == "backoff":
            return
        self._push_active(qp)

    def add_backoff(self, key: str, priority: int = 0) -> None:
        """A pod whose attempt failed after it left the queue (its binding was refused): retry it after
        a back-off, never at once."""
        qp = self._pods.get(key)
        if qp is None:
            qp = self._pods[key] = QueuedPod(key, priority)
        if self._where.get(key) in ("active", "backoff", "inflight"):
            return
        self._unschedulable.pop(key, None)
        qp.attempts = max(qp.attempts, 1)
        qp.last_attempt = self._clock()
        self._push_backoff(qp)

    def delete(self, key: str) -> None:
        """The pod is gone or no longer ours to schedule (bound, deleted). Heap entries are dropped
        lazily when they surface."""
        self._pods.pop(key, None)
        where = self._where.pop(key, None)
        if where == "unschedulable":
            self._unschedulable.pop(key, None)

    def __contains__(self, key: str) -> bool:
        return key in self._pods

    # ---- the scheduling loop's side ----------------------------------------------------------------

    async def pop(self) -> str | None:
        """The next pod to try (None once closed). Waits for the active queue, promoting pods whose
        back-off has expired and flushing long-unschedulable ones on the way."""
        while not self._closed:
            now = self._clock()
            self._promote_backoff(now)
            if now - self._last_flush >= FLUSH_INTERVAL:
                self._flush_unschedulable(now)
            while self._active:
                _, _, key = heapq.heappop(self._active)
                if self._where.get(key) != "active":
                    continue  # deleted or moved since it was pushed
                qp = self._pods[key]
                self._where[key] = "inflight"
                qp.attempts += 1
                qp.last_attempt = now
                qp.popped_cycle = self._move_cycle
                return key
            self._wakeup.clear()
            timeout = None
            if self._backoff:
                timeout = max(0.0, self._backoff[0][0] - now)
            timeout = FLUSH_INTERVAL if timeout is None else min(timeout, FLUSH_INTERVAL)
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except TimeoutError:
                pass
        return None

    def done(self, key: str) -> None:
        """The attempt succeeded (the pod is assumed and being bound): forget it."""
        self.delete(key)

    def requeue_unschedulable(self, key: str, reasons: frozenset[str] = frozenset()) -> None:
        """The attempt found no node. Park the pod until the cluster changes, unless it already did
        while the attempt ran."""
        qp = self._pods.get(key)
        if qp is None or self._where.get(key) != "inflight":
            return
        qp.reasons = reasons
        if self._move_cycle > qp.popped_cycle:
            self._push_backoff(qp)
        else:
            self._where[key] = "unschedulable"
            self._unschedulable[key] = self._clock()

    def requeue_error(self, key: str) -> None:
        """The attempt failed for another reason (API error): retry after back-off."""
        qp = self._pods.get(key)
        if qp is None or self._where.get(key) != "inflight":
            return
        self._push_backoff(qp)

    # ---- cluster events ----------------------------------------------------------------------------

    def move_all_to_active_or_backoff(self, event: str,
                                      interested: Callable[[QueuedPod], bool] | None = None) -> int:
        """A cluster event that may make unschedulable pods fit: retry those ``interested`` says could
        benefit (all by default). Returns how many moved."""
        self._move_cycle += 1
        moved = 0
        for key in list(self._unschedulable):
            qp = self._pods.get(key)
            if qp is None:
                del self._unschedulable[key]
                continue
            if interested is not None and not interested(qp):
                continue
            del self._unschedulable[key]
            self._to_active_or_backoff(qp)
            moved += 1
        return moved

    # ---- introspection -----------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        out = {"active": 0, "backoff": 0, "unschedulable": 0, "inflight": 0}
        for where in self._where.values():
            out[where] += 1
        return out

    @property
    def unschedulable_count(self) -> int:
        return len(self._unschedulable)

    def __len__(self) -> int:
        return len(self._where)

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()

    # ---- internals ---------------------------------------------------------------------------------

    def _backoff_until(self, qp: QueuedPod) -> float:
        if qp.attempts <= 0:
            return 0.0
        delay = min(self.initial_backoff * (2 ** (qp.attempts - 1)), self.max_backoff)
        return qp.last_attempt + delay

    def _push_active(self, qp: QueuedPod) -> None:
        self._where[qp.key] = "active"
        heapq.heappush(self._active, (-qp.priority, next(self._seq), qp.key))
        self._wakeup.set()

    def _push_backoff(self, qp: QueuedPod) -> None:
        until = self._backoff_until(qp)
        if until <= self._clock():
            self._push_active(qp)
            return
        self._where[qp.key] = "backoff"
        heapq.heappush(self._backoff, (until, next(self._seq), qp.key))
        self._wakeup.set()  # the waiter recomputes its timeout

    def _to_active_or_backoff(self, qp: QueuedPod) -> None:
        self._push_backoff(qp)

    def _promote_backoff(self, now: float) -> None:
        while self._backoff and self._backoff[0][0] <= now:
            _, _, key = heapq.heappop(self._backoff)
            if self._where.get(key) == "backoff":
                self._push_active(self._pods[key])

    def _flush_unschedulable(self, now: float) -> None:
        self._last_flush = now
        for key, since in list(self._unschedulable.items()):
            if now - since >= self.max_unschedulable_age:
                del self._unschedulable[key]
                qp = self._pods.get(key)
                if qp is not None:
                    self._to_active_or_backoff(qp)
