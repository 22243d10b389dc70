"""The lab is secured as the roles deliver it (issue #7): every port refuses anonymous callers, etcd accepts
only certificates of its own CA, RBAC and the Node authorizer limit users, kubelets and pods, Secrets are
encrypted in etcd, and the controller-manager is not in system:masters.

Runs after the smoke tests against the same provisioned lab (conftest.py orders the files). The HTTPS
calls go from the host to the machines' lab addresses with the controller's key material (.lab/pki),
verifying every server certificate that the cluster or etcd CA issued; kubectl runs on the host with
.lab/admin.kubeconfig; etcdctl runs on the etcd members over ssh. Each refusal has a counterpart that
succeeds with the right credentials, so that a test cannot pass because a port is simply down.
Everything the tests create lives in a namespace of their own, deleted at the end.
"""

from __future__ import annotations

import base64
import json
import secrets
import shlex
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.lab.conftest import REPO, run, wait_for

pytestmark = pytest.mark.lab

PKI = REPO / ".lab" / "pki"
KUBECTL = [str(REPO / ".venv" / "bin" / "kubectl"), "--kubeconfig", str(REPO / ".lab" / "admin.kubeconfig")]
MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
MACHINE_PKI = "/etc/minikube-py/pki"
SECRET_VALUE = "lab-secret-" + secrets.token_hex(8)


def kubectl(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([*KUBECTL, *args], input=stdin, capture_output=True, text=True, timeout=120, check=False)
    if check:
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: rc={proc.returncode} {proc.stderr.strip()}"
    return proc


def tls(ca: Path | None, cert: str | None = None) -> ssl.SSLContext:
    """A client context trusting ``ca`` (None: no verification, for the self-signed 10257/10259), presenting
    PKI/<cert>.crt when given."""
    if ca is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(PKI / f"{cert}.crt"), str(PKI / f"{cert}.key"))
    return ctx


def client(address: str, port: int, *, ca: Path | None = PKI / "ca.crt", cert: str | None = None,
           token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=f"https://{address}:{port}", verify=tls(ca, cert), headers=headers, timeout=30.0)


def listing(api: httpx.Client, namespace: str) -> dict[str, Any] | None:
    """The pod list once ``api``'s identity may read it (RBAC follows a new binding within moments)."""
    r = api.get(f"/api/v1/namespaces/{namespace}/pods")
    return r.json() if r.status_code == 200 else None  # type: ignore[no-any-return]


def can_i(api: httpx.Client, verb: str, resource: str, namespace: str) -> bool:
    """What `kubectl auth can-i` asks: a SelfSubjectAccessReview."""
    r = api.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", json={
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": verb, "resource": resource, "namespace": namespace}}})
    assert r.status_code == 201, r.text
    return bool(r.json()["status"]["allowed"])


def forbidden(response: httpx.Response, user: str, verb: str, resource: str, namespace: str) -> None:
    """A 403 with Kubernetes' message."""
    assert response.status_code == 403, response.text
    status = response.json()
    assert status["reason"] == "Forbidden", status
    expected = (f'{resource} is forbidden: User "{user}" cannot {verb} resource "{resource}" in API group "" '
                f'in the namespace "{namespace}"')
    assert expected in status["message"], status["message"]


# ---- what the tests create: one namespace, a Secret, a pod on the second worker that mounts it ---------------


@pytest.fixture(scope="module")
def namespace(lab_groups: dict[str, list[str]]) -> Iterator[str]:
    name = f"security-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def api_address(lab_groups: dict[str, list[str]], lab_addresses: dict[str, str]) -> str:
    return lab_addresses[lab_groups["masters"][0]]


@pytest.fixture(scope="module")
def caller(namespace: str, lab_groups: dict[str, list[str]]) -> dict[str, Any]:
    """Pod ``caller`` bound to the last worker, running as ServiceAccount default and mounting Secret
    ``lab-secret``; returned once Running."""
    objects = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lab-secret"},
         "stringData": {"value": SECRET_VALUE}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "caller"},
         "spec": {"nodeName": lab_groups["workers"][-1], "terminationGracePeriodSeconds": 1,
                  "containers": [{"name": "main", "image": "demo/busybox", "command": ["sleep", "3600"],
                                  "volumeMounts": [{"name": "secret", "mountPath": "/etc/lab-secret"}]}],
                  "volumes": [{"name": "secret", "secret": {"secretName": "lab-secret"}}]}},
    ]
    kubectl("apply", "-n", namespace, "-f", "-",
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))

    def running() -> dict[str, Any] | None:
        pod = json.loads(kubectl("get", "pod", "caller", "-n", namespace, "-o", "json").stdout)
        return pod if pod["status"].get("phase") == "Running" else None

    return wait_for("pod caller Running", running, timeout=120)


