"""What every cluster has from its first second: the system namespaces and the `kubernetes` Service
with endpoints pointing at this API server."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from minikube_py.api import errors
from minikube_py.api.resources import lookup

if TYPE_CHECKING:
    from .server import APIServer

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


async def _ensure(srv: APIServer, group: str, plural: str, namespace: str | None, obj: dict[str, Any]) -> None:
    info = lookup(group, "v1", plural)
    assert info is not None
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
