"""What the API server sets up on every start: system namespaces and the `kubernetes` Service whose
endpoints follow the server (also when it comes back on another port)."""

from __future__ import annotations

from pathlib import Path

import httpx

from minikube_py.localcluster import free_port

from .conftest import running_apiserver


def _kubernetes_objects(client: httpx.Client) -> tuple[dict, dict, dict]:
    base = "/api/v1/namespaces/default"
    eps = client.get(f"{base}/endpoints/kubernetes").json()
    svc = client.get(f"{base}/services/kubernetes").json()
    sl = client.get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes").json()
    return eps, svc, sl


def test_kubernetes_endpoints_follow_the_server_port(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_apiserver(data) as first, first.http_client() as client:
        names = {n["metadata"]["name"] for n in client.get("/api/v1/namespaces").json()["items"]}
        assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names
        eps, svc, sl = _kubernetes_objects(client)
        assert eps["subsets"][0]["ports"][0]["port"] == first.port
        assert svc["spec"]["clusterIP"] == "10.96.0.1"
        first_port = first.port
    port = free_port()
    while port == first_port:
        port = free_port()
    with running_apiserver(data, "--port", str(port)) as second, second.http_client() as client:
        assert second.port == port
        eps, svc, sl = _kubernetes_objects(client)
        assert eps["subsets"][0]["ports"] == [{"name": "https", "port": second.port, "protocol": "TCP"}]
        assert eps["subsets"][0]["addresses"] == [{"ip": "127.0.0.1"}]
        assert sl["ports"][0]["port"] == second.port and sl["endpoints"][0]["addresses"] == ["127.0.0.1"]
        assert svc["spec"]["ports"][0]["targetPort"] == second.port
        assert svc["spec"]["clusterIP"] == "10.96.0.1"  # kept, not re-allocated
