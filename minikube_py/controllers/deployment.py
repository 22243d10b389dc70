"""The Deployment controller: rolls a Deployment's pod template out through ReplicaSets.

Each template gets a ReplicaSet ``<deployment>-<pod-template-hash>`` (the hash is added to the
ReplicaSet's selector and template labels, so ReplicaSets of one Deployment never fight over pods).
The ReplicaSet whose template equals the Deployment's (ignoring the hash label) is the "new" one; a
rollback is nothing but a template change back to an older ReplicaSet's template, which is then
reused and gets the next revision number (its old one goes to ``revision-history``).

Strategies follow kube-controller-manager's ``pkg/controller/deployment``:

* RollingUpdate: scale the new ReplicaSet up while the total stays within ``replicas + maxSurge``
  (percent rounds up), scale old ones down while available pods stay at least ``replicas -
  maxUnavailable`` (percent rounds down). Unhealthy old pods go first. Available counts use
  ``min(spec.replicas, status.availableReplicas)`` per ReplicaSet, so a ReplicaSet whose status has
  not yet caught up with a scale-down is never counted as more available than it will be.
* Recreate: scale every old ReplicaSet to 0, wait until none of their pods exists, then create or
  scale up the new one.
* Scaling (``spec.replicas`` changed, seen through the ``desired-replicas`` annotation): with one
  active ReplicaSet it is scaled directly; mid-rollout the difference is spread over the active
  ReplicaSets in proportion to their sizes (leftovers to the largest), a simplification of
  Kubernetes' proportional scaling that ignores the ``max-replicas`` annotation.
* ``spec.paused``: only scaling happens, no rollout progress; the Progressing condition says so.

Status carries replicas, updatedReplicas, readyReplicas, availableReplicas, unavailableReplicas,
observedGeneration and the Available and Progressing conditions that ``kubectl rollout status`` reads.
"""

from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import dataclass, field
from typing import Any

from minikube_py.client.rest import ApiStatusError

from . import podutil
from .base import Controller, ControllerContext, controller_ref, owner_reference

DEPLOY = "deployments.apps"
RS = "replicasets.apps"

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
# Deployment annotations that are the controller's own or kubectl's, never copied to ReplicaSets.
_NOT_COPIED = frozenset({
    "kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY, DESIRED_REPLICAS,
    MAX_REPLICAS, "deprecated.deployment.rollback.to",
})
# progressDeadlineSeconds of MaxInt32 means "no deadline", as in Kubernetes.
_NO_DEADLINE = 2**31 - 1


@dataclass
class _Rollout:
    """One reconcile's view: the latest Deployment written or read, and its ReplicaSets."""

    key: str
    d: dict[str, Any]
    sets: list[dict[str, Any]]
    new: dict[str, Any] | None = None
    old: list[dict[str, Any]] = field(default_factory=list)

    @property
    def replicas(self) -> int:
        return _replicas(self.d)

    @property
    def all(self) -> list[dict[str, Any]]:
        return [*self.old, self.new] if self.new is not None else list(self.old)