# ---- no anonymous access ---------------------------------------------------------------------------------------


def test_api_server_refuses_anonymous_requests(lab_master: str, lab_addresses: dict[str, str]) -> None:
    with client(lab_addresses[lab_master], 6443) as api:
        r = api.get("/api/v1/pods")
        assert r.status_code == 401 and r.json()["reason"] == "Unauthorized", r.text
        assert api.get("/healthz").status_code == 200  # health stays open, as in Kubernetes
    with client(lab_addresses[lab_master], 6443, cert="admin") as api:
        assert api.get("/api/v1/pods").status_code == 200


def test_kubelet_refuses_anonymous_requests(lab_worker: str, lab_addresses: dict[str, str]) -> None:
    # The kubelet's serving certificate is the cluster CA's, for the node's address: verified here.
    with client(lab_addresses[lab_worker], 10250) as kubelet:
        r = kubelet.get("/pods")
        assert r.status_code == 401, r.text
    # The API server's kubelet-client identity is let in (x509 from --client-ca-file, then a SAR).
    with client(lab_addresses[lab_worker], 10250, cert="apiserver-kubelet-client") as kubelet:
        r = kubelet.get("/pods")
        assert r.status_code == 200 and r.json()["kind"] == "PodList", r.text


@pytest.mark.parametrize("port", [10257, 10259], ids=["controller-manager", "scheduler"])
def test_control_plane_ports_refuse_anonymous_metrics(lab_master: str, lab_addresses: dict[str, str],
                                                      port: int) -> None:
    # Both serve a self-signed certificate of their own, as kube-controller-manager/kube-scheduler do.
    with client(lab_addresses[lab_master], port, ca=None) as component:
        r = component.get("/metrics")
        assert r.status_code == 401, r.text
        assert component.get("/healthz").status_code == 200
    with client(lab_addresses[lab_master], port, ca=None, cert="admin") as component:
        r = component.get("/metrics")
        assert r.status_code == 200, r.text


# ---- etcd: TLS with client certificates of its own CA only ------------------------------------------------------


def etcd_health(address: str, cert: str | None) -> str:
    """GET /health on the member with ``cert`` (PKI/<cert>): the body, or the TLS/connection error."""
    try:
        with client(address, 2379, ca=PKI / "etcd" / "ca.crt", cert=cert) as etcd:
            return etcd.get("/health").text
    except (httpx.TransportError, ssl.SSLError) as e:
        return f"error: {e}"


@pytest.mark.parametrize("cert", [None, "admin"], ids=["no certificate", "cluster CA certificate"])
def test_etcd_refuses_clients_without_its_certificate(lab_etcd: str, lab_addresses: dict[str, str],
                                                      cert: str | None) -> None:
    answer = etcd_health(lab_addresses[lab_etcd], cert)
    assert answer.startswith("error:") and "certificate" in answer, answer
    assert json.loads(etcd_health(lab_addresses[lab_etcd], "etcd/healthcheck-client")) == {"health": "true"}


def etcdctl(host: Any, *args: str, cert: str | None) -> Any:
    """etcdctl (v3 API) on an etcd member against its local client URL, with MACHINE_PKI/<cert>."""
    creds = f"--cert {MACHINE_PKI}/{cert}.crt --key {MACHINE_PKI}/{cert}.key" if cert else ""
    return host.run(f"ETCDCTL_API=3 etcdctl --endpoints https://127.0.0.1:2379 --cacert {MACHINE_PKI}/etcd/ca.crt "
                    f"--dial-timeout 3s --command-timeout 5s {creds} " + " ".join(shlex.quote(a) for a in args))


def test_etcdctl_needs_a_certificate_of_etcds_ca(lab_etcd: str, lab_groups: dict[str, list[str]],
                                                 lab_host: Any) -> None:
    host = lab_host(lab_etcd)
    assert lab_etcd in lab_groups["masters"], "the cluster-CA case uses a master's admin certificate"
    key = "/registry/namespaces/default"
    refused = etcdctl(host, "get", "--keys-only", key, cert=None)
    assert refused.rc != 0 and key not in refused.stdout, refused.stdout + refused.stderr
    foreign = etcdctl(host, "get", "--keys-only", key, cert="admin")
    assert foreign.rc != 0 and key not in foreign.stdout, foreign.stdout + foreign.stderr
    ok = etcdctl(host, "get", "--keys-only", key, cert="etcd/healthcheck-client")
    assert ok.rc == 0 and ok.stdout.strip() == key, ok.stdout + ok.stderr


