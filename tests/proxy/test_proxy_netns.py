"""The proxy for real: a real API server, ``minikube-py proxy`` inside a throwaway network namespace,
and HTTP requests to a cluster IP and a node port answered by two backends in that namespace."""

from __future__ import annotations

import json
import secrets
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from minikube_py.proxy.rules import endpoint_chain, external_chain, service_chain
from minikube_py.proxy.services import Endpoint, ServicePort
from tests.apiserver.conftest import LocalAPIServer, start_apiserver, stop_apiserver
from tests.proxy.netns_lab import (
    BACKEND_PORT,
    POD_IPS,
    REPO,
    NetnsLab,
    missing_requirements,
    netns_lab,
    sh,
    start_backends,
    wait_for,
)

_missing = missing_requirements()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_missing is not None, reason=_missing or "")]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[NetnsLab]:
    with netns_lab(tmp_path) as lab:
        yield lab


@pytest.fixture
def apiserver_on_veth(lab: NetnsLab, tmp_path: Path) -> Iterator[LocalAPIServer]:
    server = start_apiserver(tmp_path / "data", "--bind-address", lab.host_ip)
    try:
        yield server
    finally:
        stop_apiserver(server)


def _slice(name: str, service: str, ips: list[str]) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "default",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": BACKEND_PORT, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}, "nodeName": "mkpy-node"}
                          for ip in ips]}


def _chains(save: str, table: str) -> set[str]:
    out, current = set(), ""
    for line in save.splitlines():
        if line.startswith("*"):
            current = line[1:]
        elif line.startswith(":") and current == table:
            out.add(line[1:].split()[0])
    return out


