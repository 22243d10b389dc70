"""The Endpoints controller: for each Service with a selector, one ``v1/Endpoints`` of the same name
listing the pods behind it — ready ones under ``addresses``, the others under
``notReadyAddresses`` — with the ports each service port's ``targetPort`` resolves to on that pod.

Also home to what the Endpoints and EndpointSlice controllers share: which pods back a service,
how a target port resolves, and a tracker of the controller's own writes so that a stale informer
cache does not lead to writing twice.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterable
from typing import Any

from minikube_py.client.informer import Informer, key_of, split_key
from minikube_py.client.rest import ApiStatusError

from .base import Controller, ControllerContext
from .podutil import is_ready, is_terminating

HEADLESS_LABEL = "service.kubernetes.io/headless"
# The API server writes the endpoints of this one service itself.
API_SERVICE = "default/kubernetes"
# How long a write of ours may stay unseen in the informer before the cache is trusted again.
WRITE_TTL = 30.0


# ---- what the two endpoint controllers share ----------------------------------------------------

def service_selector(svc: dict[str, Any]) -> dict[str, str] | None:
    """A service's selector; None when it has none (its endpoints are managed by hand)."""
    sel = (svc.get("spec") or {}).get("selector")
    return dict(sel) if isinstance(sel, dict) and sel else None


def selects(svc: dict[str, Any], pod: dict[str, Any]) -> bool:
    sel = service_selector(svc)
    if sel is None:
        return False
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in sel.items())


def services_of(services: Informer, *pods: dict[str, Any] | None) -> set[str]:
    """Keys of the services that select any of ``pods`` (old and new state of an update)."""
    keys: set[str] = set()
    for pod in pods:
        if not pod:
            continue
        for svc in services.list((pod.get("metadata") or {}).get("namespace") or ""):
            if selects(svc, pod):
                keys.add(key_of(svc))
    return keys


def pods_for(pods: Informer, svc: dict[str, Any]) -> list[dict[str, Any]]:
    ns = svc["metadata"].get("namespace") or ""
    return sorted((p for p in pods.list(ns) if selects(svc, p)), key=lambda p: p["metadata"]["name"])


def resolve_target_port(port: dict[str, Any], pod: dict[str, Any]) -> int | None:
    """podutil.FindPort: a number as is, a name through the pod's container ports of the same
    protocol; None when the name is not found."""
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    if isinstance(target, str):
        if target.isdigit():
            return int(target)
        protocol = port.get("protocol") or "TCP"
        for c in (pod.get("spec") or {}).get("containers") or ():
            for cp in c.get("ports") or ():
                if cp.get("name") == target and (cp.get("protocol") or "TCP") == protocol:
                    return int(cp["containerPort"])
    return None


