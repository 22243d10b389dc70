"""What every cluster has from its first second: the system namespaces and the `kubernetes` Service
with endpoints pointing at this API server."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from minikube_py.api import errors
from minikube_py.api.resources import ResourceInfo, lookup

if TYPE_CHECKING:
    from .server import APIServer

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


async def _ensure(srv: APIServer, group: str, plural: str, namespace: str | None, obj: dict[str, Any]) -> None:
    info = lookup(group, "v1", plural)
    assert info is not None
    await ensure_object(srv, info, namespace, obj)


async def ensure_object(srv: APIServer, info: ResourceInfo, namespace: str | None, obj: dict[str, Any]) -> None:
    """Create ``obj`` unless it exists (an existing one, perhaps edited by an administrator, stays)."""
    try:
        await srv.registry.get(info, namespace, obj["metadata"]["name"])
        return
    except errors.ApiError as e:
        if e.code != 404:
            raise
    try:
        await srv.registry.create(info, namespace, obj)
    except errors.ApiError as e:
        if e.code != 409:  # another API server made it first
            raise


async def bootstrap(srv: APIServer) -> None:
    for ns in SYSTEM_NAMESPACES:
        await _ensure(srv, "", "namespaces", None, {"apiVersion": "v1", "kind": "Namespace",
                                                    "metadata": {"name": ns}})
    first_ip = str(next(ipaddress.ip_network(srv.config.service_cidr).hosts()))
    labels = {"component": "apiserver", "provider": "kubernetes"}
    await _ensure(srv, "", "services", "default", {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
        "spec": {"type": "ClusterIP", "clusterIP": first_ip, "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": srv.port}]},
    })
    address, port = srv.config.advertise_address, srv.port
    await _reconcile_endpoints(srv, address, port)
    await _ensure(srv, "", "endpoints", "default", {
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": address}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    })
    await _ensure(srv, "discovery.k8s.io", "endpointslices", "default", {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    })
    from .rbac import bootstrap_policy

    await bootstrap_policy(srv)


async def _reconcile_endpoints(srv: APIServer, address: str, port: int) -> None:
    """Point the `kubernetes` endpoints at this server: add its address next to the other API
    servers' (HA), or start over when the port changed (a local server restarted on another port).
    Without this, pods would keep calling an address that no longer serves."""
    eps_info = lookup("", "v1", "endpoints")
    slice_info = lookup("discovery.k8s.io", "v1", "endpointslices")
    svc_info = lookup("", "v1", "services")
    assert eps_info is not None and slice_info is not None and svc_info is not None

    def endpoints(old: dict[str, Any] | None) -> dict[str, Any]:
        assert old is not None
        subset = (old.get("subsets") or [{}])[0]
        same_port = [p.get("port") for p in subset.get("ports") or []] == [port]
        ips = [a.get("ip") for a in subset.get("addresses") or []] if same_port else []
        if address not in ips:
            ips.append(address)
        return {**old, "subsets": [{"addresses": [{"ip": ip} for ip in ips],
                                    "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}

    def endpoint_slice(old: dict[str, Any] | None) -> dict[str, Any]:
        assert old is not None
        same_port = [p.get("port") for p in old.get("ports") or []] == [port]
        ips = [a for e in old.get("endpoints") or [] for a in e.get("addresses") or []] if same_port else []
        if address not in ips:
            ips.append(address)
        return {**old, "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}

    def service(old: dict[str, Any] | None) -> dict[str, Any]:
        assert old is not None
        spec = dict(old.get("spec") or {})
        spec["ports"] = [{**p, "targetPort": port} if p.get("name") == "https" else p
                         for p in spec.get("ports") or []]
        return {**old, "spec": spec}

    for info, fn in ((eps_info, endpoints), (slice_info, endpoint_slice), (svc_info, service)):
        try:
            await srv.registry.update(info, "default", "kubernetes", fn)
        except errors.ApiError as e:
            if e.code != 404:  # not there yet: created just below
                raise
