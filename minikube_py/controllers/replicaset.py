"""The ReplicaSet controller: keeps ``spec.replicas`` pods matching ``spec.selector`` alive.

As kube-controller-manager's: it adopts orphan pods that match and releases owned pods that no
longer do; creates missing pods from the template in slow-start batches (1, 2, 4, ...) and deletes
surplus ones, least useful first; "expectations" stop it from acting twice before its informer has
seen its own creations and deletions. Status (replicas, fullyLabeledReplicas, readyReplicas,
availableReplicas, observedGeneration, the ReplicaFailure condition) is written last.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from minikube_py.client.rest import ApiStatusError

from . import podutil
from .base import Controller, ControllerContext, controller_ref, owner_reference

RS = "replicasets.apps"
# controller.BurstReplicas: at most this many pods created or deleted in one sync.
BURST_REPLICAS = 500


class ReplicaSetController(Controller):
    name = "replicaset"
    workers = 5

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.sets = ctx.informers.informer(RS)
        self.pods = ctx.informers.informer("pods")
        podutil.ensure_controller_uid_index(self.pods)
        self.expectations = podutil.Expectations()
        self.sets.add_handlers(**self.handlers())
        self.pods.add_handlers(self._pod_added, self._pod_updated, self._pod_deleted)

    async def run(self) -> None:
        await asyncio.gather(self.sets.wait_synced(), self.pods.wait_synced())
        await super().run()

    # ---- event handlers: only enqueue ---------------------------------------------------------------

    def _owner_key(self, pod: dict[str, Any]) -> str | None:
        return podutil.live_owner_key(pod, "ReplicaSet", self.sets)

    def _enqueue_matching_sets(self, pod: dict[str, Any]) -> None:
        """An orphan: wake every ReplicaSet whose selector matches, one of them may adopt it."""
        for rs in podutil.selecting_owners(pod, self.sets):
            self.enqueue(rs)

    def _pod_added(self, pod: dict[str, Any]) -> None:
        key = self._owner_key(pod)
        if key is not None:
            if podutil.is_terminating(pod):
                self.expectations.deletion_observed(key, podutil.pod_key(pod))
            else:
                self.expectations.creation_observed(key)
            self.enqueue_key(key)
        elif controller_ref(pod) is None:
            self._enqueue_matching_sets(pod)

    def _pod_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        new_key = self._owner_key(new)
        if new_key is not None and podutil.is_terminating(new) and not podutil.is_terminating(old):
            # A graceful delete: the pod is as good as gone for counting purposes.
            self.expectations.deletion_observed(new_key, podutil.pod_key(new))
        old_key = self._owner_key(old)
        if old_key is not None and old_key != new_key:
            self.enqueue_key(old_key)
        if new_key is not None:
            self.enqueue_key(new_key)
        elif controller_ref(new) is None and (
                podutil.labels_of(old) != podutil.labels_of(new) or controller_ref(old) is not None):
            self._enqueue_matching_sets(new)

    def _pod_deleted(self, pod: dict[str, Any]) -> None:
        key = self._owner_key(pod)
        if key is not None:
            self.expectations.deletion_observed(key, podutil.pod_key(pod))
            self.enqueue_key(key)

    # ---- reconcile ----------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        cached = self.sets.get(key)
        if cached is None:
            self.expectations.forget(key)
            return
        rs = copy.deepcopy(cached)
        try:
            selector = podutil.selector_of(rs)
        except podutil.InvalidSpec as e:
            self.log.warning("replicaset %s: %s", key, e)
            return  # a spec error: retrying does not help until the object changes
        namespace = rs["metadata"]["namespace"]
        pods = await self._claim_pods(rs, selector, namespace)
        active = [p for p in pods if podutil.is_active(p)]
        manage_error: ApiStatusError | None = None
        managed = self.expectations.satisfied(key) and not podutil.is_terminating(rs)
        if managed:
            try:
                await self._manage(rs, key, active)
            except ApiStatusError as e:
                manage_error = e
        await self._write_status(rs, active, managed, manage_error)
        if manage_error is not None:
            raise manage_error
        # minReadySeconds: come back when the ready pods become available, nothing else will wake us.
        min_ready = int(rs.get("spec", {}).get("minReadySeconds") or 0)
        waits = [w for p in active if (w := podutil.seconds_until_available(p, min_ready)) is not None]
        if waits:
            self.queue.add_after(key, min(waits) + 0.05)

    async def _claim_pods(self, rs: dict[str, Any], selector: Any, namespace: str) -> list[dict[str, Any]]:
        """ClaimPods: the pods this ReplicaSet controls after adopting matching orphans and releasing
        owned pods that stopped matching."""
        return await podutil.claim(self.client, rs, RS, self.pods.list(namespace), "pods", selector)

    async def _manage(self, rs: dict[str, Any], key: str, active: list[dict[str, Any]]) -> None:
        want = int(rs.get("spec", {}).get("replicas", 1) or 0)
        diff = len(active) - want
        if diff < 0:
            await self._create_pods(rs, key, min(-diff, BURST_REPLICAS))
        elif diff > 0:
            victims = sorted(active, key=podutil.deletion_rank)[:min(diff, BURST_REPLICAS)]
            await self._delete_pods(rs, key, victims)

    async def _create_pods(self, rs: dict[str, Any], key: str, count: int) -> None:
        self.expectations.expect_creations(key, count)
        created = 0
        error: ApiStatusError | None = None
        for batch in podutil.slow_start_batches(count):
            results = await asyncio.gather(*(self._create_one(rs) for _ in range(batch)),
                                           return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            created += batch - len(failures)
            for r in failures:
                if not isinstance(r, ApiStatusError):
                    raise r
                error = r
            if failures:
                break
        skipped = count - created
        if skipped:
            # The pods never created will never be observed: stop waiting for them.
            self.expectations.creation_observed(key, skipped)
        if error is not None:
            await self.ctx.events.record(rs, "Warning", "FailedCreate", f"Error creating: {error.message}")
            raise error

    async def _create_one(self, rs: dict[str, Any]) -> None:
        pod = pod_from_template(rs, rs["spec"].get("template") or {})
        created = await self.client.create("pods", pod, rs["metadata"]["namespace"])
        await self.ctx.events.record(rs, "Normal", "SuccessfulCreate",
                                     f"Created pod: {created['metadata']['name']}")

    async def _delete_pods(self, rs: dict[str, Any], key: str, victims: list[dict[str, Any]]) -> None:
        self.expectations.expect_deletions(key, [podutil.pod_key(p) for p in victims])
        error: ApiStatusError | None = None

        async def delete(pod: dict[str, Any]) -> None:
            nonlocal error
            m = pod["metadata"]
            try:
                await self.client.delete("pods", m["name"], m["namespace"], preconditions={"uid": m["uid"]})
            except ApiStatusError as e:
                self.expectations.deletion_observed(key, podutil.pod_key(pod))
                if e.code not in (404, 409):
                    error = e
                return
            await self.ctx.events.record(rs, "Normal", "SuccessfulDelete", f"Deleted pod: {m['name']}")

        await asyncio.gather(*(delete(p) for p in victims))
        if error is not None:
            raise error

    async def _write_status(self, rs: dict[str, Any], active: list[dict[str, Any]],
                            managed: bool, manage_error: ApiStatusError | None) -> None:
        spec = rs.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        template_labels = podutil.labels_of(spec.get("template") or {})
        old = rs.get("status") or {}
        status: dict[str, Any] = {
            "replicas": len(active),
            "fullyLabeledReplicas": sum(
                1 for p in active if template_labels.items() <= podutil.labels_of(p).items()),
            "readyReplicas": sum(1 for p in active if podutil.is_ready(p)),
            "availableReplicas": sum(1 for p in active if podutil.is_available(p, min_ready)),
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        conditions = list(old.get("conditions") or ())
        if managed:
            # Only a sync that tried to create or delete knows whether ReplicaFailure still holds.
            conditions = [c for c in conditions if c.get("type") != "ReplicaFailure"]
        failure = next((c for c in old.get("conditions") or () if c.get("type") == "ReplicaFailure"), None)
        if manage_error is not None:
            reason = "FailedCreate" if len(active) < int(spec.get("replicas", 1) or 0) else "FailedDelete"
            message = manage_error.message
            if failure is not None and failure.get("reason") == reason and failure.get("message") == message:
                conditions.append(failure)
            else:
                conditions.append({"type": "ReplicaFailure", "status": "True", "reason": reason,
                                   "message": message, "lastTransitionTime": podutil.now_rfc3339()})
        if conditions:
            status["conditions"] = conditions
        if {k: v for k, v in old.items() if k in status or k == "conditions"} == status:
            return
        new = {**rs, "status": status}
        try:
            await self.client.update_status(RS, new)
        except ApiStatusError as e:
            if e.code != 404:
                raise


def pod_from_template(owner: dict[str, Any], template: dict[str, Any], *, name_prefix: str | None = None,
                      extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A pod as controller.GetPodFromTemplate builds it: the template's metadata and spec, generateName
    ``<owner>-``, and an ownerReference to the owner with controller and blockOwnerDeletion."""
    tmeta = template.get("metadata") or {}
    labels = {**(tmeta.get("labels") or {}), **(extra_labels or {})}
    meta: dict[str, Any] = {
        "generateName": f"{name_prefix or owner['metadata']['name']}-",
        "namespace": owner["metadata"]["namespace"],
        "labels": labels,
        "ownerReferences": [owner_reference(owner)],
    }
    if tmeta.get("annotations"):
        meta["annotations"] = dict(tmeta["annotations"])
    if tmeta.get("finalizers"):
        meta["finalizers"] = list(tmeta["finalizers"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": copy.deepcopy(template.get("spec") or {})}

