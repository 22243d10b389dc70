"""The scheduling queue: priority order, back-off, parking unschedulable pods until the cluster
changes, and not losing a change that happens while a pod is being tried."""

from __future__ import annotations

import asyncio

from minikube_py.scheduler.queue import SchedulingQueue


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def pop_now(q: SchedulingQueue) -> str | None:
    """The next key if one is ready at once, else None."""
    try:
        return await asyncio.wait_for(q.pop(), 0.05)
    except TimeoutError:
        return None


async def test_priority_then_first_come_first_served() -> None:
    q = SchedulingQueue()
    q.add("a")
    q.add("b", priority=10)
    q.add("c")
    q.add("a")  # a duplicate add does not queue twice
    assert [await pop_now(q) for _ in range(4)] == ["b", "a", "c", None]


async def test_unschedulable_pods_wait_for_a_cluster_event() -> None:
    clock = Clock()
    q = SchedulingQueue(clock=clock)
    q.add("p")
    assert await pop_now(q) == "p"
    q.requeue_unschedulable("p", frozenset({"Insufficient cpu"}))
    clock.now += 60  # time alone does not bring it back (no busy loop) ...
    assert await pop_now(q) is None
    assert q.counts()["unschedulable"] == 1
    assert q.move_all_to_active_or_backoff("NodeAdd") == 1  # ... a node added does
    assert await pop_now(q) == "p"


async def test_a_move_during_the_attempt_is_not_lost() -> None:
    clock = Clock()
    q = SchedulingQueue(clock=clock, initial_backoff=1.0)
    q.add("p")
    assert await pop_now(q) == "p"
    q.move_all_to_active_or_backoff("NodeAdd")  # arrives while "p" is being tried
    q.requeue_unschedulable("p")
    assert q.counts()["backoff"] == 1  # retried after its back-off, not parked
    clock.now += 1.0
    assert await pop_now(q) == "p"


async def test_backoff_doubles_up_to_the_cap() -> None:
    clock = Clock()
    q = SchedulingQueue(clock=clock, initial_backoff=1.0, max_backoff=4.0)
    q.add("p")
    for expected in (1.0, 2.0, 4.0, 4.0):
        assert await pop_now(q) == "p"
        q.requeue_error("p")
        clock.now += expected - 0.01
        assert await pop_now(q) is None
        clock.now += 0.01  # now due: the next round's pop returns it
    assert await pop_now(q) == "p"


async def test_targeted_moves_and_pod_updates() -> None:
    q = SchedulingQueue(initial_backoff=0)
    for key, reason in (("cpu", "Insufficient cpu"), ("aff", "node(s) didn't match pod affinity rules")):
        q.add(key)
        assert await pop_now(q) == key
        q.requeue_unschedulable(key, frozenset({reason}))
    moved = q.move_all_to_active_or_backoff(
        "AssignedPodAdd", lambda qp: any("affinity" in r for r in qp.reasons)
    )
    assert moved == 1 and await pop_now(q) == "aff"
    q.add("cpu")  # the pod itself changed: it gets another look
    assert await pop_now(q) == "cpu"


async def test_deleted_pods_leave_and_close_wakes_the_waiter() -> None:
    q = SchedulingQueue()
    q.add("gone")
    q.delete("gone")
    assert "gone" not in q and len(q) == 0
    waiter = asyncio.create_task(q.pop())
    await asyncio.sleep(0.01)
    q.close()
    assert await asyncio.wait_for(waiter, 1) is None
