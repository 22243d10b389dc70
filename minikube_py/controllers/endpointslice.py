"""The EndpointSlice controller: for each Service with a selector, ``discovery.k8s.io/v1``
EndpointSlices listing the pods behind it, as kube-controller-manager's endpointslice controller
writes them.

Each endpoint carries the pod's address, ``conditions`` (ready = Ready and not terminating,
serving = Ready, terminating), ``nodeName``, the node's zone when it has one, and a ``targetRef``.
Endpoints are grouped by the ports their pod resolves the service's ports to, at most 100 per slice;
a service with no endpoints keeps one empty placeholder slice. Slices are labelled
``kubernetes.io/service-name`` and ``endpointslice.kubernetes.io/managed-by`` and owned by the
Service; they are updated in place where possible, and deleted when the service goes.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterable
from typing import Any

from minikube_py.client.informer import key_of, split_key
from minikube_py.client.rest import ApiStatusError

from .base import ControllerContext, owner_reference
from .endpoints import (
    ServiceEndpointsBase,
    endpoint_ports,
    pod_hostname,
    pods_for,
    publishes_not_ready,
    service_labels,
    should_include,
    target_ref,
)
from .podutil import is_ready, is_terminating

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
ZONE_LABEL = "topology.kubernetes.io/zone"
# --max-endpoints-per-slice's default.
MAX_ENDPOINTS_PER_SLICE = 100
SLICE_INDEX = "endpointslice/service"


def _service_of_slice(slc: dict[str, Any]) -> list[str]:
    labels = (slc.get("metadata") or {}).get("labels") or {}
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY or not labels.get(SERVICE_NAME_LABEL):
        return []
    return [f"{slc['metadata'].get('namespace')}/{labels[SERVICE_NAME_LABEL]}"]


Slice = tuple[list[dict[str, Any]], list[dict[str, Any]]]  # (ports, endpoints)


def desired_slices(svc: dict[str, Any], pods: Iterable[dict[str, Any]],
                   zones: dict[str, str] | None = None) -> list[Slice]:
    """(ports, endpoints) of each slice the service should have, in a stable order."""
    zones = zones or {}
    publish = publishes_not_ready(svc)
    groups: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for pod in pods:
        if not should_include(pod, terminating_too=True):
            continue
        ip = pod["status"]["podIP"]
        if ":" in ip:
            continue  # an IPv6 address belongs in an IPv6 slice; this cluster is IPv4 only
        ports = endpoint_ports(svc, pod)
        if ports is None:
            continue
        terminating = is_terminating(pod)
        ready = is_ready(pod)
        ep: dict[str, Any] = {
            "addresses": [ip],
            "conditions": {"ready": publish or (ready and not terminating), "serving": publish or ready,
                           "terminating": terminating},
        }
        hostname = pod_hostname(svc, pod)
        if hostname:
            ep["hostname"] = hostname
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            ep["nodeName"] = node
            if zones.get(node):
                ep["zone"] = zones[node]
        ep["targetRef"] = target_ref(pod)
        groups.setdefault(repr(ports), (ports, []))[1].append(ep)
    out: list[Slice] = []
    for key in sorted(groups):
        ports, eps = groups[key]
        eps.sort(key=lambda e: (e["addresses"][0], e["targetRef"]["name"]))
        for i in range(0, len(eps), MAX_ENDPOINTS_PER_SLICE):
            out.append((ports, eps[i:i + MAX_ENDPOINTS_PER_SLICE]))
    if not out:
        out.append(([], []))  # the placeholder: a service always has a slice, even an empty one
    return out


class EndpointSliceController(ServiceEndpointsBase):
    name = "endpointslice"
    workers = 5

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.slices = ctx.informers.informer("endpointslices.discovery.k8s.io")
        self.nodes = ctx.informers.informer("nodes")
        try:
            self.slices.add_index(SLICE_INDEX, _service_of_slice)
        except ValueError:
            pass
        self.slices.add_handlers(on_update=lambda old, new: self._slice_changed(new),
                                 on_delete=self._slice_changed)

    def _slice_changed(self, slc: dict[str, Any]) -> None:
        for key in _service_of_slice(slc):
            if self.managed_service(key) is not None:
                self.enqueue_key(key)

    async def run(self) -> None:
        await asyncio.gather(self.services.wait_synced(), self.pods.wait_synced(), self.slices.wait_synced(),
                             self.nodes.wait_synced())
        await super().run()

    def _zones(self) -> dict[str, str]:
        out = {}
        for node in self.nodes.list():
            zone = ((node.get("metadata") or {}).get("labels") or {}).get(ZONE_LABEL)
            if zone:
                out[node["metadata"]["name"]] = zone
        return out

    async def reconcile(self, key: str) -> None:
        if not self.tracker.settled(key, self.slices):
            self.queue.add_after(key, self.settle_delay)
            return
        ns, name = split_key(key)
        existing = sorted(self.slices.by_index(SLICE_INDEX, key), key=lambda s: s["metadata"]["name"])
        svc = self.managed_service(key)
        if svc is None:
            if self.services.get(key) is None:
                for slc in existing:
                    await self._delete(key, slc)
            return
        wanted = desired_slices(svc, pods_for(self.pods, svc), self._zones())
        labels = {**service_labels(svc), SERVICE_NAME_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY}
        owner = [owner_reference(svc)]
        # Reuse a slice with the same ports first, then any slice: fewer creates and deletes.
        unused = list(existing)
        plan: list[tuple[dict[str, Any] | None, list[dict[str, Any]], list[dict[str, Any]]]] = []
        for ports, eps in wanted:
            match = next((s for s in unused if (s.get("ports") or []) == ports), None)
            if match is not None:
                unused.remove(match)
            plan.append((match, ports, eps))
        plan = [(slc if slc is not None else (unused.pop(0) if unused else None), ports, eps)
                for slc, ports, eps in plan]
        for slc, ports, eps in plan:
            if slc is None:
                await self._create(key, ns, name, labels, owner, ports, eps)
            else:
                await self._update(key, slc, labels, owner, ports, eps)
        for slc in unused:
            await self._delete(key, slc)

    async def _create(self, key: str, ns: str | None, name: str, labels: dict[str, str],
                      owner: list[dict[str, Any]], ports: list[dict[str, Any]],
                      eps: list[dict[str, Any]]) -> None:
        obj = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"generateName": f"{name}-", "namespace": ns, "labels": labels,
                            "ownerReferences": owner},
               "addressType": "IPv4", "endpoints": eps, "ports": ports}
        try:
            written = await self.client.create("endpointslices.discovery.k8s.io", obj, ns)
        except ApiStatusError as e:
            if e.code == 403 and "being terminated" in e.message:
                return
            raise
        self.tracker.wrote(key, written)

    async def _update(self, key: str, slc: dict[str, Any], labels: dict[str, str],
                      owner: list[dict[str, Any]], ports: list[dict[str, Any]],
                      eps: list[dict[str, Any]]) -> None:
        meta = slc.get("metadata") or {}
        if (slc.get("endpoints") or []) == eps and (slc.get("ports") or []) == ports \
                and (meta.get("labels") or {}) == labels and (meta.get("ownerReferences") or []) == owner \
                and slc.get("addressType") == "IPv4":
            return
        new = copy.deepcopy(slc)
        new["metadata"]["labels"] = labels
        new["metadata"]["ownerReferences"] = owner
        new.update(addressType="IPv4", endpoints=eps, ports=ports)
        written = await self.client.update("endpointslices.discovery.k8s.io", new)
        self.tracker.wrote(key, written)

    async def _delete(self, key: str, slc: dict[str, Any]) -> None:
        m = slc["metadata"]
        try:
            await self.client.delete("endpointslices.discovery.k8s.io", m["name"], m.get("namespace"))
        except ApiStatusError as e:
            if e.code != 404:
                raise
        self.tracker.deleted(key, key_of(slc))
