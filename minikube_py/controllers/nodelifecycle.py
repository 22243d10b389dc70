"""The node lifecycle controller: notices nodes whose kubelet went quiet, taints them, and evicts
the pods that do not tolerate the taint — kube-controller-manager's node lifecycle controller and
its NoExecute taint manager in one.

Node health is judged as Kubernetes judges it: the controller remembers, on its own monotonic clock,
when it last saw a node's heartbeat change (the Ready condition's ``lastHeartbeatTime`` or the
node's Lease ``renewTime`` in ``kube-node-lease``). A node silent for longer than the grace period
gets every kubelet-owned condition set to Unknown ("Kubelet stopped posting node status."), so the
machines' clocks never need to agree.

Taints follow the Ready condition: Unknown -> ``node.kubernetes.io/unreachable``, False ->
``node.kubernetes.io/not-ready``, each with NoSchedule and NoExecute; a node that never reported
(no Ready condition yet) gets ``not-ready:NoSchedule`` only. A pod on a node with NoExecute taints
is deleted at once if it does not tolerate one of them, else when the shortest matching
``tolerationSeconds`` has passed since the taint was added. Pods on an unreachable node are marked
not Ready (MarkPodsNotReady), so that services stop sending them traffic.

Options (ControllerContext.options):
- ``node_monitor_grace_period`` (seconds, default 40)
- ``node_monitor_period`` (seconds, default 5): how often every node is re-checked
- ``pod_eviction_timeout`` (seconds, default 300): the wait given by the API server's default
  tolerations (not-ready/unreachable, Exists, NoExecute, 300 s — DefaultTolerationSeconds
  admission). Kubernetes tunes that wait on the API server; here the controller-manager flag of
  the same purpose replaces the admission default's 300 s. Tolerations a user wrote are honoured
  as written.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import math
import time
from typing import Any

from minikube_py.client.rest import ApiStatusError
from minikube_py.scheduler.podinfo import tolerates

from .base import Controller, ControllerContext
from .podutil import is_ready, is_terminating, now_rfc3339, parse_time

TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_NOT_READY = "node.kubernetes.io/not-ready"
NODE_LEASE_NAMESPACE = "kube-node-lease"
# Pods by spec.nodeName; a name other controllers on the shared pods informer may reuse.
POD_NODE_INDEX = "spec.nodeName"

# The conditions a kubelet owns: all go Unknown when it stops reporting (NetworkUnavailable is
# the network plugin's, so Kubernetes leaves it alone too).
KUBELET_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
DEFAULT_TOLERATION_SECONDS = 300

_NODE = "node/"
_POD = "pod/"


def ensure_node_name_index(pods: Any) -> None:
    try:
        pods.add_index(POD_NODE_INDEX, _node_name)
    except ValueError:
        pass  # already there: same name, same function


def _node_name(pod: dict[str, Any]) -> list[str]:
    name = (pod.get("spec") or {}).get("nodeName")
    return [str(name)] if name else []


def node_condition(node: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (node.get("status") or {}).get("conditions") or ():
        if isinstance(cond, dict) and cond.get("type") == type_:
            return cond
    return None


def desired_taints(node: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, effect) of the taints this controller wants on ``node``, from its Ready condition."""
    ready = node_condition(node, "Ready")
    if ready is None:
        return [(TAINT_NOT_READY, "NoSchedule")]
    status = ready.get("status")
    if status == "False":
        return [(TAINT_NOT_READY, "NoSchedule"), (TAINT_NOT_READY, "NoExecute")]
    if status == "Unknown":
        return [(TAINT_UNREACHABLE, "NoSchedule"), (TAINT_UNREACHABLE, "NoExecute")]
    return []


def _is_admission_default(toleration: dict[str, Any]) -> bool:
    return (toleration.get("key") in (TAINT_NOT_READY, TAINT_UNREACHABLE)
            and toleration.get("operator") == "Exists" and toleration.get("effect") == "NoExecute"
            and toleration.get("tolerationSeconds") == DEFAULT_TOLERATION_SECONDS
            and "value" not in toleration)


def eviction_delay(pod: dict[str, Any], taints: list[dict[str, Any]], *,
                   default_timeout: float = DEFAULT_TOLERATION_SECONDS) -> float | None:
    """Seconds after the taints appeared when ``pod`` must go: 0 if it does not tolerate one of the
    NoExecute ``taints``, None if it tolerates them all forever, else the shortest
    ``tolerationSeconds`` among the tolerations used. As Kubernetes' GetMatchingTolerations, the
    first toleration (in the pod's order) that tolerates a taint is the one used for it."""
    tolerations = [t for t in (pod.get("spec") or {}).get("tolerations") or () if isinstance(t, dict)]
    shortest = math.inf
    for taint in taints:
        used = next((t for t in tolerations if tolerates(t, taint)), None)
        if used is None:
            return 0.0
        seconds = used.get("tolerationSeconds")
        if seconds is None:
            continue  # tolerates this taint forever
        if _is_admission_default(used):
            seconds = default_timeout
        shortest = min(shortest, max(0.0, float(seconds)))
    return None if shortest == math.inf else shortest