def endpoint_ports(svc: dict[str, Any], pod: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The service's ports as they resolve on ``pod``, sorted; None when the service has ports and
    none resolves (the pod then backs nothing)."""
    ports = []
    for sp in (svc.get("spec") or {}).get("ports") or ():
        number = resolve_target_port(sp, pod)
        if number is None:
            continue
        out: dict[str, Any] = {"name": sp.get("name") or "", "port": number,
                               "protocol": sp.get("protocol") or "TCP"}
        if sp.get("appProtocol"):
            out["appProtocol"] = sp["appProtocol"]
        ports.append(out)
    if not ports and (svc.get("spec") or {}).get("ports"):
        return None
    return sorted(ports, key=lambda p: (p["name"], p["port"], p["protocol"]))


def should_include(pod: dict[str, Any], *, terminating_too: bool) -> bool:
    """ShouldPodBeInEndpoints: has an IP, is not finished, and is not going away (unless asked)."""
    status = pod.get("status") or {}
    if not status.get("podIP") or status.get("phase") in ("Succeeded", "Failed"):
        return False
    return terminating_too or not is_terminating(pod)


def target_ref(pod: dict[str, Any]) -> dict[str, Any]:
    m = pod["metadata"]
    return {"kind": "Pod", "namespace": m.get("namespace"), "name": m["name"], "uid": m.get("uid")}


def publishes_not_ready(svc: dict[str, Any]) -> bool:
    return bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))


def pod_hostname(svc: dict[str, Any], pod: dict[str, Any]) -> str | None:
    """A pod gets a DNS name under the service when its subdomain names the service."""
    spec = pod.get("spec") or {}
    if spec.get("hostname") and spec.get("subdomain") == svc["metadata"]["name"]:
        return str(spec["hostname"])
    return None


def service_labels(svc: dict[str, Any]) -> dict[str, str]:
    labels = dict((svc.get("metadata") or {}).get("labels") or {})
    if (svc.get("spec") or {}).get("clusterIP") == "None":
        labels[HEADLESS_LABEL] = ""
    else:
        labels.pop(HEADLESS_LABEL, None)
    return labels


def _rv(obj: dict[str, Any] | None) -> int:
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class WriteTracker:
    """The controller's own writes the informer has not shown yet (the role of Kubernetes'
    endpointSliceTracker): until they show, a decision made on the cache would be made on stale
    data, so the owner waits a moment instead of writing twice."""

    def __init__(self, ttl: float = WRITE_TTL) -> None:
        self.ttl = ttl
        # owner key -> object key -> (resourceVersion written, or -1 for a delete; when)
        self._pending: dict[str, dict[str, tuple[int, float]]] = {}

    def wrote(self, owner: str, obj: dict[str, Any]) -> None:
        self._pending.setdefault(owner, {})[key_of(obj)] = (_rv(obj), time.monotonic())

    def deleted(self, owner: str, obj_key: str) -> None:
        self._pending.setdefault(owner, {})[obj_key] = (-1, time.monotonic())

    def settled(self, owner: str, cache: Informer) -> bool:
        pending = self._pending.get(owner)
        if not pending:
            return True
        now = time.monotonic()
        for obj_key, (rv, at) in list(pending.items()):
            current = cache.get(obj_key)
            seen = current is None if rv < 0 else _rv(current) >= rv
            if seen or now - at > self.ttl:
                del pending[obj_key]
        if not pending:
            del self._pending[owner]
            return True
        return False

    def forget(self, owner: str) -> None:
        self._pending.pop(owner, None)


class ServiceEndpointsBase(Controller):
    """What both endpoint controllers do on events: a service change syncs that service, a pod
    change syncs every service selecting the pod before or after the change."""

    # How soon to look again while our own writes are not in the cache yet.
    settle_delay = 0.05

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.services = ctx.informers.informer("services")
        self.pods = ctx.informers.informer("pods")
        self.tracker = WriteTracker()
        self.services.add_handlers(**self.handlers())
        self.pods.add_handlers(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_added)

    def _pod_added(self, pod: dict[str, Any]) -> None:
        for key in services_of(self.services, pod):
            self.enqueue_key(key)

    def _pod_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        for key in services_of(self.services, old, new):
            self.enqueue_key(key)

    def managed_service(self, key: str) -> dict[str, Any] | None:
        """The service behind ``key`` when this controller computes its endpoints."""
        if key == API_SERVICE:
            return None
        svc = self.services.get(key)
        if svc is None or service_selector(svc) is None:
            return None
        return svc


# ---- the Endpoints controller -------------------------------------------------------------------

def desired_subsets(svc: dict[str, Any], pods: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Endpoints subsets, packed as RepackSubsets does: one subset per distinct port set."""
    groups: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]] = {}
    publish = publishes_not_ready(svc)
    for pod in pods:
        if not should_include(pod, terminating_too=False):
            continue
        ports = endpoint_ports(svc, pod)
        if ports is None:
            continue
        addr: dict[str, Any] = {"ip": pod["status"]["podIP"]}
        hostname = pod_hostname(svc, pod)
        if hostname:
            addr["hostname"] = hostname
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            addr["nodeName"] = node
        addr["targetRef"] = target_ref(pod)
        group = groups.setdefault(repr(ports), (ports, [], []))
        (group[1] if publish or is_ready(pod) else group[2]).append(addr)
    subsets = []
    for ports, ready, not_ready in groups.values():
        subset: dict[str, Any] = {}
        if ready:
            subset["addresses"] = sorted(ready, key=lambda a: (a["ip"], a["targetRef"]["name"]))
        if not_ready:
            subset["notReadyAddresses"] = sorted(not_ready, key=lambda a: (a["ip"], a["targetRef"]["name"]))
        if ports:
            subset["ports"] = [{k: v for k, v in p.items() if k != "name" or v} for p in ports]
        subsets.append(subset)
    return sorted(subsets, key=lambda s: repr(s.get("ports")))


class EndpointsController(ServiceEndpointsBase):
    name = "endpoints"
    workers = 5

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.endpoints = ctx.informers.informer("endpoints")
        # Someone deleting or editing endpoints we manage: put them right again.
        self.endpoints.add_handlers(on_update=lambda old, new: self._endpoints_changed(new),
                                    on_delete=self._endpoints_changed)

    def _endpoints_changed(self, ep: dict[str, Any]) -> None:
        key = key_of(ep)
        if self.managed_service(key) is not None:
            self.enqueue_key(key)

    async def run(self) -> None:
        await asyncio.gather(self.services.wait_synced(), self.pods.wait_synced(),
                             self.endpoints.wait_synced())
        await super().run()

    async def reconcile(self, key: str) -> None:
        if key == API_SERVICE:
            return
        if not self.tracker.settled(key, self.endpoints):
            self.queue.add_after(key, self.settle_delay)
            return
        ns, name = split_key(key)
        svc = self.services.get(key)
        current = self.endpoints.get(key)
        if svc is None:
            if current is not None:
                await self._delete(key, ns, name)
            return
        if service_selector(svc) is None:
            return  # endpoints of a selector-less service are written by hand
        subsets = desired_subsets(svc, pods_for(self.pods, svc))
        labels = service_labels(svc)
        if current is not None and (current.get("subsets") or []) == subsets \
                and ((current.get("metadata") or {}).get("labels") or {}) == labels:
            return
        if current is None:
            obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Endpoints",
                                   "metadata": {"name": name, "namespace": ns, "labels": labels}}
            if subsets:
                obj["subsets"] = subsets
            try:
                written = await self.client.create("endpoints", obj, ns)
            except ApiStatusError as e:
                if e.code == 403 and "being terminated" in e.message:
                    return  # the namespace is going away, and these endpoints with it
                raise
        else:
            obj = copy.deepcopy(current)
            obj["metadata"]["labels"] = labels
            if subsets:
                obj["subsets"] = subsets
            else:
                obj.pop("subsets", None)
            written = await self.client.update("endpoints", obj)
        self.tracker.wrote(key, written)

    async def _delete(self, key: str, ns: str | None, name: str) -> None:
        try:
            await self.client.delete("endpoints", name, ns)
        except ApiStatusError as e:
            if e.code != 404:
                raise
        self.tracker.deleted(key, key)
