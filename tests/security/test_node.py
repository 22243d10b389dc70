"""The Node authorizer: a kubelet's client certificate (CN=system:node:<name>, O=system:nodes) reaches
its own Node, Lease and pods and the secrets those pods use, and nothing of another node's; and
certificates the cluster's CA did not sign are refused."""

from __future__ import annotations

import ssl
from typing import Any

import httpx
import pytest

from minikube_py.pki import ensure_pki
from tests.apiserver.conftest import LocalAPIServer

from .conftest import admin, as_cert, client_cert, ok


def _node(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}


def _pod(name: str, node: str, secret: str, configmap: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{
                "name": "c", "image": "nginx",
                "env": [{"name": "CM", "valueFrom": {"configMapKeyRef": {"name": configmap, "key": "k"}}}]}],
                     "volumes": [{"name": "s", "secret": {"secretName": secret}}]}}


@pytest.fixture(scope="module")
def cluster(secured: LocalAPIServer) -> LocalAPIServer:
    with admin(secured) as c:
        for n in ("n1", "n2"):
            ok(c.post("/api/v1/nodes", json=_node(n)), 201)
        for n in ("1", "2"):
            ok(c.post("/api/v1/namespaces/default/secrets", json={
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"node-secret-{n}"},
                "data": {"k": "dmFsdWU="}}), 201)
            ok(c.post("/api/v1/namespaces/default/configmaps", json={
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"node-cm-{n}"}, "data": {"k": "v"}}),
               201)
            ok(c.post("/api/v1/namespaces/default/pods",
                      json=_pod(f"on-n{n}", f"n{n}", f"node-secret-{n}", f"node-cm-{n}")), 201)
    return secured


@pytest.fixture(scope="module")
def kubelet(cluster: LocalAPIServer) -> httpx.Client:
    with as_cert(cluster, client_cert(cluster, "node-n1", "system:node:n1", ("system:nodes",))) as c:
        yield c


def test_identity(kubelet: httpx.Client) -> None:
    who = ok(kubelet.post("/apis/authentication.k8s.io/v1/selfsubjectreviews",
                          json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}), 201)
    assert who["status"]["userInfo"]["username"] == "system:node:n1"
    assert "system:nodes" in who["status"]["userInfo"]["groups"]


def test_own_node_and_status(kubelet: httpx.Client) -> None:
    node = ok(kubelet.get("/api/v1/nodes/n1"))
    node["status"] = {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}
    updated = ok(kubelet.put("/api/v1/nodes/n1/status", json=node))
    assert updated["status"]["conditions"][0]["status"] == "True"
    other = ok(kubelet.get("/api/v1/nodes/n2"))  # nodes are readable (the kubelet watches its own)
    r = kubelet.put("/api/v1/nodes/n2/status", json=other)
    assert r.status_code == 403
    assert r.json()["message"].startswith('nodes "n2" is forbidden: User "system:node:n1" cannot update resource '
                                          '"nodes" subresource "status"')
    assert kubelet.delete("/api/v1/nodes/n2").status_code == 403


def test_own_lease(kubelet: httpx.Client) -> None:
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n1"},
             "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40}}
    ok(kubelet.post("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", json=lease), 201)
    ok(kubelet.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1"))
    assert kubelet.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n2").status_code == 403


def test_pods_bound_to_it_only(kubelet: httpx.Client) -> None:
    assert ok(kubelet.get("/api/v1/namespaces/default/pods/on-n1"))["spec"]["nodeName"] == "n1"
    r = kubelet.get("/api/v1/namespaces/default/pods/on-n2")
    assert r.status_code == 403
    assert r.json()["message"] == ('pods "on-n2" is forbidden: User "system:node:n1" cannot get resource "pods" '
                                   'in API group "" in the namespace "default"')
    listed = ok(kubelet.get("/api/v1/pods", params={"fieldSelector": "spec.nodeName=n1"}))
    assert [p["metadata"]["name"] for p in listed["items"]] == ["on-n1"]
    assert kubelet.get("/api/v1/pods").status_code == 403
    assert kubelet.get("/api/v1/pods", params={"fieldSelector": "spec.nodeName=n2"}).status_code == 403
    pod = ok(kubelet.get("/api/v1/namespaces/default/pods/on-n1"))
    pod["status"] = {"phase": "Running"}
    assert ok(kubelet.put("/api/v1/namespaces/default/pods/on-n1/status", json=pod))["status"]["phase"] == "Running"
    other = {**pod, "metadata": {**pod["metadata"], "name": "on-n2"}}
    assert kubelet.put("/api/v1/namespaces/default/pods/on-n2/status", json=other).status_code == 403
    assert kubelet.delete("/api/v1/namespaces/default/pods/on-n2").status_code == 403
    # Creating pods is not a kubelet's business here.
    assert kubelet.post("/api/v1/namespaces/default/pods", json=_pod("x", "n1", "a", "b")).status_code == 403


def test_secrets_and_configmaps_of_its_pods(kubelet: httpx.Client) -> None:
    assert ok(kubelet.get("/api/v1/namespaces/default/secrets/node-secret-1"))["data"]["k"] == "dmFsdWU="
    ok(kubelet.get("/api/v1/namespaces/default/configmaps/node-cm-1"))
    r = kubelet.get("/api/v1/namespaces/default/secrets/node-secret-2")
    assert r.status_code == 403
    assert r.json()["message"].startswith('secrets "node-secret-2" is forbidden: User "system:node:n1"')
    assert kubelet.get("/api/v1/namespaces/default/configmaps/node-cm-2").status_code == 403
    assert kubelet.get("/api/v1/namespaces/default/secrets").status_code == 403


def test_delete_its_pod(cluster: LocalAPIServer, kubelet: httpx.Client) -> None:
    with admin(cluster) as c:
        ok(c.post("/api/v1/namespaces/default/pods", json=_pod("doomed", "n1", "node-secret-1", "node-cm-1")), 201)
    ok(kubelet.delete("/api/v1/namespaces/default/pods/doomed", params={"gracePeriodSeconds": "0"}))
    # Gone: the kubelet sees 404, as it expects after a deletion.
    assert kubelet.get("/api/v1/namespaces/default/pods/doomed").status_code == 404
    assert kubelet.get("/api/v1/namespaces/default/pods/on-n2").status_code == 403


def test_node_group_is_required(cluster: LocalAPIServer) -> None:
    """The name alone is no node identity: without O=system:nodes RBAC decides, and grants nothing."""
    with as_cert(cluster, client_cert(cluster, "fake-n1", "system:node:n1", ())) as c:
        assert c.get("/api/v1/namespaces/default/pods/on-n1").status_code == 403


def test_certificate_from_another_ca_is_refused(cluster: LocalAPIServer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Never authenticated: TLS 1.3 refuses the unknown client certificate after the handshake, so the
    client sees the alert on its first read (or a 401 when the server answers first)."""
    other = ensure_pki(tmp_path / "other", clients={"n1": ("system:node:n1", ("system:nodes",))})
    ctx = ssl.create_default_context(cafile=str(cluster.ca_file))
    ctx.load_cert_chain(str(other["n1.crt"]), str(other["n1.key"]))
    with httpx.Client(base_url=cluster.url, verify=ctx, timeout=30.0) as c:
        try:
            r = c.get("/api/v1/nodes/n1")
        except (httpx.TransportError, ssl.SSLError):
            return
        assert r.status_code == 401, r.text
