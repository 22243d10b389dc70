"""The DaemonSet controller: one pod of the template on every eligible node.

A node is eligible when it matches the pod's nodeSelector and required node affinity and every
NoSchedule/NoExecute taint on it is tolerated. A DaemonSet pod keeps running on a node that stops
being eligible only through NoSchedule taints (as in Kubernetes: NoSchedule keeps new pods off,
NoExecute evicts). Daemon pods get the standard DaemonSet tolerations (not-ready, unreachable,
disk/memory/pid-pressure, unschedulable) so that node trouble does not evict them.

Placement: the pod is created with ``spec.nodeName`` set, i.e. bound directly (the pre-1.12
Kubernetes way), so daemon pods run even with no scheduler in the cluster. It also carries the
``metadata.name`` matchFields node affinity Kubernetes adds today, so the pod spec reads the same.

Versions: the template's hash is the ``controller-revision-hash`` pod label (no ControllerRevision
objects are kept). RollingUpdate replaces outdated pods with at most ``maxUnavailable`` daemon pods
unavailable at a time (unavailable outdated pods are replaced first, for free); OnDelete replaces a
pod only once someone deletes it.
"""

from __future__ import annotations

import asyncio
import copy
from collections import defaultdict
from typing import Any

from minikube_py.client.rest import ApiStatusError
from minikube_py.scheduler.podinfo import InvalidPod, node_selector_term_matcher, tolerated

from . import podutil
from .base import Controller, ControllerContext, controller_ref
from .replicaset import pod_from_template

DS = "daemonsets.apps"
REVISION_HASH = "controller-revision-hash"
TEMPLATE_GENERATION = "pod-template-generation"

# util.AddOrUpdateDaemonPodTolerations: daemons run through node conditions that keep other pods off.
DAEMON_TOLERATIONS = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
)


