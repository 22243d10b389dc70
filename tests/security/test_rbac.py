"""RBAC: bootstrap policy, Roles and ClusterRoles bound in one namespace or cluster-wide, resourceNames,
nonResourceURLs, the Forbidden message, `kubectl auth can-i` and SubjectAccessReview."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.apiserver.conftest import LocalAPIServer

from .conftest import admin, as_user, kubectl_path, ok, write_user_kubeconfig

RBAC = "/apis/rbac.authorization.k8s.io/v1"
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
       "spec": {"containers": [{"name": "c", "image": "nginx"}]}}


def bind(server: LocalAPIServer, ns: str | None, name: str, role_kind: str, role: str, user: str) -> None:
    kind = "RoleBinding" if ns else "ClusterRoleBinding"
    body = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
            "metadata": {"name": name, **({"namespace": ns} if ns else {})},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}
    path = f"{RBAC}/namespaces/{ns}/rolebindings" if ns else f"{RBAC}/clusterrolebindings"
    with admin(server) as c:
        ok(c.post(path, json=body), 201)


def ensure_namespace(server: LocalAPIServer, ns: str) -> None:
    with admin(server) as c:
        r = c.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        assert r.status_code in (201, 409), r.text


@pytest.fixture(scope="module")
def viewer(secured: LocalAPIServer) -> LocalAPIServer:
    """bob may view the default namespace."""
    bind(secured, "default", "bob-view", "ClusterRole", "view", "bob")
    return secured


def test_bootstrap_policy(secured: LocalAPIServer) -> None:
    with admin(secured) as c:
        roles = {r["metadata"]["name"] for r in ok(c.get(f"{RBAC}/clusterroles"))["items"]}
        assert {"cluster-admin", "admin", "edit", "view", "system:kube-scheduler",
                "system:kube-controller-manager", "system:node-proxier", "system:basic-user"} <= roles
        ca = ok(c.get(f"{RBAC}/clusterrolebindings/cluster-admin"))
        assert ca["roleRef"]["name"] == "cluster-admin"
        assert ca["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}]
        sched = ok(c.get(f"{RBAC}/clusterrolebindings/system:kube-scheduler"))
        assert sched["subjects"][0]["kind"] == "User" and sched["subjects"][0]["name"] == "system:kube-scheduler"


def test_unknown_user_gets_kubernetes_forbidden_message(secured: LocalAPIServer) -> None:
    with as_user(secured, "dave") as c:
        r = c.get("/api/v1/namespaces/default/pods")
        assert r.status_code == 403
        status = r.json()
        assert status["reason"] == "Forbidden"
        assert status["message"] == ('pods is forbidden: User "dave" cannot list resource "pods" in API group "" '
                                     'in the namespace "default"')
        # Discovery and whoami stay open to every authenticated user (system:discovery, system:basic-user).
        ok(c.get("/api"))
        ok(c.get("/apis"))
        who = ok(c.post("/apis/authentication.k8s.io/v1/selfsubjectreviews",
                        json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}), 201)
        assert who["status"]["userInfo"]["username"] == "dave"


def test_view_lists_but_cannot_create(viewer: LocalAPIServer) -> None:
    with as_user(viewer, "bob") as c:
        assert ok(c.get("/api/v1/namespaces/default/pods"))["kind"] == "PodList"
        ok(c.get("/apis/apps/v1/namespaces/default/deployments"))
        r = c.post("/api/v1/namespaces/default/pods", json=POD)
        assert r.status_code == 403
        assert r.json()["message"] == ('pods is forbidden: User "bob" cannot create resource "pods" in API group "" '
                                       'in the namespace "default"')
        # view does not include secrets, nor any other namespace
        assert c.get("/api/v1/namespaces/default/secrets").status_code == 403
        assert c.get("/api/v1/namespaces/kube-system/pods").status_code == 403
        r = c.get("/api/v1/pods")
        assert r.status_code == 403
        assert r.json()["message"].endswith('cannot list resource "pods" in API group "" at the cluster scope')


def test_resource_names_limit_to_one_object(secured: LocalAPIServer) -> None:
    with admin(secured) as c:
        for name in ("allowed", "other"):
            ok(c.post("/api/v1/namespaces/default/configmaps",
                      json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}), 201)
        ok(c.post(f"{RBAC}/namespaces/default/roles", json={
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "one-cm"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["allowed"],
                       "verbs": ["get", "update"]}]}), 201)
    bind(secured, "default", "erin-one-cm", "Role", "one-cm", "erin")
    with as_user(secured, "erin") as c:
        assert ok(c.get("/api/v1/namespaces/default/configmaps/allowed"))["metadata"]["name"] == "allowed"
        r = c.get("/api/v1/namespaces/default/configmaps/other")
        assert r.status_code == 403
        assert r.json()["message"] == ('configmaps "other" is forbidden: User "erin" cannot get resource '
                                       '"configmaps" in API group "" in the namespace "default"')
        # A list has no name, so resourceNames never grant it.
        assert c.get("/api/v1/namespaces/default/configmaps").status_code == 403
        assert c.delete("/api/v1/namespaces/default/configmaps/allowed").status_code == 403


def test_non_resource_urls(secured: LocalAPIServer) -> None:
    with admin(secured) as c:
        ok(c.post(f"{RBAC}/clusterroles", json={
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "metrics-reader"},
            "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]}), 201)
    bind(secured, None, "frank-metrics", "ClusterRole", "metrics-reader", "frank")
    with as_user(secured, "frank") as c:
        r = c.get("/metrics")
        assert r.status_code == 200 and "apiserver_request_total" in r.text
    with as_user(secured, "dave") as c:
        r = c.get("/metrics")
        assert r.status_code == 403
        assert r.json()["message"] == 'forbidden: User "dave" cannot get path "/metrics"'


def test_edit_bound_in_one_namespace_only(secured: LocalAPIServer) -> None:
    ensure_namespace(secured, "team-a")
    bind(secured, "team-a", "carol-edit", "ClusterRole", "edit", "carol")
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "carols"}, "data": {"k": "v"}}
    with as_user(secured, "carol") as c:
        ok(c.post("/api/v1/namespaces/team-a/configmaps", json=cm), 201)
        ok(c.post("/api/v1/namespaces/team-a/secrets", json={"apiVersion": "v1", "kind": "Secret",
                                                              "metadata": {"name": "s"}}), 201)
        ok(c.delete("/api/v1/namespaces/team-a/configmaps/carols"))
        r = c.post("/api/v1/namespaces/default/configmaps", json=cm)
        assert r.status_code == 403
        assert 'User "carol" cannot create resource "configmaps"' in r.json()["message"]
        # edit may not touch RBAC itself (that is admin)
        assert c.get(f"{RBAC}/namespaces/team-a/rolebindings").status_code == 403


def test_subject_access_review(viewer: LocalAPIServer) -> None:
    def review(user: str, verb: str, groups: list[str] | None = None) -> dict:
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {"user": user, "groups": groups or [],
                         "resourceAttributes": {"namespace": "default", "verb": verb, "resource": "pods"}}}
        with admin(viewer) as c:
            return ok(c.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", json=body), 201)["status"]

    assert review("bob", "list")["allowed"] is True
    assert review("bob", "create")["allowed"] is False
    assert review("someone", "delete", ["system:masters"])["allowed"] is True
    # Only those allowed to create SubjectAccessReviews may ask about others.
    with as_user(viewer, "bob") as c:
        r = c.post("/apis/authorization.k8s.io/v1/subjectaccessreviews",
                   json={"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                         "spec": {"user": "bob", "resourceAttributes": {"verb": "get", "resource": "pods"}}})
        assert r.status_code == 403


@pytest.mark.parametrize("version", ["1.27", "1.33"])
def test_kubectl_auth_can_i(viewer: LocalAPIServer, version: str, tmp_path: Path) -> None:
    """1.27 sends the SelfSubjectAccessReview as JSON, 1.33 as protobuf."""
    path = kubectl_path(version)
    kubeconfig = write_user_kubeconfig(viewer, tmp_path / "bob.kubeconfig", "bob-token-0123456789")

    def can_i(*args: str) -> tuple[int, str]:
        res = subprocess.run([path, f"--kubeconfig={kubeconfig}", f"--cache-dir={tmp_path / 'cache'}",
                              "auth", "can-i", *args], capture_output=True, text=True, timeout=60)
        return res.returncode, res.stdout.strip()

    assert can_i("list", "pods") == (0, "yes")
    assert can_i("create", "pods") == (1, "no")
    assert can_i("list", "pods", "-n", "kube-system") == (1, "no")
    assert can_i("get", "secrets") == (1, "no")
    assert can_i("get", "deployments.apps") == (0, "yes")


def test_rbac_objects_are_validated(secured: LocalAPIServer) -> None:
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "b"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Foo", "name": "view"},
               "subjects": [{"kind": "Robot", "name": "r"}]}
    with admin(secured) as c:
        r = c.post(f"{RBAC}/namespaces/default/rolebindings", json=binding)
        assert r.status_code == 422
        fields = {cause["field"] for cause in r.json()["details"]["causes"]}
        assert fields == {"roleRef.kind", "subjects[0].kind"}
        binding["roleRef"]["kind"], binding["subjects"] = "ClusterRole", [{"kind": "User", "name": "x"}]
        created = ok(c.post(f"{RBAC}/namespaces/default/rolebindings", json=binding), 201)
        created["roleRef"]["name"] = "edit"
        r = c.put(f"{RBAC}/namespaces/default/rolebindings/b", json=created)
        assert r.status_code == 422 and "cannot change roleRef" in r.json()["message"]
        role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r"},
                "rules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]}
        r = c.post(f"{RBAC}/namespaces/default/roles", json=role)
        assert r.status_code == 422 and "non-resource URLs" in r.json()["message"]
