"""core/v1 Events for pods, written as client-go's event recorder writes them.

A repeat of the same event (same pod, type, reason and message) bumps ``count`` and
``lastTimestamp`` of the existing Event with a PATCH instead of creating a new one. Writing is
asynchronous and never blocks scheduling: events go through a bounded queue drained by a few
workers, and when the queue is full new events are dropped and counted, as client-go's broadcaster
drops them (events are best-effort diagnostics, bindings are not).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from minikube_py.client import APIClient

log = logging.getLogger(__name__)

MAX_QUEUED = 10_000
CACHE_SIZE = 4096          # client-go's maxLruCacheEntries


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class _Seen:
    name: str
    namespace: str
    count: int
    first: str


def involved_object(pod: Mapping[str, Any]) -> dict[str, Any]:
    meta = pod.get("metadata") or {}
    return {"kind": "Pod", "namespace": meta.get("namespace") or "default", "name": meta.get("name") or "",
            "uid": meta.get("uid") or "", "apiVersion": "v1",
            "resourceVersion": meta.get("resourceVersion") or ""}


def event_body(pod: Mapping[str, Any], event_type: str, reason: str, message: str, *, component: str,
               instance: str, name: str, timestamp: str, count: int = 1, first: str | None = None
               ) -> dict[str, Any]:
    obj = involved_object(pod)
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": obj["namespace"]},
        "involvedObject": obj,
        "reason": reason, "message": message, "type": event_type,
        "source": {"component": component},
        "firstTimestamp": first or timestamp, "lastTimestamp": timestamp, "count": count,
        "reportingComponent": component, "reportingInstance": instance,
    }


class EventRecorder:
    def __init__(self, client: APIClient, *, component: str = "default-scheduler", instance: str = "",
                 workers: int = 2, max_queued: int = MAX_QUEUED) -> None:
        self.client = client
        self.component = component
        self.instance = instance
        self.workers = workers
        self._queue: asyncio.Queue[tuple[dict[str, Any], str, str, str]] = asyncio.Queue(max_queued)
        self._seen: OrderedDict[tuple[str, ...], _Seen] = OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped = 0
        self.written = 0

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._worker(), name=f"events-{i}")
                           for i in range(self.workers)]

    async def stop(self, drain_timeout: float = 2.0) -> None:
        """Write what is queued (for up to ``drain_timeout`` seconds), then stop."""
        if self._tasks and not self._queue.empty():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain_timeout)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []

    def event(self, pod: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        """Queue an event about ``pod`` (a dict; only its metadata is kept)."""
        meta = pod.get("metadata") or {}
        slim = {"metadata": {k: meta.get(k) for k in ("namespace", "name", "uid", "resourceVersion")}}
        try:
            self._queue.put_nowait((slim, event_type, reason, message))
        except asyncio.QueueFull:
            self.dropped += 1

    async def flush(self) -> None:
        """Wait until every queued event is written (tests)."""
        await self._queue.join()

    async def _worker(self) -> None:
        while True:
            pod, event_type, reason, message = await self._queue.get()
            try:
                await self.write(pod, event_type, reason, message)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # best effort, as client-go: log and move on
                log.warning("could not write event %s for %s/%s: %s", reason,
                            pod["metadata"].get("namespace"), pod["metadata"].get("name"), e)
            finally:
                self._queue.task_done()

    async def write(self, pod: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        """Create the Event, or count a repeat of one this recorder wrote before."""
        from minikube_py.client import ApiStatusError

        meta = pod.get("metadata") or {}
        ns = meta.get("namespace") or "default"
        key = (ns, meta.get("name") or "", meta.get("uid") or "", event_type, reason, message)
        timestamp = now_rfc3339()
        seen = self._seen.get(key)
        if seen is not None:
            self._seen.move_to_end(key)
            try:
                patch = {"count": seen.count + 1, "lastTimestamp": timestamp}
                await self.client.patch("events", seen.name, patch, ns, patch_type="merge")
                seen.count += 1
                self.written += 1
                return
            except ApiStatusError as e:
                if e.code != 404:
                    raise
                del self._seen[key]  # expired or deleted: start a new series
        name = f"{meta.get('name') or 'pod'}.{time.time_ns():x}"
        body = event_body(pod, event_type, reason, message, component=self.component, instance=self.instance,
                          name=name, timestamp=timestamp)
        await self.client.create("events", body, ns)
        self.written += 1
        self._seen[key] = _Seen(name, ns, 1, timestamp)
        if len(self._seen) > CACHE_SIZE:
            self._seen.popitem(last=False)
