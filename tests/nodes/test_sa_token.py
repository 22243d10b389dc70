"""A pod's own identity, end to end on a real node (``up --local --nodes 1``, root): the ServiceAccount
admission mounts a token, the root CA publisher's kube-root-ca.crt and the namespace; the kubelet fetches
the token bound to the pod; with that token the API refuses secrets (403) and, once the account is bound
to ``view``, lists pods (200).

The HTTPS calls are made by the test with the token and CA read out of the pod (``kubectl exec``), the
CA verifying the server: Debian's busybox-static ``wget`` in the pod falls back to its own TLS client
when no ``openssl`` binary is there, and that client sends no signature_algorithms extension, so an
OpenSSL server that refuses SHA-1 handshake signatures (ours, rightly) answers "no shared cipher". The
pod shows instead that it reaches the API server through the ``kubernetes`` Service's ClusterIP (kube-
proxy's DNAT) with a TCP connection.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .conftest import NodesCluster, running_nodes

NS = "sa-e2e"
MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


@pytest.fixture(scope="module")
def one_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodesCluster]:
    with running_nodes(tmp_path_factory, "sa-nodes", 1) as c:
        yield c


def _running(c: NodesCluster, name: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        p = c.get("pod", name, "-n", NS)
        return p if p["status"].get("phase") == "Running" else None

    return c.wait_for(f"pod {name} Running", check, timeout=120)  # type: ignore[no-any-return]


def _api(c: NodesCluster, token: str, ca: Path) -> httpx.Client:
    """The API server as the pod's token sees it, its certificate checked against the pod's ca.crt."""
    kc = yaml.safe_load(c.kubeconfig.read_text())
    return httpx.Client(base_url=kc["clusters"][0]["cluster"]["server"], verify=ssl.create_default_context(
        cafile=str(ca)), headers={"Authorization": f"Bearer {token}"}, timeout=30.0)


def test_pod_calls_the_api_with_its_token(one_node: NodesCluster) -> None:
    c = one_node
    c.kubectl("create", "namespace", NS)
    c.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "caller", "namespace": NS},
             "spec": {"containers": [{"name": "main", "image": "demo/busybox", "command": ["sleep", "3600"]}]}})
    pod = _running(c, "caller")
    assert pod["spec"]["serviceAccountName"] == "default"
    ca = c.get("configmap", "kube-root-ca.crt", "-n", NS)["data"]["ca.crt"]
    assert ca == (c.data_dir / "pki" / "ca.crt").read_text()

    files = c.kubectl("exec", "-n", NS, "caller", "--", "ls", MOUNT).stdout.split()
    assert sorted(files) == ["ca.crt", "namespace", "token"]
    assert c.kubectl("exec", "-n", NS, "caller", "--", "cat", f"{MOUNT}/namespace").stdout == NS
    assert c.kubectl("exec", "-n", NS, "caller", "--", "cat", f"{MOUNT}/ca.crt").stdout == ca
    token = c.kubectl("exec", "-n", NS, "caller", "--", "cat", f"{MOUNT}/token").stdout
    part = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    assert claims["sub"] == f"system:serviceaccount:{NS}:default"
    assert claims["kubernetes.io"]["pod"] == {"name": "caller", "uid": pod["metadata"]["uid"]}

    # The pod reaches the API server through the ClusterIP: TCP to 10.96.0.1:443 is DNATed to it.
    reach = c.kubectl("exec", "-n", NS, "caller", "--", "sh", "-c",
                      "timeout 20 nc -w 5 10.96.0.1 443 </dev/null && echo connected", check=False, timeout=60)
    assert "connected" in reach.stdout, reach.stdout + reach.stderr

    ca_file = c.data_dir.parent / "pod-ca.crt"
    ca_file.write_text(ca)
    with _api(c, token, ca_file) as api:
        who = api.post("/apis/authentication.k8s.io/v1/selfsubjectreviews",
                       json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        assert who.status_code == 201 and who.json()["status"]["userInfo"]["username"] == claims["sub"], who.text
        r = api.get(f"/api/v1/namespaces/{NS}/secrets")
        assert r.status_code == 403 and r.json()["reason"] == "Forbidden", r.text
        assert api.get(f"/api/v1/namespaces/{NS}/pods").status_code == 403

        c.kubectl("create", "rolebinding", "default-view", "-n", NS, "--clusterrole=view",
                  f"--serviceaccount={NS}:default")
        listed = c.wait_for("the pod's token listing pods",
                            lambda: (r := api.get(f"/api/v1/namespaces/{NS}/pods")).status_code == 200 and r.json(),
                            timeout=30)
        assert [p["metadata"]["name"] for p in listed["items"]] == ["caller"]
        assert api.get(f"/api/v1/namespaces/{NS}/secrets").status_code == 403  # view does not read secrets

        # The token is bound to the pod: it dies with it.
        c.kubectl("delete", "pod", "caller", "-n", NS, "--grace-period=0", "--force", "--wait=true", timeout=120)
        assert api.get(f"/api/v1/namespaces/{NS}/pods").status_code == 401
