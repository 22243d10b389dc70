"""The garbage collector: deletes objects whose owners are gone, and carries out Foreground and
Orphan deletion of owners.

As kube-controller-manager's, it keeps a graph of every watched object keyed by uid, with edges from
owners to dependents (``metadata.ownerReferences``), fed by shared informers. Two kinds of work item:

* ``delete/<uid>`` (attemptToDelete): an object whose owners may be gone. Owners are "solid"
  (exist), "dangling" (absent, or a different uid under that name, confirmed by a live GET when the
  graph does not know them) or "waiting" (being deleted in the foreground). No solid owner: the
  object is deleted (Foreground itself when it has dependents and an owner waits for it). A solid
  owner next to dangling ones: the dangling references are removed instead. For an owner being
  deleted in the foreground it means processDeletingDependents: its finalizer ``foregroundDeletion``
  is removed once no dependent with ``blockOwnerDeletion`` is left.
* ``orphan/<uid>``: an owner deleted with the Orphan policy (finalizer ``orphan``): every reference
  to it is removed from its dependents, then the finalizer.

Watched kinds: option ``gc_resources`` (default: deployments, replicasets, daemonsets, pods). Owners
of kinds outside that list are looked up with a live GET instead of the graph; an owner whose kind
the server does not serve is treated as present (never delete on doubt).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from minikube_py.api.resources import ResourceInfo, by_kind
from minikube_py.client.rest import ApiStatusError, resource

from .base import Controller, ControllerContext

DEFAULT_RESOURCES = ("deployments.apps", "replicasets.apps", "daemonsets.apps", "pods")
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
# Uids confirmed gone: uids are never reused, so remembering them saves a GET per dependent when an
# owner with many dependents goes (Kubernetes keeps the same "absentOwnerCache").
_ABSENT_CACHE_SIZE = 4096
_WRITE_ATTEMPTS = 5

SOLID, DANGLING, WAITING = "solid", "dangling", "waiting"


@dataclass
class _Node:
    uid: str
    info: ResourceInfo
    namespace: str | None
    name: str
    owners: list[dict[str, Any]] = field(default_factory=list)
    deleting: bool = False
    finalizers: tuple[str, ...] = ()

    @property
    def deleting_dependents(self) -> bool:
        return self.deleting and FOREGROUND in self.finalizers


class GarbageCollector(Controller):
    name = "garbagecollector"
    workers = 4

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.graph: dict[str, _Node] = {}
        # owner uid -> dependent uids; owners need not be in the graph (not yet seen, or gone).
        self.dependents: dict[str, set[str]] = {}
        self._absent: OrderedDict[str, None] = OrderedDict()
        self._informers: list[Any] = []
        for res in ctx.options.get("gc_resources") or DEFAULT_RESOURCES:
            info = resource(res)
            inf = ctx.informers.informer(info)
            inf.add_handlers(lambda obj, i=info: self._upsert(i, obj),
                             lambda old, new, i=info: self._upsert(i, new),
                             lambda obj, i=info: self._remove(i, obj))
            self._informers.append(inf)

    async def run(self) -> None:
        await asyncio.gather(*(inf.wait_synced() for inf in self._informers))
        await super().run()

    # ---- the graph (event handlers: update it and enqueue) ------------------------------------------

    def _upsert(self, info: ResourceInfo, obj: dict[str, Any]) -> None:
        m = obj.get("metadata") or {}
        uid = m.get("uid")
        if not uid:
            return
        refs = [dict(r) for r in m.get("ownerReferences") or () if isinstance(r, dict) and r.get("uid")]
        node = self.graph.get(uid)
        was_deleting_dependents = node is not None and node.deleting_dependents
        old_owners = {r["uid"] for r in node.owners} if node is not None else set()
        if node is None:
            node = self.graph[uid] = _Node(uid, info, m.get("namespace"), m.get("name", ""))
        node.owners = refs
        node.deleting = bool(m.get("deletionTimestamp"))
        node.finalizers = tuple(m.get("finalizers") or ())
        new_owners = {r["uid"] for r in refs}
        for gone in old_owners - new_owners:
            self._unlink(gone, uid)
        for owner in new_owners:
            self.dependents.setdefault(owner, set()).add(uid)
        if any(o not in self.graph for o in new_owners):
            self.enqueue_key(f"delete/{uid}")
        if node.deleting_dependents:
            if not was_deleting_dependents:
                for dep in self.dependents.get(uid, ()):
                    self.enqueue_key(f"delete/{dep}")
            self.enqueue_key(f"delete/{uid}")
        if node.deleting and ORPHAN in node.finalizers:
            self.enqueue_key(f"orphan/{uid}")

    def _remove(self, info: ResourceInfo, obj: dict[str, Any]) -> None:
        uid = (obj.get("metadata") or {}).get("uid")
        node = self.graph.pop(uid, None) if uid else None
        if node is None:
            return
        self._note_absent(node.uid)
        for owner in {r["uid"] for r in node.owners}:
            self._unlink(owner, node.uid)
        for dep in self.dependents.get(node.uid, ()):
            self.enqueue_key(f"delete/{dep}")

    def _unlink(self, owner: str, dependent: str) -> None:
        deps = self.dependents.get(owner)
        if deps is not None:
            deps.discard(dependent)
            if not deps:
                del self.dependents[owner]
        owner_node = self.graph.get(owner)
        if owner_node is not None and owner_node.deleting_dependents:
            self.enqueue_key(f"delete/{owner}")  # one blocker fewer: maybe its finalizer can go

    def _note_absent(self, uid: str) -> None:
        self._absent[uid] = None
        self._absent.move_to_end(uid)
        while len(self._absent) > _ABSENT_CACHE_SIZE:
            self._absent.popitem(last=False)

    # ---- work ---------------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        what, _, uid = key.partition("/")
        node = self.graph.get(uid)
        if node is None:
            return
        if what == "delete":
            await self._attempt_to_delete(node)
        elif what == "orphan":
            await self._orphan_dependents(node)
        else:
            self.log.warning("garbagecollector: unknown work item %r dropped", key)

    async def _attempt_to_delete(self, node: _Node) -> None:
        if node.deleting_dependents:
            await self._process_deleting_dependents(node)
            return
        if node.deleting or not node.owners:
            return
        states: dict[str, list[dict[str, Any]]] = {SOLID: [], DANGLING: [], WAITING: []}
        for ref in node.owners:
            states[await self._owner_state(node, ref)].append(ref)
        if states[SOLID]:
            if states[DANGLING] or states[WAITING]:
                await self._fix_refs(node, {r["uid"] for r in states[DANGLING]},
                                     {r["uid"] for r in states[WAITING]})
            return
        if states[WAITING] and self.dependents.get(node.uid):
            policy = "Foreground"  # its owner waits for it, and it must wait for its own dependents
        elif ORPHAN in node.finalizers:
            policy = "Orphan"
        elif FOREGROUND in node.finalizers:
            policy = "Foreground"
        else:
            policy = "Background"
        self.log.info("garbagecollector: deleting %s %s/%s (owners gone), propagation %s",
                      node.info.kind, node.namespace or "", node.name, policy)
        try:
            await self.client.delete(node.info, node.name, node.namespace, propagation_policy=policy,
                                     preconditions={"uid": node.uid})
        except ApiStatusError as e:
            if e.code not in (404, 409):
                raise

    async def _owner_state(self, node: _Node, ref: dict[str, Any]) -> str:
        owner = self.graph.get(ref["uid"])
        if owner is not None:
            return WAITING if owner.deleting_dependents else SOLID
        if ref["uid"] in self._absent:
            return DANGLING
        info = by_kind(str(ref.get("apiVersion")), str(ref.get("kind")))
        if info is None:
            return SOLID
        if info.namespaced and not node.namespace:
            return DANGLING  # a cluster-scoped object cannot be owned by a namespaced one
        namespace = node.namespace if info.namespaced else None
        live = await self.client.get_or_none(info, str(ref.get("name")), namespace)
        if live is None or (live.get("metadata") or {}).get("uid") != ref["uid"]:
            self._note_absent(ref["uid"])
            return DANGLING
        m = live.get("metadata") or {}
        if m.get("deletionTimestamp") and FOREGROUND in (m.get("finalizers") or ()):
            return WAITING
        return SOLID

    async def _process_deleting_dependents(self, owner: _Node) -> None:
        blocking = []
        for dep_uid in self.dependents.get(owner.uid, ()):
            dep = self.graph.get(dep_uid)
            if dep is None:
                continue
            if any(r["uid"] == owner.uid and r.get("blockOwnerDeletion") for r in dep.owners):
                blocking.append(dep)
        if not blocking:
            await self._remove_finalizer(owner, FOREGROUND)
            return
        for dep in blocking:
            if not dep.deleting_dependents:
                self.enqueue_key(f"delete/{dep.uid}")

    async def _orphan_dependents(self, owner: _Node) -> None:
        if not (owner.deleting and ORPHAN in owner.finalizers):
            return
        for dep_uid in list(self.dependents.get(owner.uid, ())):
            dep = self.graph.get(dep_uid)
            if dep is not None:
                await self._fix_refs(dep, {owner.uid}, set())
        await self._remove_finalizer(owner, ORPHAN)

    # ---- writes (read-modify-write with the resourceVersion precondition, retried on conflict) ------

    async def _fix_refs(self, node: _Node, remove: set[str], unblock: set[str]) -> None:
        """Drop the references to ``remove`` and clear blockOwnerDeletion on those to ``unblock``."""
        def change(obj: dict[str, Any]) -> bool:
            refs = obj["metadata"].get("ownerReferences") or []
            new = []
            for r in refs:
                if r.get("uid") in remove:
                    continue
                if r.get("uid") in unblock and r.get("blockOwnerDeletion"):
                    r = {**r, "blockOwnerDeletion": False}
                new.append(r)
            if new == refs:
                return False
            if new:
                obj["metadata"]["ownerReferences"] = new
            else:
                obj["metadata"].pop("ownerReferences", None)
            return True

        await self._read_modify_write(node, change)

    async def _remove_finalizer(self, node: _Node, finalizer: str) -> None:
        def change(obj: dict[str, Any]) -> bool:
            finalizers = obj["metadata"].get("finalizers") or []
            if finalizer not in finalizers:
                return False
            obj["metadata"]["finalizers"] = [f for f in finalizers if f != finalizer]
            return True

        await self._read_modify_write(node, change)

    async def _read_modify_write(self, node: _Node, change: Any) -> None:
        for _ in range(_WRITE_ATTEMPTS):
            obj = await self.client.get_or_none(node.info, node.name, node.namespace)
            if obj is None or obj["metadata"].get("uid") != node.uid:
                return
            obj.setdefault("apiVersion", node.info.api_version)
            obj.setdefault("kind", node.info.kind)
            if not change(obj):
                return
            try:
                await self.client.update(node.info, obj)
                return
            except ApiStatusError as e:
                if e.code == 404:
                    return
                if e.code != 409:
                    raise
        raise RuntimeError(f"{node.info.kind} {node.namespace}/{node.name}: too many conflicting writes")
