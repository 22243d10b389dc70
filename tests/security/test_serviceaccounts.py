"""ServiceAccount tokens: `kubectl create token` (JSON from 1.27, protobuf from 1.33) returns a JWT
that authenticates as the account and is limited by RBAC; forged, expired and wrong-issuer tokens
are 401; TokenReview answers for the server's tokens."""

from __future__ import annotations

import base64
import json
import subprocess
import time

import pytest

from minikube_py.apiserver.serviceaccounts import ServiceAccountTokens, load_signing_key
from tests.apiserver.conftest import LocalAPIServer

from .conftest import admin, as_token, kubectl_path, ok

ISSUER = "https://kubernetes.default.svc.cluster.local"
SA_USER = "system:serviceaccount:default:default"


def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture(scope="module")
def account(secured: LocalAPIServer) -> dict:
    with admin(secured) as c:
        r = c.post("/api/v1/namespaces/default/serviceaccounts",
                   json={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})
        assert r.status_code in (201, 409), r.text
        return ok(c.get("/api/v1/namespaces/default/serviceaccounts/default"))


def create_token(server: LocalAPIServer, version: str, *args: str) -> str:
    res = subprocess.run([kubectl_path(version), f"--kubeconfig={server.kubeconfig}", "create", "token", "default",
                          *args], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


@pytest.mark.parametrize("version", ["1.27", "1.33"])
def test_kubectl_create_token(secured: LocalAPIServer, account: dict, version: str) -> None:
    token = create_token(secured, version, "--duration=10m")
    c = claims(token)
    assert c["sub"] == SA_USER and c["iss"] == ISSUER and c["aud"] == [ISSUER]
    assert c["kubernetes.io"]["namespace"] == "default"
    assert c["kubernetes.io"]["serviceaccount"] == {"name": "default", "uid": account["metadata"]["uid"]}
    assert c["exp"] - c["iat"] == 600 and c["nbf"] == c["iat"]
    with as_token(secured, token) as client:
        who = ok(client.post("/apis/authentication.k8s.io/v1/selfsubjectreviews",
                             json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}), 201)
        info = who["status"]["userInfo"]
        assert info["username"] == SA_USER
        groups = {"system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"}
        assert groups <= set(info["groups"])


def test_token_is_limited_by_rbac(secured: LocalAPIServer, account: dict) -> None:
    token = create_token(secured, "1.33")
    with as_token(secured, token) as c:
        r = c.get("/api/v1/namespaces/default/configmaps")
        assert r.status_code == 403
        assert r.json()["message"] == (f'configmaps is forbidden: User "{SA_USER}" cannot list resource "configmaps" '
                                       'in API group "" in the namespace "default"')
    with admin(secured) as a:
        ok(a.post("/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", json={
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "sa-view"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}]}), 201)
    with as_token(secured, token) as c:
        ok(c.get("/api/v1/namespaces/default/configmaps"))
        assert c.post("/api/v1/namespaces/default/configmaps",
                      json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}).status_code == 403
        assert c.get("/api/v1/namespaces/kube-system/configmaps").status_code == 403


def test_bad_tokens_are_401(secured: LocalAPIServer, account: dict) -> None:
    good = create_token(secured, "1.33")
    head, payload, sig = good.split(".")
    forged_claims = {**claims(good), "sub": "system:serviceaccount:kube-system:default"}
    forged_payload = base64.urlsafe_b64encode(json.dumps(forged_claims).encode()).decode().rstrip("=")
    key = load_signing_key(secured.data_dir / "pki" / "sa.key")
    uid = account["metadata"]["uid"]
    expired, _ = ServiceAccountTokens(ISSUER, key).sign("default", "default", uid, now=time.time() - 7200)
    wrong_issuer, _ = ServiceAccountTokens("https://evil.example", key).sign("default", "default", uid)
    wrong_audience, _ = ServiceAccountTokens(ISSUER, key).sign("default", "default", uid, audiences=["vault"])
    other_key, _ = ServiceAccountTokens(ISSUER, load_signing_key(_other_key(secured))).sign("default", "default", uid)
    bad = {"forged": f"{head}.{forged_payload}.{sig}", "expired": expired, "wrong issuer": wrong_issuer,
           "wrong audience": wrong_audience, "other key": other_key, "truncated": f"{head}.{payload}",
           "garbage": "a.b.c", "unsigned": _b64(b'{"alg":"none"}') + f".{payload}."}
    for what, token in bad.items():
        with as_token(secured, token) as c:
            r = c.get("/api/v1/namespaces/default/configmaps")
            assert r.status_code == 401, what
            assert r.json()["reason"] == "Unauthorized"
    log = (secured.data_dir.parent / f"{secured.data_dir.name}.log").read_text()
    assert sig not in log and good not in log