def test_secrets_are_encrypted_in_etcd(caller: dict[str, Any], namespace: str, lab_groups: dict[str, list[str]],
                                       lab_host: Any) -> None:
    host = lab_host(lab_groups["etcd"][0])
    raw = etcdctl(host, "get", f"/registry/secrets/{namespace}/lab-secret", "-w", "json",
                  cert="etcd/healthcheck-client")
    assert raw.rc == 0, raw.stderr
    kvs = json.loads(raw.stdout).get("kvs") or []
    assert len(kvs) == 1, raw.stdout
    value = base64.b64decode(kvs[0]["value"])
    assert value.startswith(b"k8s:enc:aescbc:v1:"), value[:40]
    assert SECRET_VALUE.encode() not in value and base64.b64encode(SECRET_VALUE.encode()) not in value
    # Reads through the API decrypt.
    data = json.loads(kubectl("get", "secret", "lab-secret", "-n", namespace, "-o", "json").stdout)["data"]
    assert base64.b64decode(data["value"]).decode() == SECRET_VALUE


# ---- RBAC for a user, the Node authorizer for kubelets ----------------------------------------------------------


def test_view_user_lists_pods_but_cannot_create_them(caller: dict[str, Any], namespace: str, api_address: str,
                                                     tmp_path: Path) -> None:
    user = "lab-viewer"
    issued = run([str(REPO / ".venv" / "bin" / "minikube-py"), "pki", "issue", "--dir", str(PKI), "--client",
                  "--cn", user, "--out", str(tmp_path / user)])
    assert issued.returncode == 0, issued.stderr
    ctx = tls(PKI / "ca.crt")
    ctx.load_cert_chain(str(tmp_path / f"{user}.crt"), str(tmp_path / f"{user}.key"))
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "not-allowed"},
           "spec": {"containers": [{"name": "main", "image": "demo/busybox"}]}}
    with httpx.Client(base_url=f"https://{api_address}:6443", verify=ctx, timeout=30.0) as api:
        forbidden(api.get(f"/api/v1/namespaces/{namespace}/pods"), user, "list", "pods", namespace)
        kubectl("create", "rolebinding", "viewer", "-n", namespace, "--clusterrole=view", f"--user={user}")
        listed = wait_for(f"{user} listing pods", lambda: listing(api, namespace), timeout=30)
        assert [p["metadata"]["name"] for p in listed["items"]] == ["caller"]
        forbidden(api.post(f"/api/v1/namespaces/{namespace}/pods", json=pod), user, "create", "pods", namespace)
        forbidden(api.get(f"/api/v1/namespaces/{namespace}/secrets"), user, "list", "secrets", namespace)
        assert can_i(api, "list", "pods", namespace) and not can_i(api, "create", "pods", namespace)


def test_kubelet_certificate_reaches_only_its_own_node(caller: dict[str, Any], namespace: str, api_address: str,
                                                       lab_groups: dict[str, list[str]]) -> None:
    assert len(lab_groups["workers"]) >= 2, "the Node authorizer test needs two workers (WORKERS>=2)"
    own, other = caller["spec"]["nodeName"], lab_groups["workers"][0]
    pod_path = f"/api/v1/namespaces/{namespace}/pods/caller"
    secret_path = f"/api/v1/namespaces/{namespace}/secrets/lab-secret"
    with client(api_address, 6443, cert=f"kubelet-{other}") as kubelet:
        for path in (pod_path, secret_path):
            r = kubelet.get(path)
            assert r.status_code == 403 and r.json()["reason"] == "Forbidden", (path, r.text)
        node = kubelet.get(f"/api/v1/nodes/{other}")
        assert node.status_code == 200 and node.json()["metadata"]["name"] == other, node.text
    with client(api_address, 6443, cert=f"kubelet-{own}") as kubelet:
        assert kubelet.get(pod_path).status_code == 200
        secret = kubelet.get(secret_path)
        assert secret.status_code == 200, secret.text
        assert base64.b64decode(secret.json()["data"]["value"]).decode() == SECRET_VALUE


# ---- a pod's own identity ---------------------------------------------------------------------------------------


