"""The scheduler component: watches pods and nodes, places pending pods, binds them.

One scheduling loop takes pod keys from the SchedulingQueue, runs the pure algorithm
(framework.schedule) against the ClusterState cache, *assumes* the pod on the chosen node at once
and hands the binding to a background task, so the next pod is scheduled while the API call is in
flight (kube-scheduler's scheduling cycle / binding cycle split). Informer handlers keep the cache
and the queue up to date and only do O(1) work per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

from minikube_py.client import APIClient, ApiStatusError, Informer, MetricsRegistry, key_of

from .events import EventRecorder, now_rfc3339
from .framework import FitError, schedule
from .nodeinfo import ClusterState, readiness_taint
from .podinfo import InvalidPod, PodInfo, pod_info
from .queue import QueuedPod, SchedulingQueue

log = logging.getLogger(__name__)

DEFAULT_SCHEDULER = "default-scheduler"
BIND_CONCURRENCY = 32
E2E_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
ALGORITHM_BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0)

# Failure reasons after which only pod changes can help: used to skip waking such pods on node events
# that cannot matter (kept coarse on purpose; a wrong skip would strand a pod, a wrong wake costs one
# attempt).
_POD_RELATED = ("affinity rules", "anti-affinity")


def _assigned(pod: Mapping[str, Any]) -> bool:
    return bool((pod.get("spec") or {}).get("nodeName"))


def _node_relevant(node: Mapping[str, Any]) -> tuple[Any, ...]:
    """What about a node can change scheduling decisions; heartbeats alone do not."""
    meta, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
    return (meta.get("labels"), spec.get("taints"), bool(spec.get("unschedulable")),
            status.get("allocatable"), status.get("capacity"), readiness_taint(node))


class Scheduler:
    def __init__(self, client: APIClient, *, scheduler_name: str = DEFAULT_SCHEDULER, identity: str = "",
                 metrics: MetricsRegistry | None = None, bind_concurrency: int = BIND_CONCURRENCY,
                 initial_backoff: float = 1.0, max_backoff: float = 10.0, seed: int | None = None) -> None:
        self.client = client
        self.scheduler_name = scheduler_name
        self.cluster = ClusterState()
        self.queue = SchedulingQueue(initial_backoff=initial_backoff, max_backoff=max_backoff)
        self.pods = Informer(client, "pods")
        self.nodes = Informer(client, "nodes")
        self.events = EventRecorder(client, component=scheduler_name, instance=identity or scheduler_name)
        self.rng = random.Random(seed)
        self._bind_slots = asyncio.Semaphore(bind_concurrency)
        self._background: set[asyncio.Task[None]] = set()
        self._first_seen: dict[str, float] = {}
        self._failed: BaseException | None = None
        m = metrics or MetricsRegistry()
        self.metrics = m
        self.m_attempts = m.counter("scheduler_schedule_attempts_total",
                                    "Number of attempts to schedule pods, by the result.",
                                    ["result", "profile"])
        self.m_pending = m.gauge("scheduler_pending_pods", "Number of pending pods, by the queue type.",
                                 ["queue"])
        self.m_e2e = m.histogram("scheduler_e2e_scheduling_duration_seconds",
                                 "E2e latency for a pod being scheduled: from the first time it is seen "
                                 "pending to its successful binding.", ["result", "profile"],
                                 buckets=E2E_BUCKETS)
        self.m_algorithm = m.histogram("scheduler_scheduling_algorithm_duration_seconds",
                                       "Scheduling algorithm latency in seconds.", buckets=ALGORITHM_BUCKETS)
        self.pods.add_handlers(self._on_pod_add, self._on_pod_update, self._on_pod_delete)
        self.nodes.add_handlers(self._on_node_add, self._on_node_update, self._on_node_delete)

    # ---- lifecycle ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Sync the informers, then schedule until cancelled."""
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            self._failed = e
            raise

    async def _run(self) -> None:
        await self.nodes.start()
        await self.pods.start()
        await self.nodes.wait_synced()
        await self.pods.wait_synced()
        self.events.start()
        gauges = asyncio.create_task(self._update_gauges(), name="scheduler-gauges")
        log.info("%s: caches synced (%d nodes, %d pods); scheduling", self.scheduler_name,
                 len(self.nodes), len(self.pods))
        try:
            while True:
                key = await self.queue.pop()
                if key is None:
                    return
                try:
                    await self.schedule_one(key)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("scheduling %s failed", key)
                    self.queue.requeue_error(key)
        finally:
            gauges.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gauges

    async def stop(self) -> None:
        """Stop watching and let bindings and events in flight finish (briefly)."""
        self.queue.close()
        if self._background:
            await asyncio.wait(self._background, timeout=5)
        await self.events.stop()
        await self.pods.stop()
        await self.nodes.stop()

    def healthy(self) -> bool:
        """False once the scheduling loop died of an error. A standby (not leading) is healthy, as in
        kube-scheduler, so that every master reports ok."""
        return self._failed is None

    @property
    def synced(self) -> bool:
        return self.pods.has_synced and self.nodes.has_synced

    # ---- informer handlers: keep the cache and the queue current ----------------------------------

    def _responsible(self, pod: Mapping[str, Any]) -> bool:
        spec = pod.get("spec") or {}
        return ((spec.get("schedulerName") or DEFAULT_SCHEDULER) == self.scheduler_name
                and not (pod.get("metadata") or {}).get("deletionTimestamp"))

    def _enqueue(self, pod: Mapping[str, Any]) -> None:
        key = key_of(pod)  # type: ignore[arg-type]
        if key in self.cluster.assumed:
            return  # being bound right now
        self._first_seen.setdefault(key, time.monotonic())
        self.queue.add(key, int((pod.get("spec") or {}).get("priority") or 0))

    def _set_bound(self, pod: Mapping[str, Any]) -> None:
        key = key_of(pod)  # type: ignore[arg-type]
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        current = self.cluster.bound_pod(key)
        terminal = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        if (current is not None and current.uid == meta.get("uid")
                and current.node_name == spec.get("nodeName")
                and current.labels == (meta.get("labels") or {}) and not terminal):
            # Our own binding coming back: the assumed entry is already right, just confirm it.
            self.cluster.assumed.discard(key)
            return
        try:
            self.cluster.set_bound_pod(pod_info(pod))
        except InvalidPod as e:
            log.warning("pod %s on %s is unreadable (%s); not counted", key, spec.get("nodeName"), e)

    def _on_pod_add(self, pod: dict[str, Any]) -> None:
        if _assigned(pod):
            self._set_bound(pod)
            self.queue.delete(key_of(pod))
            # A new pod somewhere can satisfy a waiting pod's pod-affinity term.
            self._move("AssignedPodAdd", pod_related_only=True)
        elif self._responsible(pod):
            self._enqueue(pod)

    def _on_pod_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        key = key_of(new)
        if _assigned(new):
            was_terminal = (old.get("status") or {}).get("phase") in ("Succeeded", "Failed")
            self._set_bound(new)
            self.queue.delete(key)
            self._first_seen.pop(key, None)
            if (new.get("status") or {}).get("phase") in ("Succeeded", "Failed") and not was_terminal:
                self._move("AssignedPodDelete")  # a finished pod frees its node
            elif (old.get("metadata") or {}).get("labels") != (new.get("metadata") or {}).get("labels"):
                self._move("AssignedPodUpdate", pod_related_only=True)
        elif self._responsible(new):
            # Only a change to what the pod asks for can change the outcome; our own status writes
            # (the PodScheduled condition) must not send an unschedulable pod round again.
            if key not in self.queue or old.get("spec") != new.get("spec") or \
                    (old.get("metadata") or {}).get("labels") != (new.get("metadata") or {}).get("labels"):
                self._enqueue(new)
        else:
            self.queue.delete(key)
            self._first_seen.pop(key, None)

    def _on_pod_delete(self, pod: dict[str, Any]) -> None:
        key = key_of(pod)
        was_counted = key in self.cluster.pod_node
        self.cluster.remove_pod(key)
        self.queue.delete(key)
        self._first_seen.pop(key, None)
        if was_counted:
            self._move("AssignedPodDelete")

    def _on_node_add(self, node: dict[str, Any]) -> None:
        self.cluster.set_node(node)
        self._move("NodeAdd")

    def _on_node_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.cluster.set_node(new)
        if _node_relevant(old) != _node_relevant(new):
            self._move("NodeUpdate")

    def _on_node_delete(self, node: dict[str, Any]) -> None:
        self.cluster.remove_node((node.get("metadata") or {}).get("name") or "")

    def _move(self, event: str, pod_related_only: bool = False) -> None:
        def interested(qp: QueuedPod) -> bool:
            return any(r in reason for reason in qp.reasons for r in _POD_RELATED)

        moved = self.queue.move_all_to_active_or_backoff(event, interested if pod_related_only else None)
        if moved:
            log.debug("%s: %d unschedulable pod(s) to retry", event, moved)

    # ---- one scheduling cycle ----------------------------------------------------------------------

    async def schedule_one(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None or _assigned(pod) or not self._responsible(pod) or key in self.cluster.assumed:
            self.queue.delete(key)
            return
        try:
            info = pod_info(pod)
        except InvalidPod as e:
            self.m_attempts.labels("error", self.scheduler_name).inc()
            self._record_failure(pod, f"invalid pod: {e}")
            self.queue.requeue_unschedulable(key)
            return
        started = time.perf_counter()
        try:
            node = schedule(info, self.cluster, self.rng)
        except FitError as e:
            self.m_algorithm.observe(time.perf_counter() - started)
            self.m_attempts.labels("unschedulable", self.scheduler_name).inc()
            reasons = frozenset(r for st in e.statuses.values() for r in st.reasons)
            log.info("unable to schedule pod %s: %s", key, e.message)
            self._record_failure(pod, e.message)
            self.queue.requeue_unschedulable(key, reasons)
            return
        self.m_algorithm.observe(time.perf_counter() - started)
        info.node_name = node
        self.cluster.assume(info, node)
        self.queue.done(key)
        # Bounded concurrency: when this many bindings are in flight the loop waits here, which keeps
        # a burst of pods from turning into an unbounded pile of requests.
        await self._bind_slots.acquire()
        self._spawn(self._bind(pod, info, node))

    async def _bind(self, pod: dict[str, Any], info: PodInfo, node: str) -> None:
        try:
            await self.client.create(
                "pods",
                {"apiVersion": "v1", "kind": "Binding",
                 "metadata": {"name": info.name, "namespace": info.namespace, "uid": info.uid},
                 "target": {"apiVersion": "v1", "kind": "Node", "name": node}},
                info.namespace, subresource_of=info.name, subresource="binding")
        except Exception as e:
            self.cluster.forget(info.key)
            self.m_attempts.labels("error", self.scheduler_name).inc()
            if isinstance(e, ApiStatusError) and e.code in (404, 409):
                # Deleted, or bound by someone else meanwhile: the informer tells the rest.
                log.info("binding %s to %s: %s", info.key, node, e.message)
                return
            log.warning("binding %s to %s failed: %s", info.key, node, e)
            self.events.event(pod, "Warning", "FailedScheduling", f"Binding rejected: {e}")
            current = self.pods.get(info.key)
            if current is not None and not _assigned(current) and self._responsible(current):
                # Back off like any failed attempt rather than retrying at once against a failing server.
                self.queue.add_backoff(info.key, int((current.get("spec") or {}).get("priority") or 0))
            return
        finally:
            self._bind_slots.release()
        self.m_attempts.labels("scheduled", self.scheduler_name).inc()
        seen = self._first_seen.pop(info.key, None)
        if seen is not None:
            self.m_e2e.labels("scheduled", self.scheduler_name).observe(time.monotonic() - seen)
        self.events.event(pod, "Normal", "Scheduled", f"Successfully assigned {info.key} to {node}")

    # ---- failure reporting -------------------------------------------------------------------------

    def _record_failure(self, pod: dict[str, Any], message: str) -> None:
        self.events.event(pod, "Warning", "FailedScheduling", message)
        conditions = (pod.get("status") or {}).get("conditions") or []
        for c in conditions:
            if (c.get("type") == "PodScheduled" and c.get("status") == "False"
                    and c.get("reason") == "Unschedulable" and c.get("message") == message):
                return  # already says so: no write
        self._spawn(self._set_unschedulable(pod, message))

    async def _set_unschedulable(self, pod: dict[str, Any], message: str) -> None:
        meta = pod.get("metadata") or {}
        patch = {"status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
            "lastProbeTime": None, "lastTransitionTime": now_rfc3339()}]}}
        try:
            await self.client.patch("pods", meta.get("name") or "", patch, meta.get("namespace"),
                                    patch_type="strategic", subresource="status")
        except ApiStatusError as e:
            if e.code != 404:
                log.warning("could not set PodScheduled=False on %s: %s", key_of(pod), e)
        except Exception as e:
            log.warning("could not set PodScheduled=False on %s: %s", key_of(pod), e)

    # ---- plumbing ----------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _update_gauges(self) -> None:
        while True:
            counts = self.queue.counts()
            self.m_pending.labels("active").set(counts["active"] + counts["inflight"])
            self.m_pending.labels("backoff").set(counts["backoff"])
            self.m_pending.labels("unschedulable").set(counts["unschedulable"])
            self.m_pending.labels("gated").set(0)
            await asyncio.sleep(1.0)