def test_token_request_validation(secured: LocalAPIServer, account: dict) -> None:
    path = "/api/v1/namespaces/default/serviceaccounts/default/token"
    with admin(secured) as c:
        r = c.post(path, json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                               "spec": {"expirationSeconds": 60}})
        assert r.status_code == 422 and "10 minutes" in r.json()["message"]
        r = c.post("/api/v1/namespaces/default/serviceaccounts/nobody/token",
                   json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})
        assert r.status_code == 404
        issued = ok(c.post(path, json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                       "spec": {"audiences": ["vault"]}}), 201)
        assert claims(issued["status"]["token"])["aud"] == ["vault"]
        token = ok(c.post(path, json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                      "spec": {}}), 201)["status"]["token"]
        for t, authenticated in ((token, True), (issued["status"]["token"], False), ("nope", False)):
            review = ok(c.post("/apis/authentication.k8s.io/v1/tokenreviews", json={
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": t}}), 201)
            assert review["status"]["authenticated"] is authenticated
            assert "token" not in review["spec"]
            if authenticated:
                assert review["status"]["user"]["username"] == SA_USER


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _other_key(server: LocalAPIServer):  # type: ignore[no-untyped-def]
    from minikube_py.apiserver.serviceaccounts import ensure_signing_key

    return ensure_signing_key(server.data_dir / "other-sa.key")


def test_tokens_die_with_their_account_and_pod(secured: LocalAPIServer) -> None:
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "short-lived"}}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "token-holder"},
           "spec": {"serviceAccountName": "short-lived", "containers": [{"name": "c", "image": "nginx"}]}}
    base = "/api/v1/namespaces/default"
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
    with admin(secured) as c:
        ok(c.post(f"{base}/serviceaccounts", json=sa), 201)
        created = ok(c.post(f"{base}/pods", json=pod), 201)
        plain = ok(c.post(f"{base}/serviceaccounts/short-lived/token", json=request), 201)["status"]["token"]
        bound_spec = {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "token-holder",
                                         "uid": created["metadata"]["uid"]}}
        bound = ok(c.post(f"{base}/serviceaccounts/short-lived/token", json={**request, "spec": bound_spec}),
                   201)["status"]["token"]
        assert claims(bound)["kubernetes.io"]["pod"] == {"name": "token-holder", "uid": created["metadata"]["uid"]}
        r = c.post(f"{base}/serviceaccounts/short-lived/token", json={**request, "spec": {"boundObjectRef": {
            **bound_spec["boundObjectRef"], "uid": "not-the-uid"}}})
        assert r.status_code == 409

    def status(token: str) -> int:
        with as_token(secured, token) as u:
            return u.post("/apis/authentication.k8s.io/v1/selfsubjectreviews",
                          json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).status_code

    assert status(plain) == 201 and status(bound) == 201
    with admin(secured) as c:
        ok(c.delete(f"{base}/pods/token-holder", params={"gracePeriodSeconds": "0"}))
    assert status(bound) == 401 and status(plain) == 201
    with admin(secured) as c:
        ok(c.delete(f"{base}/serviceaccounts/short-lived"))
        assert status(plain) == 401
        ok(c.post(f"{base}/serviceaccounts", json=sa), 201)  # same name, another account
    assert status(plain) == 401
