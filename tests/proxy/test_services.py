"""From Service and EndpointSlice objects to service ports and endpoints."""

from __future__ import annotations

from typing import Any

from minikube_py.proxy.services import (
    DEFAULT_AFFINITY_SECONDS,
    Endpoint,
    ServicePort,
    endpoints_for,
    service_ports,
    slice_service_key,
)


def svc(spec: dict[str, Any], name: str = "web", ns: str = "default") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def eps(endpoints: list[dict[str, Any]], ports: list[dict[str, Any]] | None = None, *, service: str = "web",
        name: str = "web-1", address_type: str = "IPv4") -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "default",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": address_type,
            "ports": ports if ports is not None else [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints}


def ep(ip: str, **conditions: bool) -> dict[str, Any]:
    return {"addresses": [ip], "conditions": conditions}


def test_ports_of_a_cluster_ip_service() -> None:
    ports = service_ports(svc({"type": "ClusterIP", "clusterIP": "10.96.0.5", "ports": [
        {"name": "http", "port": 80, "targetPort": 8080},
        {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
    ]}))
    assert ports == [ServicePort("default", "web", "http", "TCP", "10.96.0.5", 80),
                     ServicePort("default", "web", "dns", "UDP", "10.96.0.5", 53)]  # ClusterIP: no node port
    assert ports[0].port_key == "default/web:http"


def test_node_ports_external_ips_and_affinity() -> None:
    [p] = service_ports(svc({"type": "NodePort", "clusterIP": "10.96.0.5",
                             "externalIPs": ["192.0.2.1", "fd00::1"],
                             "sessionAffinity": "ClientIP",
                             "ports": [{"port": 80, "nodePort": 30080}]}))
    assert (p.node_port, p.external_ips, p.affinity_seconds, p.port_key) == \
        (30080, ("192.0.2.1",), DEFAULT_AFFINITY_SECONDS, "default/web")
    [p] = service_ports(svc({"clusterIP": "10.96.0.5", "sessionAffinity": "ClientIP",
                             "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                             "ports": [{"port": 80}]}))
    assert p.affinity_seconds == 60


def test_services_the_proxy_ignores() -> None:
    assert service_ports(svc({"clusterIP": "None", "ports": [{"port": 80}]})) == []
    assert service_ports(svc({"type": "ExternalName", "externalName": "example.org"})) == []
    assert service_ports(svc({"clusterIP": "fd00::10", "ports": [{"port": 80}]})) == []
    assert service_ports(svc({"ports": [{"port": 80}]})) == []  # no IP allocated yet
    # Names that could not have passed validation never reach iptables-restore.
    assert service_ports(svc({"clusterIP": "10.96.0.5", "ports": [{"port": 80}]}, name='x" -j ACCEPT')) == []
    assert service_ports(svc({"clusterIP": "10.96.0.5; rm", "ports": [{"port": 80}]})) == []


def test_malformed_ports_are_skipped_not_fatal() -> None:
    ports = service_ports(svc({"clusterIP": "10.96.0.5", "ports": [
        {"name": "a", "port": "80"}, {"name": "b", "port": 0}, {"name": "c", "port": 80, "protocol": "ICMP"},
        {"name": "Bad Name", "port": 80}, "junk", {"name": "ok", "port": 81}, {"name": "t", "port": True},
    ]}))
    assert [p.port_name for p in ports] == ["ok"]


WEB = ServicePort("default", "web", "http", "TCP", "10.96.0.5", 80)


def test_ready_endpoints_sorted_as_kube_proxy_sorts_them() -> None:
    got = endpoints_for(WEB, [eps([ep("10.244.1.2", ready=True), ep("10.244.1.10"),
                                   ep("10.244.1.3", ready=False)])])
    # An unset condition counts as ready; the order is the string order of ip:port.
    assert got == [Endpoint("10.244.1.10", 8080), Endpoint("10.244.1.2", 8080)]


def test_terminating_endpoints_are_used_only_when_nothing_is_ready() -> None:
    slices = [eps([ep("10.244.1.2", ready=False, serving=True, terminating=True),
                   ep("10.244.1.3", ready=False, serving=False, terminating=True)])]
    assert [e.ip for e in endpoints_for(WEB, slices)] == ["10.244.1.2"]
    slices[0]["endpoints"].append(ep("10.244.1.4", ready=True))
    assert [e.ip for e in endpoints_for(WEB, slices)] == ["10.244.1.4"]


def test_ports_match_by_name_and_protocol_and_duplicates_merge() -> None:
    udp = eps([ep("10.244.1.2")], [{"name": "http", "port": 8080, "protocol": "UDP"}], name="web-u")
    other = eps([ep("10.244.1.3")], [{"name": "metrics", "port": 9090}], name="web-m")
    twice = [eps([ep("10.244.1.5", ready=False)], name="web-a"), eps([ep("10.244.1.5")], name="web-b")]
    v6 = eps([ep("fd00::5")], address_type="IPv6", name="web-6")
    assert endpoints_for(WEB, [udp, other, v6]) == []
    assert endpoints_for(WEB, twice) == [Endpoint("10.244.1.5", 8080)]


def test_malformed_endpoints_are_skipped() -> None:
    s = eps([{"addresses": []}, {"addresses": ["not-an-ip"]}, "junk", ep("10.244.1.2")])
    assert endpoints_for(WEB, [s]) == [Endpoint("10.244.1.2", 8080)]
    assert endpoints_for(WEB, [eps([ep("10.244.1.2")], [{"name": "http", "port": None}])]) == []


def test_slice_service_key() -> None:
    assert slice_service_key(eps([])) == "default/web"
    assert slice_service_key({"metadata": {"name": "x", "namespace": "default"}}) is None
