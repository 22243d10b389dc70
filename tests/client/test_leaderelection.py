"""Lease-based leader election against a real API server, with short durations (2 s lease, 1.5 s
renew deadline, 0.3 s retry period)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import pytest

from minikube_py.client.leaderelection import LeaderElector
from minikube_py.client.rest import APIClient

from .conftest import eventually

TIMINGS: dict[str, Any] = {"lease_duration": 2.0, "renew_deadline": 1.5, "retry_period": 0.3}


class Candidate:
    """One elector and what happened to it."""

    def __init__(self, client: APIClient, lease: str, identity: str, **kw: Any) -> None:
        self.elector = LeaderElector(client, name=lease, identity=identity, **TIMINGS, **kw)
        self.identity = identity
        self.started = 0
        self.stopped = 0
        self.work_cancelled = False
        self.task: asyncio.Task[None] | None = None

    async def lead(self) -> None:
        self.started += 1
        try:
            await asyncio.Event().wait()  # a component's controllers, running until cancelled
        except asyncio.CancelledError:
            self.work_cancelled = True
            raise

    def on_stopped(self) -> None:
        self.stopped += 1

    def run(self) -> None:
        self.task = asyncio.create_task(self.elector.run(self.lead, self.on_stopped))

    async def cancel(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def lease_name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def test_durations_are_validated(client: APIClient) -> None:
    with pytest.raises(ValueError):
        LeaderElector(client, name="x", identity="a", lease_duration=1, renew_deadline=2, retry_period=0.1)
    with pytest.raises(ValueError):
        LeaderElector(client, name="x", identity="a", lease_duration=3, renew_deadline=1, retry_period=1)
    with pytest.raises(ValueError):
        LeaderElector(client, name="", identity="a")


@pytest.mark.parametrize("release", [False, True], ids=["lease-expires", "lease-released"])
async def test_one_leads_and_the_other_takes_over(client: APIClient, release: bool) -> None:
    lease = lease_name()
    a = Candidate(client, lease, "a", release_on_cancel=release)
    b = Candidate(client, lease, "b", release_on_cancel=release)
    a.run()
    b.run()
    try:
        await eventually(lambda: a.started + b.started >= 1, what="a leader")
        # Several renewals later, still exactly one leader.
        await asyncio.sleep(3 * TIMINGS["retry_period"])
        assert a.started + b.started == 1
        leader, other = (a, b) if a.started else (b, a)
        assert leader.elector.is_leader and not other.elector.is_leader
        record = await client.get("leases", lease, "kube-system")
        spec = record["spec"]
        assert spec["holderIdentity"] == leader.identity
        assert spec["leaseDurationSeconds"] == 2 and spec["leaseTransitions"] == 0
        assert spec["acquireTime"] and spec["renewTime"] >= spec["acquireTime"]

        await leader.cancel()  # the leader's process goes away
        assert leader.work_cancelled and leader.stopped == 1 and not leader.elector.is_leader
        await eventually(lambda: other.started == 1, timeout=10, what="the takeover")
        assert other.elector.is_leader
        spec = (await client.get("leases", lease, "kube-system"))["spec"]
        assert spec["holderIdentity"] == other.identity and spec["leaseTransitions"] == 1
    finally:
        for c in (a, b):
            await c.cancel()


async def test_a_leader_that_cannot_renew_steps_down(client: APIClient) -> None:
    lease = lease_name()
    a = Candidate(client, lease, "a", release_on_cancel=False)
    a.run()
    try:
        await eventually(lambda: a.started == 1, what="leadership")
        # Someone takes the lease by force and keeps it renewed: every renewal of "a" now fails.
        stop_intruder = asyncio.Event()

        async def intruder() -> None:
            while not stop_intruder.is_set():
                with contextlib.suppress(Exception):
                    await client.patch("leases", lease, {"spec": {
                        "holderIdentity": "intruder", "leaseDurationSeconds": 60,
                        "renewTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())}},
                        "kube-system")
                await asyncio.sleep(0.1)

        grabbing = asyncio.create_task(intruder())
        try:
            assert a.task is not None
            await asyncio.wait_for(asyncio.shield(a.task), 10)  # run() returns: leadership lost
        finally:
            stop_intruder.set()
            await grabbing
        assert a.stopped == 1 and a.work_cancelled and not a.elector.is_leader
        assert (await client.get("leases", lease, "kube-system"))["spec"]["holderIdentity"] == "intruder"
    finally:
        await a.cancel()


async def test_run_returns_the_error_of_the_leading_work(client: APIClient) -> None:
    elector = LeaderElector(client, name=lease_name(), identity="a", **TIMINGS)
    stopped: list[bool] = []

    async def crash() -> None:
        raise RuntimeError("controller crashed")

    with pytest.raises(RuntimeError, match="controller crashed"):
        await asyncio.wait_for(elector.run(crash, lambda: stopped.append(True)), 10)
    assert stopped == [True] and not elector.is_leader