def test_pod_calls_the_api_with_its_serviceaccount_token(caller: dict[str, Any], namespace: str,
                                                         api_address: str, tmp_path: Path) -> None:
    def in_pod(*command: str, check: bool = True) -> subprocess.CompletedProcess:
        return kubectl("exec", "-n", namespace, "caller", "--", *command, check=check)

    assert caller["spec"]["serviceAccountName"] == "default"
    assert sorted(in_pod("ls", MOUNT).stdout.split()) == ["ca.crt", "namespace", "token"]
    assert in_pod("cat", f"{MOUNT}/namespace").stdout == namespace
    ca = in_pod("cat", f"{MOUNT}/ca.crt").stdout
    assert ca == (PKI / "ca.crt").read_text()
    token = in_pod("cat", f"{MOUNT}/token").stdout
    part = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    assert claims["sub"] == f"system:serviceaccount:{namespace}:default"
    assert claims["kubernetes.io"]["pod"]["name"] == "caller"

    # The pod reaches the API server through the kubernetes Service's ClusterIP (kube-proxy's DNAT).
    reach = in_pod("sh", "-c", "timeout 20 nc -w 5 10.96.0.1 443 </dev/null && echo connected", check=False)
    assert "connected" in reach.stdout, reach.stdout + reach.stderr

    (tmp_path / "ca.crt").write_text(ca)
    with client(api_address, 6443, ca=tmp_path / "ca.crt", token=token) as api:
        who = api.post("/apis/authentication.k8s.io/v1/selfsubjectreviews",
                       json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        assert who.status_code == 201 and who.json()["status"]["userInfo"]["username"] == claims["sub"], who.text
        user = claims["sub"]
        forbidden(api.get(f"/api/v1/namespaces/{namespace}/secrets"), user, "list", "secrets", namespace)
        forbidden(api.get(f"/api/v1/namespaces/{namespace}/pods"), user, "list", "pods", namespace)
        kubectl("create", "rolebinding", "default-view", "-n", namespace, "--clusterrole=view",
                f"--serviceaccount={namespace}:default")
        listed = wait_for("the pod's token listing pods", lambda: listing(api, namespace), timeout=30)
        assert [p["metadata"]["name"] for p in listed["items"]] == ["caller"]
        forbidden(api.get(f"/api/v1/namespaces/{namespace}/secrets"), user, "list", "secrets", namespace)


# ---- the controller-manager's identity ---------------------------------------------------------------------------


def test_controller_manager_is_not_in_system_masters(api_address: str, lab_groups: dict[str, list[str]],
                                                     lab_host: Any) -> None:
    with client(api_address, 6443, cert="controller-manager") as api:
        who = api.post("/apis/authentication.k8s.io/v1/selfsubjectreviews",
                       json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        assert who.status_code == 201, who.text
        info = who.json()["status"]["userInfo"]
        assert info["username"] == "system:kube-controller-manager"
        assert "system:masters" not in info.get("groups", []), info
        # Its own identity may not write what the controllers write: they act as their ServiceAccounts.
        r = api.post("/api/v1/namespaces/default/pods", json={
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "cm-probe"},
            "spec": {"containers": [{"name": "main", "image": "demo/busybox"}]}})
        assert r.status_code == 403, r.text
    for master in lab_groups["masters"]:
        unit = lab_host(master).check_output("systemctl cat kube-controller-manager")
        assert "--use-service-account-credentials true" in unit, unit
    accounts = kubectl("get", "serviceaccounts", "-n", "kube-system", "-o", "name").stdout.split()
    for controller in ("deployment-controller", "replicaset-controller", "endpointslice-controller"):
        assert f"serviceaccount/{controller}" in accounts, accounts


# ---- no secret material in any log ---------------------------------------------------------------------------------


def test_no_secret_material_in_any_component_log(caller: dict[str, Any], lab_groups: dict[str, list[str]],
                                                 lab_host: Any) -> None:
    """After every test above (tokens used, a Secret written and mounted, a ServiceAccount token fetched by a
    kubelet), no unit of ours has logged the admin token, the Secret's value, a private key or a JWT."""
    needles = {"the admin token": (PKI / "admin.token").read_text().strip(), "the Secret's value": SECRET_VALUE,
               "a PEM private key": "PRIVATE KEY", "a JWT (ServiceAccount token)": "eyJhbGciOi"}
    units = "-u 'kube*' -u 'etcd*' -u 'minikube-py*' -u 'docker-registry*'"
    for name in sorted({*lab_groups["masters"], *lab_groups["workers"]}):
        logs = lab_host(name).run(f"journalctl --no-pager -o cat {units}")
        assert logs.rc == 0 and logs.stdout.strip(), f"{name}: no logs to check ({logs.stderr})"
        found = [what for what, needle in needles.items() if needle and needle in logs.stdout]
        assert not found, f"{name}: the component logs contain {', '.join(found)}"