class NodeLifecycleController(Controller):
    name = "nodelifecycle"
    workers = 4

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        opts = ctx.options
        self.grace = float(opts.get("node_monitor_grace_period", 40.0))
        self.period = float(opts.get("node_monitor_period", 5.0))
        self.eviction_timeout = float(opts.get("pod_eviction_timeout", DEFAULT_TOLERATION_SECONDS))
        if self.grace <= 0 or self.period <= 0 or self.eviction_timeout < 0:
            raise ValueError("node_monitor_grace_period and node_monitor_period must be positive, "
                             "pod_eviction_timeout not negative")
        self.nodes = ctx.informers.informer("nodes")
        self.leases = ctx.informers.informer("leases", NODE_LEASE_NAMESPACE)
        self.pods = ctx.informers.informer("pods")
        ensure_node_name_index(self.pods)
        # node name -> (heartbeat seen, monotonic time it last changed)
        self._health: dict[str, tuple[tuple[Any, ...], float]] = {}
        # (node, taint key) -> wall time a NoExecute taint without timeAdded was first seen
        self._taint_seen: dict[tuple[str, str], float] = {}
        self.nodes.add_handlers(**self.handlers(lambda n: _NODE + n["metadata"]["name"]))
        self.leases.add_handlers(**self.handlers(lambda lease: _NODE + lease["metadata"]["name"]))
        self.pods.add_handlers(**self.handlers(self._pod_key))

    @staticmethod
    def _pod_key(pod: dict[str, Any]) -> str | None:
        meta = pod.get("metadata") or {}
        if not (pod.get("spec") or {}).get("nodeName") or is_terminating(pod):
            return None
        return f"{_POD}{meta.get('namespace')}/{meta.get('name')}"

    async def run(self) -> None:
        await asyncio.gather(self.nodes.wait_synced(), self.leases.wait_synced(), self.pods.wait_synced())
        monitor = asyncio.create_task(self._monitor(), name="nodelifecycle-monitor")
        try:
            await super().run()
        finally:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor

    async def _monitor(self) -> None:
        """monitorNodeHealth's period: every node is looked at again even when nothing changed,
        since silence is exactly what this controller watches for."""
        while True:
            for name in self.nodes.keys():
                self.enqueue_key(_NODE + name)
            await asyncio.sleep(self.period)

    async def reconcile(self, key: str) -> None:
        if key.startswith(_NODE):
            await self._sync_node(key[len(_NODE):])
        elif key.startswith(_POD):
            await self._sync_pod(key[len(_POD):])

    # ---- node health -----------------------------------------------------------------------------

    def _silence(self, name: str, node: dict[str, Any]) -> float:
        """Seconds since this node's heartbeat last changed, as seen by this controller."""
        ready = node_condition(node, "Ready") or {}
        lease = self.leases.get(f"{NODE_LEASE_NAMESPACE}/{name}")
        # Not the condition's status: this controller's own Ready=Unknown write is no heartbeat.
        beat = (ready.get("lastHeartbeatTime"), ((lease or {}).get("spec") or {}).get("renewTime"))
        now = time.monotonic()
        seen = self._health.get(name)
        if seen is None or seen[0] != beat:
            self._health[name] = (beat, now)
            return 0.0
        return now - seen[1]

    async def _sync_node(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None:
            self._health.pop(name, None)
            for k in [k for k in self._taint_seen if k[0] == name]:
                del self._taint_seen[k]
            return
        silence = self._silence(name, node)
        ready = node_condition(node, "Ready")
        if silence >= self.grace:
            if ready is None or ready.get("status") != "Unknown":
                node = await self._mark_unknown(node)
        else:
            # Look again right when the grace period would run out.
            self.queue.add_after(_NODE + name, self.grace - silence + 0.01)
        node = await self._sync_taints(node)
        ready = node_condition(node, "Ready")
        if ready is not None and ready.get("status") == "Unknown":
            await self._mark_pods_not_ready(name)
        if any(t.get("effect") == "NoExecute" for t in (node.get("spec") or {}).get("taints") or ()):
            for pod in self.pods.by_index(POD_NODE_INDEX, name):
                key = self._pod_key(pod)
                if key:
                    self.enqueue_key(key)

    async def _mark_unknown(self, node: dict[str, Any]) -> dict[str, Any]:
        new = copy.deepcopy(node)
        status = new.setdefault("status", {})
        conditions = status.setdefault("conditions", [])
        now = now_rfc3339()
        for type_ in KUBELET_CONDITIONS:
            cond = next((c for c in conditions if isinstance(c, dict) and c.get("type") == type_), None)
            if cond is None:
                conditions.append({"type": type_, "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                                   "message": "Kubelet never posted node status.",
                                   "lastHeartbeatTime": new["metadata"].get("creationTimestamp"),
                                   "lastTransitionTime": now})
            elif cond.get("status") != "Unknown":
                cond.update(status="Unknown", reason="NodeStatusUnknown",
                            message="Kubelet stopped posting node status.", lastTransitionTime=now)
        written = await self.client.update_status("nodes", new)
        written.setdefault("apiVersion", "v1")
        written.setdefault("kind", "Node")
        name = node["metadata"]["name"]
        self.log.info("node %s: no heartbeat for %.0fs: Ready=Unknown", name, self.grace)
        await self.ctx.events.record(written, "Normal", "NodeNotReady",
                                     f"Node {name} status is now: NodeNotReady")
        return written

    async def _sync_taints(self, node: dict[str, Any]) -> dict[str, Any]:
        managed = (TAINT_NOT_READY, TAINT_UNREACHABLE)
        current = [t for t in (node.get("spec") or {}).get("taints") or () if isinstance(t, dict)]
        want = desired_taints(node)
        have = {(t.get("key"), t.get("effect")) for t in current if t.get("key") in managed}
        if have == set(want):
            return node
        taints = [t for t in current if t.get("key") not in managed
                  or (t.get("key"), t.get("effect")) in want]
        now = now_rfc3339()
        for key, effect in want:
            if (key, effect) not in have:
                taint = {"key": key, "effect": effect}
                if effect == "NoExecute":
                    taint["timeAdded"] = now  # eviction timers count from here
                taints.append(taint)
        new = copy.deepcopy(node)
        if taints:
            new.setdefault("spec", {})["taints"] = taints
        else:
            new.setdefault("spec", {}).pop("taints", None)
        written = await self.client.update("nodes", new)
        written.setdefault("apiVersion", "v1")
        written.setdefault("kind", "Node")
        self.log.info("node %s: taints %s", node["metadata"]["name"],
                      ", ".join(f"{k}:{e}" for k, e in want) or "cleared")
        return written

    async def _mark_pods_not_ready(self, node_name: str) -> None:
        failed: Exception | None = None
        for pod in self.pods.by_index(POD_NODE_INDEX, node_name):
            if not is_ready(pod) or is_terminating(pod):
                continue
            new = copy.deepcopy(pod)
            now = now_rfc3339()
            for cond in new["status"].get("conditions") or ():
                if cond.get("type") == "Ready":
                    cond.update(status="False", lastTransitionTime=now)
            try:
                await self.client.update_status("pods", new)
            except ApiStatusError as e:
                if e.code != 404:
                    failed = e
        if failed is not None:
            raise failed

    # ---- taint-based eviction --------------------------------------------------------------------

    async def _sync_pod(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None or is_terminating(pod):
            return
        node_name = (pod.get("spec") or {}).get("nodeName")
        node = self.nodes.get(node_name) if node_name else None
        if node is None:
            return
        taints = [t for t in (node.get("spec") or {}).get("taints") or ()
                  if isinstance(t, dict) and t.get("effect") == "NoExecute"]
        if not taints:
            return
        delay = eviction_delay(pod, taints, default_timeout=self.eviction_timeout)
        if delay is None:
            return
        since = max(self._taint_time(node_name, t) for t in taints)
        left = since + delay - time.time()
        if left > 0:
            self.queue.add_after(_POD + key, left + 0.01)
            return
        await self._evict(pod)

    def _taint_time(self, node: str, taint: dict[str, Any]) -> float:
        added = parse_time(taint.get("timeAdded"))
        if added is not None:
            return added
        return self._taint_seen.setdefault((node, str(taint.get("key"))), time.time())

    async def _evict(self, pod: dict[str, Any]) -> None:
        ns, name = pod["metadata"].get("namespace"), pod["metadata"]["name"]
        try:
            # The uid precondition: a pod recreated under the same name meanwhile is not ours to delete.
            await self.client.delete("pods", name, ns, preconditions={"uid": pod["metadata"].get("uid")})
        except ApiStatusError as e:
            if e.code in (404, 409):
                return
            raise
        self.log.info("evicted pod %s/%s from node %s", ns, name, pod["spec"].get("nodeName"))
        await self.ctx.events.record(pod, "Normal", "TaintManagerEviction",
                                     f"Marking for deletion Pod {ns}/{name}")