def test_proxy_balances_follows_endpoints_and_cleans_up(lab: NetnsLab, apiserver_on_veth: LocalAPIServer,
                                                        tmp_path: Path) -> None:
    server = apiserver_on_veth
    names = start_backends(lab, tmp_path)
    base = f"https://{lab.host_ip}:{server.port}"
    kubeconfig = yaml.safe_load(server.kubeconfig.read_text())
    kubeconfig["clusters"][0]["cluster"]["server"] = base
    proxy_kubeconfig = tmp_path / "proxy.kubeconfig"
    proxy_kubeconfig.write_text(yaml.safe_dump(kubeconfig))
    api = httpx.Client(base_url=base, verify=server.ssl_context(), headers=server.headers(), timeout=10)

    svc_name = f"web-{secrets.token_hex(3)}"
    svc = api.post("/api/v1/namespaces/default/services", json={
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": svc_name, "namespace": "default"},
        "spec": {"type": "NodePort", "selector": {"app": svc_name},
                 "ports": [{"name": "http", "port": 80, "targetPort": BACKEND_PORT, "protocol": "TCP"}]}})
    assert svc.status_code == 201, svc.text
    cluster_ip = svc.json()["spec"]["clusterIP"]
    node_port = svc.json()["spec"]["ports"][0]["nodePort"]
    slices = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
    created = api.post(slices, json=_slice(f"{svc_name}-x1", svc_name, list(POD_IPS)))
    assert created.status_code == 201, created.text

    sp = ServicePort("default", svc_name, "http", "TCP", cluster_ip, 80, node_port)
    svc_chain = service_chain(sp)
    sep = {ip: endpoint_chain(sp, Endpoint(ip, BACKEND_PORT)) for ip in POD_IPS}

    out_file = tmp_path / "proxy.out"
    with open(out_file, "w") as out, open(tmp_path / "proxy.log", "w") as err:
        proxy = lab.popen(sys.executable, "-m", "minikube_py", "proxy", "--kubeconfig", str(proxy_kubeconfig),
                          "--hostname-override", "mkpy-node", "--healthz-bind-address", "127.0.0.1:0",
                          "--metrics-bind-address", "127.0.0.1:0", "--iptables-min-sync-period", "100ms",
                          "--sync-period", "10s", "-v", stdout=out, stderr=err, cwd=REPO)
    try:
        wait_for(lambda: "healthz on port" in out_file.read_text() or proxy.poll() is not None, "the proxy")
        assert proxy.poll() is None, (tmp_path / "proxy.log").read_text()
        line = out_file.read_text()
        healthz_port = int(line.split("healthz on port ")[1].split(",")[0])
        metrics_port = int(line.split("metrics on port ")[1].split()[0])

        # Both endpoints programmed, balanced 50/50 (the first rule takes half, the last the rest).
        wait_for(lambda: set(sep.values()) <= _chains(lab.iptables_save(), "nat"), "the endpoint chains")
        save = lab.iptables_save()
        svc_rules = [r for r in save.splitlines() if r.startswith(f"-A {svc_chain} ")]
        assert "--probability 0.50000000000" in svc_rules[-2] and svc_rules[-2].endswith(sep[POD_IPS[0]])
        assert "statistic" not in svc_rules[-1] and svc_rules[-1].endswith(sep[POD_IPS[1]])
        assert f"--dport {node_port} -j KUBE-EXT-" in save

        # Fresh connections to the cluster IP and to the node port on the namespace's own address
        # reach both backends.
        assert set(lab.curl(f"http://{cluster_ip}/", times=24)) == set(names.values())
        assert set(lab.curl(f"http://{lab.ns_ip}:{node_port}/", times=24)) == set(names.values())

        health = lab.exec("curl", "-s", "-w", "\n%{http_code}", f"http://127.0.0.1:{healthz_port}/healthz").stdout
        body, code = health.rsplit("\n", 1)
        assert code == "200" and json.loads(body)["lastUpdated"], health
        metrics = lab.exec("curl", "-s", f"http://127.0.0.1:{metrics_port}/metrics").stdout
        assert "kubeproxy_sync_proxy_rules_duration_seconds_count" in metrics
        assert 'kubeproxy_sync_proxy_rules_iptables_total{table="nat"}' in metrics

        # One endpoint goes: its chain goes, and every request lands on the other.
        current = api.get(f"{slices}/{svc_name}-x1").json()
        current["endpoints"] = current["endpoints"][:1]
        assert api.put(f"{slices}/{svc_name}-x1", json=current).status_code == 200
        wait_for(lambda: sep[POD_IPS[1]] not in _chains(lab.iptables_save(), "nat"),
                 "the stale endpoint chain")
        assert sep[POD_IPS[0]] in _chains(lab.iptables_save(), "nat")
        assert set(lab.curl(f"http://{cluster_ip}/", times=10)) == {names[POD_IPS[0]]}

        # No endpoints: the cluster IP is rejected at once (curl: connection refused, exit 7).
        current = api.get(f"{slices}/{svc_name}-x1").json()
        current["endpoints"] = []
        assert api.put(f"{slices}/{svc_name}-x1", json=current).status_code == 200
        wait_for(lambda: f"{svc_name}:http has no endpoints" in lab.iptables_save(), "the REJECT rule")
        assert svc_chain not in _chains(lab.iptables_save(), "nat")
        refused = lab.exec("curl", "-s", "--max-time", "5", f"http://{cluster_ip}/", check=False)
        assert refused.returncode == 7, (refused.returncode, refused.stderr)

        # The service goes: nothing of it is left.
        assert api.delete(f"/api/v1/namespaces/default/services/{svc_name}").status_code == 200
        wait_for(lambda: svc_name not in lab.iptables_save(), "the service's rules to go")
        left = _chains(lab.iptables_save(), "nat")
        assert svc_chain not in left and not set(sep.values()) & left and external_chain(sp) not in left

        # SIGTERM leaves the rules in place, as kube-proxy does.
        proxy.send_signal(signal.SIGTERM)
        assert proxy.wait(15) == 0, (tmp_path / "proxy.log").read_text()
        assert "KUBE-SERVICES" in _chains(lab.iptables_save(), "nat")
    finally:
        if proxy.poll() is None:
            proxy.kill()
            proxy.wait()
        api.close()

    cleanup = lab.exec(sys.executable, "-m", "minikube_py", "proxy", "--cleanup", check=False)
    assert cleanup.returncode == 0, cleanup.stderr
    assert "KUBE-" not in lab.iptables_save()
    # The host's own tables never saw any of it.
    host = sh("iptables-save", check=False).stdout
    assert svc_chain not in host and svc_name not in host
