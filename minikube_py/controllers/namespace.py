"""The namespace controller: empties a namespace that is being deleted, then removes its
``kubernetes`` finalizer so that the API server deletes it (kube-controller-manager's
namespace-controller).

Every namespaced kind the API server serves is deleted (a deletecollection per kind, as
Kubernetes' namespaced resources deleter does). Content that does not go at once — pods in their
grace period, objects held by finalizers — is waited for: the namespace's status conditions say
what remains (NamespaceContentRemaining, NamespaceFinalizersRemaining, NamespaceDeletionContentFailure)
and the namespace is looked at again shortly. Once nothing is left,
``PUT /api/v1/namespaces/<name>/finalize`` drops the finalizer.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from minikube_py.api.resources import RESOURCES, ResourceInfo
from minikube_py.client.rest import ApiStatusError

from .base import Controller, ControllerContext
from .podutil import now_rfc3339

FINALIZER = "kubernetes"
# How soon to look again while content remains; Kubernetes estimates from the pods' grace periods
# and re-checks at least this often.
RECHECK_SECONDS = 1.0
MAX_RECHECK_SECONDS = 15.0


def namespaced_kinds() -> list[ResourceInfo]:
    return [r for r in RESOURCES if r.namespaced and {"list", "delete", "deletecollection"} <= set(r.verbs)]


class NamespaceController(Controller):
    name = "namespace"
    workers = 5

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.namespaces = ctx.informers.informer("namespaces")
        self.namespaces.add_handlers(**self.handlers())
        self._attempts: dict[str, int] = {}

    async def run(self) -> None:
        await self.namespaces.wait_synced()
        await super().run()

    async def reconcile(self, key: str) -> None:
        ns = self.namespaces.get(key)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            self._attempts.pop(key, None)
            return
        if FINALIZER not in ((ns.get("spec") or {}).get("finalizers") or []):
            self._attempts.pop(key, None)
            return  # our part is done; other finalizers are their owners' business
        remaining, with_finalizers, failures = await self._delete_content(key)
        await self._write_conditions(ns, remaining, with_finalizers, failures)
        if failures:
            raise RuntimeError(f"namespace {key}: could not delete content: {'; '.join(failures)}")
        if remaining:
            n = self._attempts[key] = self._attempts.get(key, 0) + 1
            self.queue.add_after(key, min(RECHECK_SECONDS * n, MAX_RECHECK_SECONDS))
            return
        self._attempts.pop(key, None)
        await self._finalize(key)

    async def _delete_content(self, namespace: str) -> tuple[Counter[str], Counter[str], list[str]]:
        """Delete everything in ``namespace``; what is still there (by resource, and by finalizer),
        and the errors met."""
        remaining: Counter[str] = Counter()
        finalizers: Counter[str] = Counter()
        failures: list[str] = []
        for info in namespaced_kinds():
            try:
                items, _ = await self.client.list_all(info, namespace)
                if not items:
                    continue
                if any(not i["metadata"].get("deletionTimestamp") for i in items):
                    await self.client.request("DELETE", self.client.path(info, namespace),
                                              body={"kind": "DeleteOptions", "apiVersion": "v1"})
                    items, _ = await self.client.list_all(info, namespace)
            except ApiStatusError as e:
                if e.code == 404:
                    continue
                failures.append(f"{info.qualified}: {e.message}")
                continue
            if items:
                remaining[info.qualified] += len(items)
                for item in items:
                    for f in item["metadata"].get("finalizers") or ():
                        finalizers[f] += 1
        return remaining, finalizers, failures

    async def _write_conditions(self, ns: dict[str, Any], remaining: Counter[str], finalizers: Counter[str],
                                failures: list[str]) -> None:
        want = {
            "NamespaceDeletionDiscoveryFailure":
                ("False", "ResourcesDiscovered", "All resources successfully discovered"),
            "NamespaceDeletionGroupVersionParsingFailure":
                ("False", "ParsedGroupVersions", "All legacy kube types successfully parsed"),
        }
        if failures:
            want["NamespaceDeletionContentFailure"] = (
                "True", "ContentDeletionFailed",
                f"Failed to delete all resource types, {len(failures)} remaining: {'; '.join(failures)}")
        else:
            want["NamespaceDeletionContentFailure"] = (
                "False", "ContentDeleted", "All content successfully deleted, may be waiting on finalization")
        if remaining:
            want["NamespaceContentRemaining"] = (
                "True", "SomeResourcesRemain", "Some resources are remaining: "
                + ", ".join(f"{r} has {n} resource instances" for r, n in sorted(remaining.items())))
        else:
            want["NamespaceContentRemaining"] = (
                "False", "ContentRemoved", "All content successfully removed")
        if finalizers:
            want["NamespaceFinalizersRemaining"] = (
                "True", "SomeFinalizersRemain", "Some content in the namespace has finalizers remaining: "
                + ", ".join(f"{f} in {n} resource instances" for f, n in sorted(finalizers.items())))
        else:
            want["NamespaceFinalizersRemaining"] = (
                "False", "ContentHasNoFinalizers", "All content-preserving finalizers finished")
        old = {c.get("type"): c for c in (ns.get("status") or {}).get("conditions") or ()
               if isinstance(c, dict)}
        if all(old.get(t) and (old[t].get("status"), old[t].get("reason"), old[t].get("message")) == v
               for t, v in want.items()):
            return
        now = now_rfc3339()
        conditions = []
        for type_, (status, reason, message) in want.items():
            prev = old.get(type_) or {}
            since = prev.get("lastTransitionTime") if prev.get("status") == status else None
            conditions.append({"type": type_, "status": status, "reason": reason, "message": message,
                               "lastTransitionTime": since or now})
        new = copy.deepcopy(ns)
        new.setdefault("status", {})["conditions"] = conditions
        try:
            await self.client.update_status("namespaces", new)
        except ApiStatusError as e:
            # Conditions only inform; a stale or vanished namespace must not stop the deletion.
            if e.code not in (404, 409):
                raise

    async def _finalize(self, name: str) -> None:
        current = await self.client.get_or_none("namespaces", name)
        if current is None:
            return
        finalizers = list((current.get("spec") or {}).get("finalizers") or [])
        if FINALIZER not in finalizers:
            return
        current.setdefault("spec", {})["finalizers"] = [f for f in finalizers if f != FINALIZER]
        try:
            await self.client.update("namespaces", current, subresource="finalize")
        except ApiStatusError as e:
            if e.code != 404:
                raise
            return
        self.log.info("namespace %s emptied and finalized", name)