class DeploymentController(Controller):
    name = "deployment"
    workers = 5

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.deployments = ctx.informers.informer(DEPLOY)
        self.sets = ctx.informers.informer(RS)
        self.pods = ctx.informers.informer("pods")
        podutil.ensure_controller_uid_index(self.pods)
        self.deployments.add_handlers(**self.handlers())
        self.sets.add_handlers(self._rs_changed, self._rs_updated, self._rs_changed)
        self.pods.add_handlers(on_delete=self._pod_deleted)

    async def run(self) -> None:
        await asyncio.gather(self.deployments.wait_synced(), self.sets.wait_synced(), self.pods.wait_synced())
        await super().run()

    # ---- event handlers: only enqueue ---------------------------------------------------------------

    def _owner_key(self, rs: dict[str, Any]) -> str | None:
        return podutil.live_owner_key(rs, "Deployment", self.deployments)

    def _rs_changed(self, rs: dict[str, Any]) -> None:
        key = self._owner_key(rs)
        if key is not None:
            self.enqueue_key(key)
        elif controller_ref(rs) is None:
            for d in podutil.selecting_owners(rs, self.deployments):
                self.enqueue(d)

    def _rs_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        old_key = self._owner_key(old)
        if old_key is not None and old_key != self._owner_key(new):
            self.enqueue_key(old_key)
        self._rs_changed(new)

    def _pod_deleted(self, pod: dict[str, Any]) -> None:
        # Recreate waits for every old pod to be gone: their deletions must wake the Deployment.
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        rs = self.sets.get(f"{pod['metadata'].get('namespace')}/{ref.get('name')}")
        if rs is not None:
            key = self._owner_key(rs)
            if key is not None:
                self.enqueue_key(key)

    # ---- reconcile ----------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        cached = self.deployments.get(key)
        if cached is None:
            return
        d = copy.deepcopy(cached)
        try:
            selector = podutil.selector_of(d)
            _fenceposts(d)  # validates maxSurge/maxUnavailable once, up front
        except podutil.InvalidSpec as e:
            await self.ctx.events.record(d, "Warning", "InvalidSpec", str(e))
            return  # retrying cannot help until the object changes, which enqueues it again
        if selector.empty():
            await self.ctx.events.record(
                d, "Warning", "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.")
            return
        r = _Rollout(key, d, await self._claim_sets(d, selector))
        if podutil.is_terminating(d):
            self._split(r)
            await self._sync_status(r)
            return
        await self._check_paused_condition(r)
        if _spec(r.d).get("paused"):
            await self._sync(r)
            return
        if self._is_scaling_event(r):
            await self._sync(r)
            return
        if (_spec(r.d).get("strategy") or {}).get("type") == "Recreate":
            await self._rollout_recreate(r)
        else:
            await self._rollout_rolling(r)

    async def _claim_sets(self, d: dict[str, Any], selector: Any) -> list[dict[str, Any]]:
        return await podutil.claim(self.client, d, DEPLOY, self.sets.list(d["metadata"]["namespace"]), RS,
                                   selector)

    def _is_scaling_event(self, r: _Rollout) -> bool:
        for rs in r.sets:
            if _replicas(rs) <= 0:
                continue
            desired = (rs["metadata"].get("annotations") or {}).get(DESIRED_REPLICAS)
            if desired is not None and desired != str(r.replicas):
                return True
        return False

    # ---- the new and old ReplicaSets ----------------------------------------------------------------

    def _split(self, r: _Rollout) -> None:
        """FindNewReplicaSet (the oldest with an equal template) and FindOldReplicaSets (the rest)."""
        template = _spec(r.d).get("template")
        ordered = sorted(r.sets, key=_age_key)
        r.new = next((rs for rs in ordered if podutil.templates_equal(_spec(rs).get("template"), template)),
                     None)
        r.old = [rs for rs in ordered if rs is not r.new]

    async def _sync_revision(self, r: _Rollout, create: bool) -> None:
        """getAllReplicaSetsAndSyncRevision: find (or create) the new ReplicaSet, give it the next
        revision, and mirror that revision on the Deployment."""
        self._split(r)
        max_old = max((_revision(rs) for rs in r.old), default=0)
        new_revision = str(max_old + 1)
        if r.new is not None:
            rs = copy.deepcopy(r.new)
            changed = _set_new_rs_annotations(r.d, rs, new_revision, exists=True)
            min_ready = _spec(r.d).get("minReadySeconds", 0)
            if _spec(rs).get("minReadySeconds", 0) != min_ready:
                rs["spec"]["minReadySeconds"] = min_ready
                changed = True
            if changed:
                r.new = await self.client.update(RS, rs)
            await self._set_deployment_revision(r, (r.new["metadata"].get("annotations") or {}).get(REVISION))
            if _has_deadline(r.d) and _condition(r.d, "Progressing") is None:
                status = copy.deepcopy(r.d.get("status") or {})
                _set_condition(status, "Progressing", "True", "FoundNewReplicaSet",
                               f'Found new replica set "{r.new["metadata"]["name"]}"')
                await self._write_status(r, status)
            return
        if not create:
            return
        await self._create_new_rs(r, new_revision)

    async def _create_new_rs(self, r: _Rollout, revision: str) -> None:
        d = r.d
        spec = _spec(d)
        collisions = (d.get("status") or {}).get("collisionCount")
        template = copy.deepcopy(spec.get("template") or {})
        hash_ = podutil.template_hash(template, collisions)
        tmeta = template.setdefault("metadata", {})
        tmeta["labels"] = {**(tmeta.get("labels") or {}), podutil.POD_TEMPLATE_HASH: hash_}
        selector = copy.deepcopy(spec.get("selector") or {})
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), podutil.POD_TEMPLATE_HASH: hash_}
        replicas = _new_rs_replicas(d, r.old, None)
        rs: dict[str, Any] = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"{d['metadata']['name']}-{hash_}", "namespace": d["metadata"]["namespace"],
                         "labels": dict(tmeta["labels"]), "annotations": {},
                         "ownerReferences": [owner_reference(d)]},
            "spec": {"replicas": replicas, "minReadySeconds": spec.get("minReadySeconds", 0),
                     "selector": selector, "template": template},
        }
        _set_new_rs_annotations(d, rs, revision, exists=False)
        rs["metadata"]["annotations"][DESIRED_REPLICAS] = str(r.replicas)
        rs["metadata"]["annotations"][MAX_REPLICAS] = str(r.replicas + _max_surge(d))
        try:
            created = await self.client.create(RS, rs)
        except ApiStatusError as e:
            if e.code != 409:
                raise
            existing = await self.client.get_or_none(RS, rs["metadata"]["name"], rs["metadata"]["namespace"])
            if (existing is not None and podutil.owned_by(existing, d)
                    and podutil.templates_equal(_spec(existing).get("template"), spec.get("template"))):
                # Our own ReplicaSet the informer has not shown yet: use it.
                r.new = existing
                return
            # A hash collision with someone else's ReplicaSet: bump collisionCount, retry with a new name.
            status = copy.deepcopy(d.get("status") or {})
            status["collisionCount"] = int(collisions or 0) + 1
            await self._write_status(r, status)
            raise
        r.new = created
        name = created["metadata"]["name"]
        if replicas > 0:
            await self.ctx.events.record(d, "Normal", "ScalingReplicaSet",
                                         f"Scaled up replica set {name} to {replicas}")
        await self._set_deployment_revision(r, revision)
        if _has_deadline(d):
            status = copy.deepcopy(r.d.get("status") or {})
            _set_condition(status, "Progressing", "True", "NewReplicaSetCreated",
                           f'Created new replica set "{name}"')
            await self._write_status(r, status)

    async def _set_deployment_revision(self, r: _Rollout, revision: str | None) -> None:
        annotations = r.d["metadata"].get("annotations") or {}
        if revision is None or annotations.get(REVISION) == revision:
            return
        d = copy.deepcopy(r.d)
        d["metadata"].setdefault("annotations", {})[REVISION] = revision
        r.d = await self.client.update(DEPLOY, d)

    async def _scale(self, r: _Rollout, rs: dict[str, Any], size: int) -> dict[str, Any]:
        """scaleReplicaSet: set the size and the desired/max-replicas annotations; an event on size change."""
        annotations = rs["metadata"].get("annotations") or {}
        want = {DESIRED_REPLICAS: str(r.replicas), MAX_REPLICAS: str(r.replicas + _max_surge(r.d))}
        before = _replicas(rs)
        if before == size and all(annotations.get(k) == v for k, v in want.items()):
            return rs
        new = copy.deepcopy(rs)
        new["spec"]["replicas"] = size
        new["metadata"]["annotations"] = {**annotations, **want}
        updated = await self.client.update(RS, new)
        if before != size:
            direction = "up" if size > before else "down"
            await self.ctx.events.record(r.d, "Normal", "ScalingReplicaSet",
                                         f"Scaled {direction} replica set {rs['metadata']['name']} to {size} "
                                         f"from {before}")
        self._replace(r, rs, updated)
        return updated

    @staticmethod
    def _replace(r: _Rollout, old: dict[str, Any], new: dict[str, Any]) -> None:
        if r.new is old:
            r.new = new
        r.old = [new if rs is old else rs for rs in r.old]

    # ---- RollingUpdate ------------------------------------------------------------------------------

    async def _rollout_rolling(self, r: _Rollout) -> None:
        await self._sync_revision(r, create=True)
        if await self._reconcile_new(r) or await self._reconcile_old(r):
            await self._sync_rollout_status(r)
            return
        if _complete(r.d, _calculate_status(r)):
            await self._cleanup(r)
        await self._sync_rollout_status(r)

    async def _reconcile_new(self, r: _Rollout) -> bool:
        if r.new is None:
            return False
        current = _replicas(r.new)
        if current == r.replicas:
            return False
        size = r.replicas if current > r.replicas else _new_rs_replicas(r.d, r.old, r.new)
        if size == current:
            return False
        await self._scale(r, r.new, size)
        return True

    async def _reconcile_old(self, r: _Rollout) -> bool:
        if sum(_replicas(rs) for rs in r.old) == 0:
            return False
        all_pods = sum(_replicas(rs) for rs in r.all)
        min_available = r.replicas - _max_unavailable(r.d)
        new_unavailable = (_replicas(r.new) - _available(r.new)) if r.new is not None else 0
        max_scaled_down = all_pods - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        # Old pods that are not available go first: removing them costs no availability.
        cleaned = 0
        for rs in sorted(r.old, key=_age_key):
            if cleaned >= max_scaled_down:
                break
            unhealthy = _replicas(rs) - _available(rs)
            if _replicas(rs) == 0 or unhealthy <= 0:
                continue
            down = min(max_scaled_down - cleaned, unhealthy)
            await self._scale(r, rs, _replicas(rs) - down)
            cleaned += down
        # Then available old pods, as far as the availability floor allows.
        available = sum(_available(rs) for rs in r.all)
        budget = available - min_available
        scaled = 0
        for rs in sorted(r.old, key=_age_key):
            if scaled >= budget:
                break
            if _replicas(rs) == 0:
                continue
            down = min(_replicas(rs), budget - scaled)
            await self._scale(r, rs, _replicas(rs) - down)
            scaled += down
        return cleaned + max(scaled, 0) > 0

    # ---- Recreate -----------------------------------------------------------------------------------

    async def _rollout_recreate(self, r: _Rollout) -> None:
        await self._sync_revision(r, create=False)
        scaled_down = False
        for rs in list(r.old):
            if _replicas(rs) > 0:
                await self._scale(r, rs, 0)
                scaled_down = True
        if scaled_down or self._old_pods_running(r):
            await self._sync_rollout_status(r)
            return
        if r.new is None:
            await self._sync_revision(r, create=True)
        if r.new is not None and _replicas(r.new) != r.replicas:
            await self._scale(r, r.new, r.replicas)
        if _complete(r.d, _calculate_status(r)):
            await self._cleanup(r)
        await self._sync_rollout_status(r)

    def _old_pods_running(self, r: _Rollout) -> bool:
        for rs in r.old:
            if int((rs.get("status") or {}).get("replicas") or 0) > 0:
                return True
            for pod in self.pods.by_index(podutil.CONTROLLER_UID_INDEX, rs["metadata"]["uid"]):
                # A terminating pod still runs until the kubelet has stopped it.
                if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                    return True
        return False

    # ---- scaling and paused -------------------------------------------------------------------------

    async def _sync(self, r: _Rollout) -> None:
        """Scale only (a replicas change, or a paused Deployment), no rollout progress."""
        await self._sync_revision(r, create=False)
        await self._scale_deployment(r)
        if _spec(r.d).get("paused"):
            await self._cleanup(r)
        await self._sync_status(r)

    async def _scale_deployment(self, r: _Rollout) -> None:
        active = [rs for rs in r.all if _replicas(rs) > 0]
        if len(active) <= 1:
            target = active[0] if active else (r.new or max(r.old, key=_age_key, default=None))
            if target is not None and _replicas(target) != r.replicas:
                await self._scale(r, target, r.replicas)
            elif target is not None:
                await self._scale(r, target, _replicas(target))  # refresh the annotations only
            return
        if r.new is not None and _replicas(r.new) == r.replicas and _available(r.new) == r.replicas:
            for rs in list(r.old):
                await self._scale(r, rs, 0)
            return
        allowed = r.replicas + _max_surge(r.d) if r.replicas > 0 else 0
        current = sum(_replicas(rs) for rs in active)
        to_add = allowed - current
        if to_add == 0:
            for rs in active:
                await self._scale(r, rs, _replicas(rs))
            return
        # Biggest first (newest among equals): the leftover of the rounding goes there.
        ordered = sorted(active, key=lambda rs: (-_replicas(rs), -_age_key(rs)[0]))
        shares = []
        for rs in ordered:
            exact = _replicas(rs) * to_add / current
            shares.append(int(exact))  # int() rounds toward zero: never overshoots either way
        shares[0] += to_add - sum(shares)
        for rs, share in zip(ordered, shares, strict=True):
            await self._scale(r, rs, max(0, _replicas(rs) + share))

    async def _check_paused_condition(self, r: _Rollout) -> None:
        if not _has_deadline(r.d):
            return
        cond = _condition(r.d, "Progressing")
        if cond is not None and cond.get("reason") == "ProgressDeadlineExceeded":
            return
        paused = bool(_spec(r.d).get("paused"))
        was_paused = cond is not None and cond.get("reason") == "DeploymentPaused"
        status = copy.deepcopy(r.d.get("status") or {})
        if paused and not was_paused:
            _set_condition(status, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused")
        elif not paused and was_paused:
            _set_condition(status, "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed")
        else:
            return
        await self._write_status(r, status)

    async def _cleanup(self, r: _Rollout) -> None:
        """revisionHistoryLimit: delete the oldest old ReplicaSets that are scaled to zero and empty."""
        limit = _spec(r.d).get("revisionHistoryLimit")
        if limit is None:
            return
        cleanable = [rs for rs in r.old if _replicas(rs) == 0 and not podutil.is_terminating(rs)
                     and int((rs.get("status") or {}).get("replicas") or 0) == 0
                     and int((rs.get("status") or {}).get("observedGeneration") or 0)
                     >= int(rs["metadata"].get("generation") or 1)]
        surplus = len(cleanable) - int(limit)
        if surplus <= 0:
            return
        for rs in sorted(cleanable, key=lambda rs: (_revision(rs), _age_key(rs)))[:surplus]:
            m = rs["metadata"]
            try:
                await self.client.delete(RS, m["name"], m["namespace"], preconditions={"uid": m["uid"]})
            except ApiStatusError as e:
                if e.code not in (404, 409):
                    raise
            r.old = [x for x in r.old if x is not rs]

    # ---- status -------------------------------------------------------------------------------------

    async def _sync_status(self, r: _Rollout) -> None:
        status = _calculate_status(r)
        if status != (r.d.get("status") or {}):
            await self._write_status(r, status)

    async def _sync_rollout_status(self, r: _Rollout) -> None:
        status = _calculate_status(r)
        d = r.d
        if _has_deadline(d):
            cond = _condition(d, "Progressing")
            done_before = (status["replicas"] == status["updatedReplicas"] and cond is not None
                           and cond.get("reason") == "NewReplicaSetAvailable")
            name = r.new["metadata"]["name"] if r.new is not None else ""
            if not done_before:
                if _complete(d, status):
                    _set_condition(status, "Progressing", "True", "NewReplicaSetAvailable",
                                   f'ReplicaSet "{name}" has successfully progressed.')
                elif _progressing(d, status):
                    # Every bit of progress restarts the deadline: lastUpdateTime moves, transition stays.
                    _set_condition(status, "Progressing", "True", "ReplicaSetUpdated",
                                   f'ReplicaSet "{name}" is progressing.', refresh=True)
                elif _timed_out(d):
                    _set_condition(status, "Progressing", "False", "ProgressDeadlineExceeded",
                                   f'ReplicaSet "{name}" has timed out progressing.')
                    await self.ctx.events.record(d, "Warning", "ProgressDeadlineExceeded",
                                                 f'ReplicaSet "{name}" has timed out progressing.')
        failure = _condition(r.new, "ReplicaFailure") if r.new is not None else None
        conds = [c for c in status.get("conditions") or () if c.get("type") != "ReplicaFailure"]
        if failure is not None:
            conds.append(dict(failure))
        status["conditions"] = conds
        if status != (d.get("status") or {}):
            await self._write_status(r, status)
        self._requeue_stuck(r, status)

    def _requeue_stuck(self, r: _Rollout, status: dict[str, Any]) -> None:
        """Nothing else wakes a Deployment whose rollout stalls: come back when its deadline passes."""
        if not _has_deadline(r.d) or _complete(r.d, status):
            return
        cond = next((c for c in status.get("conditions") or () if c.get("type") == "Progressing"), None)
        if cond is None or cond.get("reason") in ("NewReplicaSetAvailable", "ProgressDeadlineExceeded"):
            return
        since = podutil.parse_time(cond.get("lastUpdateTime"))
        if since is None:
            return
        left = since + int(_spec(r.d).get("progressDeadlineSeconds")) - time.time()
        self.queue.add_after(r.key, max(left, 0) + 1.0)

    async def _write_status(self, r: _Rollout, status: dict[str, Any]) -> None:
        d = {**r.d, "status": status}
        r.d = await self.client.update_status(DEPLOY, d)


# ---- pure helpers ----------------------------------------------------------------------------------

def _spec(obj: dict[str, Any] | None) -> dict[str, Any]:
    return (obj or {}).get("spec") or {}


def _replicas(obj: dict[str, Any] | None) -> int:
    value = _spec(obj).get("replicas")
    return 1 if value is None else int(value)


def _available(rs: dict[str, Any] | None) -> int:
    """Available pods of a ReplicaSet, never more than it is asked to keep: a status written before a
    scale-down still counts pods that are about to be deleted."""
    if rs is None:
        return 0
    return min(int((rs.get("status") or {}).get("availableReplicas") or 0), _replicas(rs))


def _revision(rs: dict[str, Any]) -> int:
    value = (rs["metadata"].get("annotations") or {}).get(REVISION)
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def _age_key(obj: dict[str, Any]) -> tuple[float, str]:
    m = obj["metadata"]
    return (podutil.parse_time(m.get("creationTimestamp")) or 0.0, m.get("name") or "")


def _fenceposts(d: dict[str, Any]) -> tuple[int, int]:
    """ResolveFenceposts: (maxSurge rounded up, maxUnavailable rounded down); both 0 means 1 unavailable."""
    strategy = _spec(d).get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0, 0
    rolling = strategy.get("rollingUpdate") or {}
    replicas = _replicas(d)
    surge = podutil.int_or_percent(rolling.get("maxSurge"), replicas, True, "25%")
    unavailable = podutil.int_or_percent(rolling.get("maxUnavailable"), replicas, False, "25%")
    if surge < 0 or unavailable < 0:
        raise podutil.InvalidSpec("maxSurge and maxUnavailable must not be negative")
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _max_surge(d: dict[str, Any]) -> int:
    return _fenceposts(d)[0]


def _max_unavailable(d: dict[str, Any]) -> int:
    if _replicas(d) == 0:
        return 0
    return min(_fenceposts(d)[1], _replicas(d))


def _new_rs_replicas(d: dict[str, Any], old: list[dict[str, Any]], new: dict[str, Any] | None) -> int:
    """NewRSNewReplicas: how big the new ReplicaSet may be now."""
    replicas = _replicas(d)
    if (_spec(d).get("strategy") or {}).get("type") == "Recreate":
        return replicas
    current_new = _replicas(new) if new is not None else 0
    current = sum(_replicas(rs) for rs in old) + current_new
    max_total = replicas + _max_surge(d)
    if current >= max_total:
        return current_new
    return current_new + max(0, min(max_total - current, replicas - current_new))


def _set_new_rs_annotations(d: dict[str, Any], rs: dict[str, Any], revision: str, *, exists: bool) -> bool:
    annotations = rs["metadata"].setdefault("annotations", {})
    changed = False
    for k, v in (d["metadata"].get("annotations") or {}).items():
        if k not in _NOT_COPIED and annotations.get(k) != v:
            annotations[k] = v
            changed = True
    old_revision = annotations.get(REVISION)
    try:
        older = old_revision is None or int(old_revision) < int(revision)
    except ValueError:
        older = True
    if older:
        annotations[REVISION] = revision
        changed = True
        if exists and old_revision:
            history = annotations.get(REVISION_HISTORY)
            annotations[REVISION_HISTORY] = f"{history},{old_revision}" if history else old_revision
    return changed


def _calculate_status(r: _Rollout) -> dict[str, Any]:
    sets = r.all
    old = r.d.get("status") or {}
    st = [rs.get("status") or {} for rs in sets]
    available = sum(int(s.get("availableReplicas") or 0) for s in st)
    status: dict[str, Any] = {
        "observedGeneration": r.d["metadata"].get("generation", 1),
        "replicas": sum(int(s.get("replicas") or 0) for s in st),
        "updatedReplicas": int(((r.new or {}).get("status") or {}).get("replicas") or 0),
        "readyReplicas": sum(int(s.get("readyReplicas") or 0) for s in st),
        "availableReplicas": available,
        "unavailableReplicas": max(0, sum(_replicas(rs) for rs in sets) - available),
        "conditions": copy.deepcopy(old.get("conditions") or []),
    }
    if old.get("collisionCount") is not None:
        status["collisionCount"] = old["collisionCount"]
    if available >= r.replicas - _max_unavailable(r.d):
        _set_condition(status, "Available", "True", "MinimumReplicasAvailable",
                       "Deployment has minimum availability.")
    else:
        _set_condition(status, "Available", "False", "MinimumReplicasUnavailable",
                       "Deployment does not have minimum availability.")
    return status


def _condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or ():
        if c.get("type") == type_:
            return c
    return None


def _set_condition(status: dict[str, Any], type_: str, value: str, reason: str, message: str, *,
                   refresh: bool = False) -> None:
    """SetDeploymentCondition: same status and reason is no change (unless ``refresh``); same status
    keeps lastTransitionTime."""
    conds = status.setdefault("conditions", [])
    current = next((c for c in conds if c.get("type") == type_), None)
    unchanged = current is not None and current.get("status") == value and current.get("reason") == reason
    if unchanged and not refresh:
        return
    now = podutil.now_rfc3339()
    new = {"type": type_, "status": value, "lastUpdateTime": now, "lastTransitionTime": now,
           "reason": reason, "message": message}
    if current is not None and current.get("status") == value:
        new["lastTransitionTime"] = current.get("lastTransitionTime", now)
    status["conditions"] = [c for c in conds if c.get("type") != type_] + [new]


def _has_deadline(d: dict[str, Any]) -> bool:
    deadline = _spec(d).get("progressDeadlineSeconds")
    return deadline is not None and int(deadline) != _NO_DEADLINE


def _complete(d: dict[str, Any], status: dict[str, Any]) -> bool:
    n = _replicas(d)
    return (status.get("updatedReplicas") == n and status.get("replicas") == n
            and status.get("availableReplicas") == n
            and int(status.get("observedGeneration") or 0) >= int(d["metadata"].get("generation") or 1))


def _progressing(d: dict[str, Any], new: dict[str, Any]) -> bool:
    old = d.get("status") or {}

    def n(s: dict[str, Any], k: str) -> int:
        return int(s.get(k) or 0)

    return (n(new, "updatedReplicas") > n(old, "updatedReplicas")
            or n(old, "replicas") - n(old, "updatedReplicas") > n(new, "replicas") - n(new, "updatedReplicas")
            or n(new, "readyReplicas") > n(old, "readyReplicas")
            or n(new, "availableReplicas") > n(old, "availableReplicas"))


def _timed_out(d: dict[str, Any]) -> bool:
    cond = _condition(d, "Progressing")
    if cond is None or cond.get("reason") == "NewReplicaSetAvailable":
        return False
    if cond.get("reason") == "ProgressDeadlineExceeded":
        return True
    since = podutil.parse_time(cond.get("lastUpdateTime"))
    if since is None:
        return False
    return since + int(_spec(d).get("progressDeadlineSeconds")) < time.time()

