"""The work queue's client-go semantics: dedup, no key held by two workers, delayed adds in order,
exponential back-off with forget, shutdown; and the worker loop built on them."""

from __future__ import annotations

import asyncio
import logging

import pytest

from minikube_py.client.workqueue import ExponentialBackoff, WorkQueue, run_workers


async def next_key(q: WorkQueue) -> str | None:
    return await asyncio.wait_for(q.get(), 5.0)


def test_backoff_grows_and_forget_resets() -> None:
    b = ExponentialBackoff(base=0.01, cap=0.1)
    assert [b.when("k") for _ in range(6)] == [0.01, 0.02, 0.04, 0.08, 0.1, 0.1]
    assert b.retries("k") == 6 and b.retries("other") == 0
    assert b.when("other") == 0.01  # per key
    b.forget("k")
    assert b.retries("k") == 0 and b.when("k") == 0.01
    for _ in range(200):
        b.when("many")  # no overflow however often a key fails
    assert b.when("many") == 0.1
    with pytest.raises(ValueError):
        ExponentialBackoff(base=0)


async def test_dedup_and_fifo() -> None:
    q = WorkQueue("t")
    for key in ("a", "b", "a", "c", "b", "a"):
        q.add(key)
    assert len(q) == 3
    assert [await next_key(q) for _ in range(3)] == ["a", "b", "c"]
    assert len(q) == 0


async def test_key_added_while_processing_is_requeued_after_done() -> None:
    q = WorkQueue()
    q.add("a")
    assert await next_key(q) == "a"
    q.add("a")
    q.add("a")
    assert len(q) == 0  # not handed to a second worker while the first holds it
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0.05)
    assert not getter.done()
    q.done("a")
    assert await asyncio.wait_for(getter, 5) == "a"
    q.done("a")
    assert len(q) == 0  # queued once, despite the two adds


async def test_add_after_orders_by_deadline_and_keeps_the_earliest() -> None:
    q = WorkQueue()
    q.add_after("slow", 0.3)
    q.add_after("fast", 0.05)
    q.add_after("slow", 0.1)  # an earlier deadline for a waiting key wins
    q.add_after("fast", 5.0)  # a later one changes nothing
    assert len(q) == 0
    assert await next_key(q) == "fast"
    assert await next_key(q) == "slow"
    q.add_after("now", 0)
    assert len(q) == 1


async def test_rate_limited_adds_back_off_until_forgotten() -> None:
    q = WorkQueue(backoff=ExponentialBackoff(base=0.01, cap=1.0))
    for expected in (1, 2, 3):
        q.add_rate_limited("k")
        assert await next_key(q) == "k"
        q.done("k")
        assert q.num_requeues("k") == expected
    q.forget("k")
    assert q.num_requeues("k") == 0


async def test_shutdown_releases_getters_and_drops_pending_work() -> None:
    q = WorkQueue()
    waiting = [asyncio.create_task(q.get()) for _ in range(3)]
    await asyncio.sleep(0.01)
    q.add_after("later", 0.05)
    q.shutdown()
    assert await asyncio.wait_for(asyncio.gather(*waiting), 5) == [None, None, None]
    q.add("x")
    assert len(q) == 0 and await next_key(q) is None
    await asyncio.sleep(0.1)
    assert len(q) == 0  # the delayed add was cancelled


async def test_cancelled_getter_does_not_swallow_a_key() -> None:
    q = WorkQueue()
    first = asyncio.create_task(q.get())
    second = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    q.add("a")
    first.cancel()  # woken but cancelled before it ran: the key must go to the other getter
    assert await asyncio.wait_for(second, 5) == "a"
    assert first.cancelled()


async def test_run_workers_retries_failures_and_forgets_successes(caplog: pytest.LogCaptureFixture) -> None:
    q = WorkQueue("ctl", ExponentialBackoff(base=0.01, cap=0.05))
    calls: list[str] = []
    active: set[str] = set()
    overlap: list[str] = []
    settled = asyncio.Event()

    async def reconcile(key: str) -> None:
        if key in active:
            overlap.append(key)
        active.add(key)
        try:
            calls.append(key)
            await asyncio.sleep(0.01)
            if key == "flaky" and calls.count("flaky") < 3:
                raise RuntimeError("not yet")
            if key == "ok" and calls.count("ok") < 2:
                q.add("ok")  # re-added while being processed: run again after this one is done
        finally:
            active.discard(key)
            if calls.count("flaky") >= 3 and calls.count("ok") >= 2:
                settled.set()

    caplog.set_level(logging.WARNING)
    q.add("flaky")
    q.add("ok")
    runner = asyncio.create_task(run_workers(q, reconcile, workers=3, log=logging.getLogger("ctl")))

    await asyncio.wait_for(settled.wait(), 10)
    q.shutdown()
    await asyncio.wait_for(runner, 5)
    assert overlap == []  # never two workers on one key
    assert q.num_requeues("flaky") == 0  # forgotten after its success
    assert sum("error syncing 'flaky'" in r.getMessage() for r in caplog.records) == 2
