"""What the proxy needs from Services and EndpointSlices: one :class:`ServicePort` per service port
with a virtual IP, and the endpoints each one balances over.

Everything that ends up in iptables-restore input is checked here (names against the DNS rules the
API server enforces, addresses with ``ipaddress``, ports as integers), so that a malformed object is
skipped with a warning instead of breaking — or being injected into — the whole rule set.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
PROTOCOLS = ("TCP", "UDP", "SCTP")
# Kubernetes' default ClientIP affinity timeout (3 hours).
DEFAULT_AFFINITY_SECONDS = 10800
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_PORT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True, order=True)
class ServicePort:
    """One port of one Service, as kube-proxy's ServicePortName plus what the rules need."""

    namespace: str
    name: str
    port_name: str
    protocol: str
    cluster_ip: str
    port: int
    node_port: int = 0
    external_ips: tuple[str, ...] = ()
    affinity_seconds: int = 0  # 0: no session affinity

    @property
    def port_key(self) -> str:
        """kube-proxy's ServicePortName string: ``ns/name:port`` (``ns/name`` for an unnamed port)."""
        base = f"{self.namespace}/{self.name}"
        return f"{base}:{self.port_name}" if self.port_name else base

    @property
    def service_key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, order=True)
class Endpoint:
    ip: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: str = ""

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"


def _ipv4(value: Any) -> str | None:
    try:
        addr = ipaddress.ip_address(str(value))
    except ValueError:
        return None
    return str(addr) if addr.version == 4 else None


def _port(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        return None
    return value


def service_ports(svc: dict[str, Any]) -> list[ServicePort]:
    """The proxied ports of a Service; none for headless, ExternalName or IPv6-only services."""
    meta = svc.get("metadata") or {}
    spec = svc.get("spec") or {}
    ns, name = str(meta.get("namespace") or "default"), str(meta.get("name") or "")
    if not _NAME.fullmatch(ns) or not _NAME.fullmatch(name):
        log.warning("service %r/%r: invalid name, skipped", ns, name)
        return []
    if spec.get("type") == "ExternalName":
        return []
    raw_ip = spec.get("clusterIP")
    if not raw_ip or raw_ip == "None":
        return []
    cluster_ip = _ipv4(raw_ip)
    if cluster_ip is None:
        log.info("service %s/%s: cluster IP %r is not IPv4, skipped", ns, name, raw_ip)
        return []
    external_ips = tuple(ip for ip in (_ipv4(x) for x in spec.get("externalIPs") or ()) if ip)
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        cfg = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
        seconds = cfg.get("timeoutSeconds", DEFAULT_AFFINITY_SECONDS)
        affinity = seconds if isinstance(seconds, int) and 0 < seconds <= 86400 else DEFAULT_AFFINITY_SECONDS
    with_node_ports = spec.get("type") in ("NodePort", "LoadBalancer")
    out: list[ServicePort] = []
    for p in spec.get("ports") or ():
        if not isinstance(p, dict):
            continue
        port_name = str(p.get("name") or "")
        protocol = str(p.get("protocol") or "TCP")
        port = _port(p.get("port"))
        if port is None or protocol not in PROTOCOLS or (port_name and not _PORT_NAME.fullmatch(port_name)):
            log.warning("service %s/%s: port %r is malformed, skipped", ns, name, p)
            continue
        node_port = _port(p.get("nodePort")) if with_node_ports else None
        out.append(ServicePort(ns, name, port_name, protocol, cluster_ip, port, node_port or 0,
                               external_ips, affinity))
    return out


def slice_endpoints(eps: dict[str, Any], sp: ServicePort) -> list[Endpoint]:
    """The endpoints one EndpointSlice gives ``sp`` (the slice's port with the same name and protocol)."""
    if eps.get("addressType", "IPv4") != "IPv4":
        return []
    target: int | None = None
    for p in eps.get("ports") or ():
        if isinstance(p, dict) and str(p.get("name") or "") == sp.port_name \
                and str(p.get("protocol") or "TCP") == sp.protocol:
            target = _port(p.get("port"))
            break
    if target is None:
        return []
    out: list[Endpoint] = []
    for ep in eps.get("endpoints") or ():
        if not isinstance(ep, dict):
            continue
        addresses = ep.get("addresses") or ()
        # kube-proxy uses the first address: the API says they are fungible.
        ip = _ipv4(addresses[0]) if addresses else None
        if ip is None:
            continue
        cond = ep.get("conditions") or {}
        # An unset condition means "unknown", which consumers treat as ready (and so serving).
        ready = cond.get("ready") is not False
        serving = cond.get("serving", ready) is not False
        terminating = cond.get("terminating") is True
        out.append(Endpoint(ip, target, ready, serving, terminating, str(ep.get("nodeName") or "")))
    return out


def endpoints_for(sp: ServicePort, slices: list[dict[str, Any]]) -> list[Endpoint]:
    """The endpoints traffic to ``sp`` goes to, sorted by ``ip:port`` as kube-proxy sorts them.

    Ready endpoints when there are any; otherwise the serving-but-terminating ones, so that a
    rolling update that briefly leaves only terminating pods does not drop connections.
    """
    by_address: dict[str, Endpoint] = {}
    for eps in slices:
        for ep in slice_endpoints(eps, sp):
            seen = by_address.get(ep.address)
            # The same address in two slices (during a slice rebalance): the ready copy wins.
            if seen is None or (ep.ready and not seen.ready):
                by_address[ep.address] = ep
    everything = sorted(by_address.values(), key=lambda e: e.address)
    ready = [e for e in everything if e.ready]
    if ready:
        return ready
    return [e for e in everything if e.serving and e.terminating]


def slice_service_key(eps: dict[str, Any]) -> str | None:
    """``ns/name`` of the Service an EndpointSlice belongs to (its ``kubernetes.io/service-name``)."""
    meta = eps.get("metadata") or {}
    name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    if not name:
        return None
    return f"{meta.get('namespace') or 'default'}/{name}"
