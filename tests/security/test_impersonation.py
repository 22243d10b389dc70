"""Impersonation (``kubectl --as``): allowed only with the ``impersonate`` verb, then the request runs
as the impersonated user alone; headers without a user are a bad request."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.apiserver.conftest import LocalAPIServer

from .conftest import admin, as_user, kubectl_path, ok
from .test_rbac import RBAC, bind

WHOAMI = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
REVIEW = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}


def whoami(client, **headers: str) -> dict:  # type: ignore[no-untyped-def]
    return ok(client.post(WHOAMI, json=REVIEW, headers=headers), 201)["status"]["userInfo"]


@pytest.fixture(scope="module")
def impersonator(secured: LocalAPIServer) -> LocalAPIServer:
    """ivan may impersonate the user "judy" and the group "team-a", nothing else; judy may view."""
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "impersonate-judy"},
            "rules": [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"], "resourceNames": ["judy"]},
                      {"apiGroups": [""], "resources": ["groups"], "verbs": ["impersonate"],
                       "resourceNames": ["team-a"]}]}
    with admin(secured) as c:
        ok(c.post(f"{RBAC}/clusterroles", json=role), 201)
    bind(secured, None, "ivan-impersonates", "ClusterRole", "impersonate-judy", "ivan")
    bind(secured, "default", "judy-view", "ClusterRole", "view", "judy")
    return secured


def test_admin_runs_as_the_impersonated_user(impersonator: LocalAPIServer) -> None:
    with admin(impersonator) as c:
        me = whoami(c, **{"Impersonate-User": "nobody"})
        assert me["username"] == "nobody"
        assert me["groups"] == ["system:authenticated"]  # the admin's system:masters is gone
        r = c.get("/api/v1/namespaces/default/pods", headers={"Impersonate-User": "nobody"})
        assert r.status_code == 403, r.text
        assert 'User "nobody" cannot list resource "pods"' in r.json()["message"]
        grouped = whoami(c, **{"Impersonate-User": "nobody", "Impersonate-Group": "system:masters"})
        assert grouped["groups"] == ["system:masters", "system:authenticated"]
        assert c.get("/api/v1/namespaces/default/pods",
                     headers={"Impersonate-User": "nobody", "Impersonate-Group": "system:masters"}).status_code == 200


def test_only_what_rbac_allows_may_be_impersonated(impersonator: LocalAPIServer) -> None:
    with as_user(impersonator, "ivan") as c:
        assert c.get("/api/v1/namespaces/default/pods").status_code == 403  # ivan himself may not
        assert c.get("/api/v1/namespaces/default/pods", headers={"Impersonate-User": "judy"}).status_code == 200
        assert whoami(c, **{"Impersonate-User": "judy", "Impersonate-Group": "team-a"})["groups"] == [
            "team-a", "system:authenticated"]
        other = c.get("/api/v1/namespaces/default/pods", headers={"Impersonate-User": "erin"})
        assert other.status_code == 403
        assert other.json()["message"] == ('users "erin" is forbidden: User "ivan" cannot impersonate resource '
                                           '"users" in API group "" at the cluster scope')
        escalate = c.get("/api/v1/namespaces/default/pods",
                         headers={"Impersonate-User": "judy", "Impersonate-Group": "system:masters"})
        assert escalate.status_code == 403
        assert 'cannot impersonate resource "groups"' in escalate.json()["message"]
        sa = c.get("/api/v1/namespaces/default/pods", headers={"Impersonate-User": "system:serviceaccount:default:x"})
        assert sa.status_code == 403
        assert sa.json()["message"].startswith('serviceaccounts "x" is forbidden')
        assert 'in the namespace "default"' in sa.json()["message"]


def test_a_service_account_gets_its_groups(impersonator: LocalAPIServer) -> None:
    with admin(impersonator) as c:
        me = whoami(c, **{"Impersonate-User": "system:serviceaccount:kube-system:robot"})
    assert me["username"] == "system:serviceaccount:kube-system:robot"
    assert me["groups"] == ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]


def test_groups_without_a_user_are_a_bad_request(impersonator: LocalAPIServer) -> None:
    with admin(impersonator) as c:
        r = c.get("/api/v1/namespaces/default/pods", headers={"Impersonate-Group": "system:masters"})
    assert r.status_code == 400
    body = r.json()
    assert body["kind"] == "Status" and body["reason"] == "BadRequest"
    assert "without impersonating a user" in body["message"]


@pytest.mark.parametrize("version", ["1.27", "1.33"])
def test_kubectl_as(impersonator: LocalAPIServer, version: str, tmp_path: Path) -> None:
    path = kubectl_path(version)

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([path, f"--kubeconfig={impersonator.kubeconfig}", f"--cache-dir={tmp_path / 'c'}",
                               *args], capture_output=True, text=True, timeout=60)

    assert kubectl("auth", "can-i", "create", "pods", "--as=judy").stdout.strip() == "no"
    assert kubectl("auth", "can-i", "list", "pods", "--as=judy").stdout.strip() == "yes"
    assert kubectl("auth", "can-i", "create", "pods").stdout.strip() == "yes"
    denied = kubectl("get", "pods", "--as=nobody")
    assert denied.returncode == 1
    assert 'User "nobody" cannot list resource "pods"' in denied.stderr
