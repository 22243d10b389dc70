"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's ``leaderelection`` does it.

Candidates race to write themselves into the Lease's ``holderIdentity``; the API server's
resourceVersion precondition makes exactly one write win. A held lease counts as expired when its
holder has not renewed it for ``leaseDurationSeconds`` as measured on *this* machine's monotonic
clock since the record last changed — never by comparing the record's timestamps with our clock, so
clock skew between machines cannot hand out two leaderships.

The leader renews every ``retry_period``; when it cannot renew within ``renew_deadline`` it stops
its work and ``run`` returns (a Kubernetes component then exits and is restarted by its supervisor).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .rest import APIClient, ApiStatusError

log = logging.getLogger(__name__)

# client-go's JitterFactor for the acquire loop: candidates do not all retry in the same instant.
JITTER = 1.2


def _micro_time(t: dt.datetime | None = None) -> str:
    """A ``MicroTime``: RFC 3339 with microseconds, in UTC."""
    return (t or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, client: APIClient, *, namespace: str = "kube-system", name: str, identity: str,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0,
                 release_on_cancel: bool = True) -> None:
        if not name or not identity:
            raise ValueError("a lease name and an identity are required")
        # client-go's own validation: a leader must give up before anyone else may take over.
        if not lease_duration > renew_deadline > JITTER * retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > 1.2 * retry_period > 0")
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.release_on_cancel = release_on_cancel
        self._is_leader = False
        self._observed: dict[str, Any] | None = None  # the last Lease spec read or written
        self._observed_at = 0.0  # monotonic time when that spec last changed

    @property
    def is_leader(self) -> bool:
        return self._is_leader

    @property
    def holder(self) -> str:
        """The identity of the last leader seen ("" when none)."""
        return str((self._observed or {}).get("holderIdentity") or "")

    async def run(self, on_started_leading: Callable[[], Awaitable[None]],
                  on_stopped_leading: Callable[[], None] | None = None) -> None:
        """Wait to become leader, run ``on_started_leading()`` as a task while leading, and return when
        leadership is lost (or that task ends). Cancelling ``run`` stops the task and, with
        ``release_on_cancel``, hands the lease back so that another candidate takes over at once."""
        await self._acquire()
        log.info("%s/%s: %s became leader", self.namespace, self.name, self.identity)
        self._is_leader = True
        work = asyncio.create_task(on_started_leading(), name=f"leading-{self.name}")
        cancelled = False
        try:
            await self._renew_until_lost(work)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            self._is_leader = False
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work
            if cancelled and self.release_on_cancel:
                await self._release()
            if on_stopped_leading is not None:
                try:
                    on_stopped_leading()
                except Exception:
                    log.exception("%s/%s: on_stopped_leading failed", self.namespace, self.name)
        if work.done() and not work.cancelled() and work.exception() is not None:
            raise work.exception()  # type: ignore[misc]

    # ---- the loops -------------------------------------------------------------------------------

    async def _acquire(self) -> None:
        while True:
            if await self._try_acquire_or_renew():
                return
            await asyncio.sleep(self.retry_period * (1 + random.random() * (JITTER - 1)))

    async def _renew_until_lost(self, work: asyncio.Task[None]) -> None:
        while True:
            deadline = time.monotonic() + self.renew_deadline
            renewed = False
            while not work.done():
                if await self._try_acquire_or_renew():
                    renewed = True
                    break
                if time.monotonic() + self.retry_period > deadline:
                    break
                await self._sleep_unless_done(work, self.retry_period)
            if work.done():
                return
            if not renewed:
                log.warning("%s/%s: %s failed to renew the lease within %.1fs; stopping",
                            self.namespace, self.name, self.identity, self.renew_deadline)
                return
            await self._sleep_unless_done(work, self.retry_period)
            if work.done():
                return

    @staticmethod
    async def _sleep_unless_done(work: asyncio.Task[None], seconds: float) -> None:
        await asyncio.wait([work], timeout=seconds)

    # ---- one attempt -----------------------------------------------------------------------------

    async def _try_acquire_or_renew(self) -> bool:
        try:
            return await self._attempt()
        except ApiStatusError as e:
            if e.code != 409:  # 409: another candidate wrote first
                log.warning("%s/%s: lease request failed: %s", self.namespace, self.name, e)
            return False
        except (OSError, TimeoutError) as e:
            log.warning("%s/%s: cannot reach the API server: %s", self.namespace, self.name, e)
            return False

    async def _attempt(self) -> bool:
        now = _micro_time()
        lease = await self.client.get_or_none("leases", self.name, self.namespace)
        if lease is None:
            spec = {"holderIdentity": self.identity, "leaseDurationSeconds": self._duration_seconds(),
                    "acquireTime": now, "renewTime": now, "leaseTransitions": 0}
            created = await self.client.create("leases", {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}, self.namespace)
            self._observe(created.get("spec") or spec)
            return True

        spec: dict[str, Any] = dict(lease.get("spec") or {})
        self._observe(spec)
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self.identity and not self._expired(spec):
            return False
        if holder == self.identity:
            acquire_time = spec.get("acquireTime") or now
            transitions = int(spec.get("leaseTransitions") or 0)
        else:
            acquire_time = now
            transitions = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(holderIdentity=self.identity, leaseDurationSeconds=self._duration_seconds(),
                    acquireTime=acquire_time, renewTime=now, leaseTransitions=transitions)
        lease["spec"] = spec
        # The PUT carries the resourceVersion just read: a concurrent writer makes this a 409.
        updated = await self.client.update("leases", lease)
        self._observe(updated.get("spec") or spec)
        return True

    async def _release(self) -> None:
        """Hand the lease back (client-go's ReleaseOnCancel): holder cleared, 1 s duration."""
        try:
            lease = await self.client.get_or_none("leases", self.name, self.namespace)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            now = _micro_time()
            lease["spec"].update(holderIdentity="", leaseDurationSeconds=1, acquireTime=now, renewTime=now)
            await self.client.update("leases", lease)
            log.info("%s/%s: %s released the lease", self.namespace, self.name, self.identity)
        except (ApiStatusError, OSError, TimeoutError, RuntimeError) as e:
            log.warning("%s/%s: could not release the lease: %s", self.namespace, self.name, e)

    def _observe(self, spec: dict[str, Any]) -> None:
        # A record counts as changed when its holder or renew time changes: that is the holder's
        # heartbeat, timed by our own clock.
        heartbeat = {k: spec.get(k) for k in ("holderIdentity", "renewTime", "leaseDurationSeconds")}
        if self._observed is None or heartbeat != {k: self._observed.get(k) for k in heartbeat}:
            self._observed_at = time.monotonic()
        self._observed = dict(spec)

    def _expired(self, spec: dict[str, Any]) -> bool:
        duration = spec.get("leaseDurationSeconds")
        valid = isinstance(duration, (int, float)) and duration > 0
        seconds = float(duration) if valid else self.lease_duration
        return time.monotonic() > self._observed_at + seconds

    def _duration_seconds(self) -> int:
        return max(1, math.ceil(self.lease_duration))