class DaemonSetController(Controller):
    name = "daemonset"
    workers = 2

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.sets = ctx.informers.informer(DS)
        self.pods = ctx.informers.informer("pods")
        self.nodes = ctx.informers.informer("nodes")
        podutil.ensure_controller_uid_index(self.pods)
        self.expectations = podutil.Expectations()
        self.sets.add_handlers(**self.handlers())
        self.pods.add_handlers(self._pod_added, self._pod_updated, self._pod_deleted)
        self.nodes.add_handlers(self._node_added, self._node_updated, self._node_added)

    async def run(self) -> None:
        await asyncio.gather(self.sets.wait_synced(), self.pods.wait_synced(), self.nodes.wait_synced())
        await super().run()

    # ---- event handlers: only enqueue ---------------------------------------------------------------

    def _owner_key(self, pod: dict[str, Any]) -> str | None:
        return podutil.live_owner_key(pod, "DaemonSet", self.sets)

    def _enqueue_matching(self, pod: dict[str, Any]) -> None:
        for ds in podutil.selecting_owners(pod, self.sets):
            self.enqueue(ds)

    def _pod_added(self, pod: dict[str, Any]) -> None:
        key = self._owner_key(pod)
        if key is None:
            if controller_ref(pod) is None:
                self._enqueue_matching(pod)
            return
        if podutil.is_terminating(pod):
            self.expectations.deletion_observed(key, podutil.pod_key(pod))
        else:
            self.expectations.creation_observed(key)
        self.enqueue_key(key)

    def _pod_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        key = self._owner_key(new)
        if key is not None and podutil.is_terminating(new) and not podutil.is_terminating(old):
            self.expectations.deletion_observed(key, podutil.pod_key(new))
        old_key = self._owner_key(old)
        if old_key is not None and old_key != key:
            self.enqueue_key(old_key)
        if key is not None:
            self.enqueue_key(key)
        elif controller_ref(new) is None and podutil.labels_of(old) != podutil.labels_of(new):
            self._enqueue_matching(new)

    def _pod_deleted(self, pod: dict[str, Any]) -> None:
        key = self._owner_key(pod)
        if key is not None:
            self.expectations.deletion_observed(key, podutil.pod_key(pod))
            self.enqueue_key(key)

    def _node_added(self, node: dict[str, Any]) -> None:
        for ds in self.sets.list():
            self.enqueue(ds)

    def _node_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        # Only what decides eligibility or readiness matters; heartbeats must not wake every DaemonSet.
        if (podutil.labels_of(old) != podutil.labels_of(new) or _spec(old) != _spec(new)
                or _ready_status(old) != _ready_status(new)):
            self._node_added(new)

    # ---- reconcile ----------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        cached = self.sets.get(key)
        if cached is None:
            self.expectations.forget(key)
            return
        ds = copy.deepcopy(cached)
        try:
            selector = podutil.selector_of(ds)
            max_unavailable_spec = ((_spec(ds).get("updateStrategy") or {}).get("rollingUpdate") or {}).get(
                "maxUnavailable", 1)
            podutil.int_or_percent(max_unavailable_spec, 1, True)  # validated here, used on rollout
        except podutil.InvalidSpec as e:
            self.log.warning("daemonset %s: %s", key, e)
            return
        template = _spec(ds).get("template") or {}
        current_hash = podutil.template_hash(template)
        pods = await self._claim_pods(ds, selector)
        by_node: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for pod in pods:
            node = _pod_node(pod)
            if node:
                by_node[node].append(pod)
        nodes = self.nodes.list()
        try:
            placement = {n["metadata"]["name"]: node_placement(ds, n) for n in nodes}
        except InvalidPod as e:
            self.log.warning("daemonset %s: %s", key, e)
            await self.ctx.events.record(ds, "Warning", "InvalidSpec", str(e))
            return
        if self.expectations.satisfied(key) and not podutil.is_terminating(ds):
            create: list[str] = []
            delete: list[dict[str, Any]] = []
            for node_name, (should_run, should_continue) in placement.items():
                here = sorted(by_node.get(node_name, []), key=_age)
                running = [p for p in here if not podutil.is_terminating(p)]
                failed = [p for p in running if (p.get("status") or {}).get("phase") == "Failed"]
                delete.extend(failed)  # a failed daemon pod is replaced, as Kubernetes does
                running = [p for p in running if p not in failed]
                if should_run and not running and not any(podutil.is_terminating(p) for p in here):
                    create.append(node_name)
                elif should_continue and len(running) > 1:
                    delete.extend(running[1:])  # keep the oldest
                elif not should_continue:
                    delete.extend(running)
            # Pods on nodes that are gone are deleted too (the pod GC would, eventually).
            for node_name, here in by_node.items():
                if node_name not in placement:
                    delete.extend(p for p in here if not podutil.is_terminating(p))
            if not create and not delete and _spec(ds).get("updateStrategy", {}).get("type") != "OnDelete":
                delete = self._rolling_update_victims(ds, by_node, placement, current_hash,
                                                      max_unavailable_spec)
            await self._act(ds, key, create, delete, current_hash)
        await self._write_status(ds, by_node, placement, current_hash)
        min_ready = int(_spec(ds).get("minReadySeconds") or 0)
        waits = [w for p in pods if (w := podutil.seconds_until_available(p, min_ready)) is not None]
        if waits:
            self.queue.add_after(key, min(waits) + 0.05)

    async def _claim_pods(self, ds: dict[str, Any], selector: Any) -> list[dict[str, Any]]:
        return await podutil.claim(self.client, ds, DS, self.pods.list(ds["metadata"]["namespace"]), "pods",
                                   selector)

    def _rolling_update_victims(self, ds: dict[str, Any], by_node: dict[str, list[dict[str, Any]]],
                                placement: dict[str, tuple[bool, bool]], current_hash: str,
                                max_unavailable_spec: Any) -> list[dict[str, Any]]:
        """rollingUpdate: outdated pods to delete now (their replacements come on the next sync)."""
        min_ready = int(_spec(ds).get("minReadySeconds") or 0)
        desired = [n for n, (run, _) in placement.items() if run]
        max_unavailable = podutil.int_or_percent(max_unavailable_spec, len(desired), True)
        if max_unavailable <= 0:
            max_unavailable = 1
        unavailable = 0
        old_available: list[dict[str, Any]] = []
        victims: list[dict[str, Any]] = []
        for node in desired:
            pods = [p for p in by_node.get(node, []) if not podutil.is_terminating(p)]
            if not pods:
                unavailable += 1
                continue
            pod = pods[0]
            outdated = podutil.labels_of(pod).get(REVISION_HASH) != current_hash
            available = podutil.is_available(pod, min_ready)
            if not available:
                unavailable += 1
                if outdated:
                    victims.append(pod)  # already unavailable: replacing it costs nothing
            elif outdated:
                old_available.append(pod)
        budget = max_unavailable - unavailable
        victims.extend(sorted(old_available, key=_age)[:max(0, budget)])
        return victims

    async def _act(self, ds: dict[str, Any], key: str, create: list[str], delete: list[dict[str, Any]],
                   current_hash: str) -> None:
        deleting = {podutil.pod_key(p): p for p in delete}
        self.expectations.expect(key, len(create), deleting)
        error: ApiStatusError | None = None
        pending = list(create)
        for size in podutil.slow_start_batches(len(create)):
            batch, pending = pending[:size], pending[size:]
            results = await asyncio.gather(*(self._create_on(ds, n, current_hash) for n in batch),
                                           return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            for r in failures:
                if not isinstance(r, ApiStatusError):
                    raise r
                error = r
            if failures:
                # Neither the failed nor the skipped pods will ever be observed.
                self.expectations.creation_observed(key, len(failures) + len(pending))
                break
        for pkey, pod in deleting.items():
            m = pod["metadata"]
            try:
                await self.client.delete("pods", m["name"], m["namespace"], preconditions={"uid": m["uid"]})
            except ApiStatusError as ex:
                self.expectations.deletion_observed(key, pkey)
                if ex.code not in (404, 409):
                    error = ex
                continue
            await self.ctx.events.record(ds, "Normal", "SuccessfulDelete", f"Deleted pod: {m['name']}")
        if error is not None:
            await self.ctx.events.record(ds, "Warning", "FailedDaemonPod", error.message)
            raise error

    async def _create_on(self, ds: dict[str, Any], node_name: str, current_hash: str) -> None:
        template = copy.deepcopy(_spec(ds).get("template") or {})
        pod = pod_from_template(ds, template, extra_labels={
            REVISION_HASH: current_hash, TEMPLATE_GENERATION: str(ds["metadata"].get("generation", 1))})
        spec = pod["spec"]
        spec["nodeName"] = node_name
        spec["affinity"] = _with_node_name_affinity(spec.get("affinity"), node_name)
        tolerations = list(spec.get("tolerations") or [])
        have = {(t.get("key"), t.get("effect")) for t in tolerations}
        tolerations.extend(dict(t) for t in DAEMON_TOLERATIONS if (t["key"], t["effect"]) not in have)
        spec["tolerations"] = tolerations
        created = await self.client.create("pods", pod, ds["metadata"]["namespace"])
        await self.ctx.events.record(ds, "Normal", "SuccessfulCreate",
                                     f"Created pod: {created['metadata']['name']}")

    async def _write_status(self, ds: dict[str, Any], by_node: dict[str, list[dict[str, Any]]],
                            placement: dict[str, tuple[bool, bool]], current_hash: str) -> None:
        min_ready = int(_spec(ds).get("minReadySeconds") or 0)
        desired = scheduled = misscheduled = ready = available = updated = 0
        for node_name, (should_run, should_continue) in placement.items():
            pods = [p for p in by_node.get(node_name, []) if not podutil.is_terminating(p)]
            if should_run:
                desired += 1
            if pods and (should_run or should_continue):
                scheduled += 1
                pod = sorted(pods, key=_age)[0]
                if podutil.is_ready(pod):
                    ready += 1
                if podutil.is_available(pod, min_ready):
                    available += 1
                if podutil.labels_of(pod).get(REVISION_HASH) == current_hash:
                    updated += 1
            elif pods:
                misscheduled += 1
        status: dict[str, Any] = {
            "currentNumberScheduled": scheduled, "numberMisscheduled": misscheduled,
            "desiredNumberScheduled": desired, "numberReady": ready, "numberAvailable": available,
            "numberUnavailable": max(0, desired - available), "updatedNumberScheduled": updated,
            "observedGeneration": ds["metadata"].get("generation", 1),
        }
        old = ds.get("status") or {}
        if all(old.get(k) == v for k, v in status.items()):
            return
        try:
            await self.client.update_status(DS, {**ds, "status": {**old, **status}})
        except ApiStatusError as e:
            if e.code != 404:
                raise


# ---- node eligibility ------------------------------------------------------------------------------

def node_placement(ds: dict[str, Any], node: dict[str, Any]) -> tuple[bool, bool]:
    """(should run: a new daemon pod goes there, should continue running: an existing one stays)."""
    spec = (_spec(ds).get("template") or {}).get("spec") or {}
    labels = podutil.labels_of(node)
    name = node["metadata"]["name"]
    for k, v in (spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False, False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms")
    if terms is not None and not any(node_selector_term_matcher(t)(labels, name) for t in terms):
        return False, False
    tolerations = list(spec.get("tolerations") or []) + list(DAEMON_TOLERATIONS)
    should_run = should_continue = True
    for taint in _spec(node).get("taints") or ():
        effect = taint.get("effect")
        if effect not in ("NoSchedule", "NoExecute") or tolerated(tolerations, taint):
            continue
        should_run = False
        if effect == "NoExecute":
            should_continue = False
    return should_run, should_continue


def _with_node_name_affinity(affinity: dict[str, Any] | None, node_name: str) -> dict[str, Any]:
    """util.ReplaceDaemonSetPodNodeNameNodeAffinity: required node affinity pinned to one node name."""
    affinity = copy.deepcopy(affinity or {})
    node_affinity = affinity.setdefault("nodeAffinity", {})
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    terms = required.get("nodeSelectorTerms") or []
    if terms:
        for t in terms:
            t["matchFields"] = term["matchFields"]
    else:
        terms = [term]
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": terms}
    return affinity


def _pod_node(pod: dict[str, Any]) -> str | None:
    name = _spec(pod).get("nodeName")
    if name:
        return str(name)
    terms = ((((_spec(pod).get("affinity") or {}).get("nodeAffinity") or {})
              .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or [])
    for t in terms:
        for f in t.get("matchFields") or ():
            values = f.get("values") or []
            if f.get("key") == "metadata.name" and f.get("operator") == "In" and len(values) == 1:
                return str(f["values"][0])
    return None


def _spec(obj: dict[str, Any] | None) -> dict[str, Any]:
    return (obj or {}).get("spec") or {}


def _ready_status(node: dict[str, Any]) -> str | None:
    for c in (node.get("status") or {}).get("conditions") or ():
        if c.get("type") == "Ready":
            return c.get("status")
    return None


def _age(pod: dict[str, Any]) -> tuple[float, str]:
    m = pod["metadata"]
    return (podutil.parse_time(m.get("creationTimestamp")) or 0.0, m.get("name") or "")
