"""The ServiceAccount admission plugin (on, as in Kubernetes) on a real API server, and what a kubelet
may do with the pods it mutates: tokens bound to its own pods only (Node authorizer and
NodeRestriction), the root CA ConfigMap they mount."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from minikube_py.apiserver.admission import TOKEN_MOUNT_PATH, token_volume
from tests.apiserver.conftest import REPO, LocalAPIServer, running_apiserver

from .conftest import admin, as_cert, client_cert, kubectl_path, ok

BASE = "/api/v1/namespaces/default"
TOKEN_REQUEST = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAPIServer]:
    # The harness turns the plugin off by default; an empty list (the last value wins) turns it on.
    with running_apiserver(tmp_path_factory.mktemp("sa-admission") / "data", "--disable-admission-plugins=") as s:
        with admin(s) as c:
            ok(c.post(f"{BASE}/serviceaccounts", json=_sa("default")), 201)
            ok(c.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": "no-accounts"}}), 201)
        yield s


@pytest.fixture()
def api(server: LocalAPIServer) -> Iterator[httpx.Client]:
    with admin(server) as c:
        yield c


def _sa(name: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}, **extra}


def _pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "demo/busybox"}], **spec}}


def _token_volumes(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in pod["spec"].get("volumes") or [] if v["name"].startswith("kube-api-access-")]


def _token_mounts(container: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in container.get("volumeMounts") or [] if m["mountPath"] == TOKEN_MOUNT_PATH]


def test_defaults_and_mounts(api: httpx.Client) -> None:
    pod = ok(api.post(f"{BASE}/pods", json=_pod(
        "sa-defaults", initContainers=[{"name": "init", "image": "demo/busybox"}],
        containers=[{"name": "a", "image": "demo/busybox"}, {"name": "b", "image": "demo/busybox"}])), 201)
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "default" and spec["serviceAccount"] == "default"
    [volume] = _token_volumes(pod)
    name = volume["name"]
    assert len(name) == len("kube-api-access-") + 5
    assert volume == token_volume(name)
    sources = volume["projected"]["sources"]
    assert sources[0] == {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}
    assert sources[1]["configMap"] == {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    assert sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"] == "metadata.namespace"
    for c in (*spec["initContainers"], *spec["containers"]):
        assert _token_mounts(c) == [{"name": name, "readOnly": True, "mountPath": TOKEN_MOUNT_PATH}]
    # Stored as admitted: a read gives the same.
    assert ok(api.get(f"{BASE}/pods/sa-defaults"))["spec"]["volumes"] == spec["volumes"]


def test_deprecated_service_account_field_names_the_account(api: httpx.Client) -> None:
    ok(api.post(f"{BASE}/serviceaccounts", json=_sa("legacy")), 201)
    pod = ok(api.post(f"{BASE}/pods", json=_pod("sa-legacy", serviceAccount="legacy")), 201)
    assert pod["spec"]["serviceAccountName"] == "legacy" and pod["spec"]["serviceAccount"] == "legacy"


def test_opt_out_on_pod_and_on_account(api: httpx.Client) -> None:
    ok(api.post(f"{BASE}/serviceaccounts", json=_sa("quiet", automountServiceAccountToken=False)), 201)
    off = ok(api.post(f"{BASE}/pods", json=_pod("sa-pod-off", automountServiceAccountToken=False)), 201)
    assert not _token_volumes(off) and not _token_mounts(off["spec"]["containers"][0])
    quiet = ok(api.post(f"{BASE}/pods", json=_pod("sa-account-off", serviceAccountName="quiet")), 201)
    assert quiet["spec"]["serviceAccountName"] == "quiet" and not _token_volumes(quiet)
    # The pod's own choice wins over its account's.
    on = ok(api.post(f"{BASE}/pods", json=_pod("sa-pod-wins", serviceAccountName="quiet",
                                                 automountServiceAccountToken=True)), 201)
    assert len(_token_volumes(on)) == 1


def test_existing_mount_at_the_path_is_left_alone(api: httpx.Client) -> None:
    own = {"name": "mine", "mountPath": TOKEN_MOUNT_PATH}
    pod = ok(api.post(f"{BASE}/pods", json=_pod(
        "sa-own-mount", volumes=[{"name": "mine", "emptyDir": {}}],
        initContainers=[{"name": "init", "image": "demo/busybox", "volumeMounts": [own]}],
        containers=[{"name": "a", "image": "demo/busybox", "volumeMounts": [own]},
                    {"name": "b", "image": "demo/busybox"}])), 201)
    spec = pod["spec"]
    assert spec["initContainers"][0]["volumeMounts"] == [own]
    assert spec["containers"][0]["volumeMounts"] == [own]
    [volume] = _token_volumes(pod)
    assert _token_mounts(spec["containers"][1])[0]["name"] == volume["name"]
    # Every container mounting its own: no token volume at all.
    alone = ok(api.post(f"{BASE}/pods", json=_pod(
        "sa-all-own", volumes=[{"name": "mine", "emptyDir": {}}],
        containers=[{"name": "a", "image": "demo/busybox", "volumeMounts": [own]}])), 201)
    assert not _token_volumes(alone)


def test_image_pull_secrets_come_from_the_account(api: httpx.Client) -> None:
    ok(api.post(f"{BASE}/serviceaccounts", json=_sa("puller", imagePullSecrets=[{"name": "regcred"}])), 201)
    pod = ok(api.post(f"{BASE}/pods", json=_pod("sa-pull", serviceAccountName="puller")), 201)
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    own = ok(api.post(f"{BASE}/pods", json=_pod("sa-pull-own", serviceAccountName="puller",
                                                  imagePullSecrets=[{"name": "mine"}])), 201)
    assert own["spec"]["imagePullSecrets"] == [{"name": "mine"}]


def test_missing_account_is_forbidden(api: httpx.Client) -> None:
    r = api.post(f"{BASE}/pods", json=_pod("sa-missing", serviceAccountName="nobody"))
    assert r.status_code == 403, r.text
    assert r.json()["reason"] == "Forbidden"
    assert r.json()["message"] == ('pods "sa-missing" is forbidden: error looking up service account '
                                   'default/nobody: serviceaccount "nobody" not found')
    # `default` is looked up again for a while (the controller makes it), then refused the same way.
    gen = {**_pod(""), "metadata": {"generateName": "web-"}}
    r = api.post("/api/v1/namespaces/no-accounts/pods", json=gen)
    assert r.status_code == 403, r.text
    assert r.json()["message"] == ('pods "web-" is forbidden: error looking up service account '
                                   'no-accounts/default: serviceaccount "default" not found')
    r = api.post("/api/v1/namespaces/not-there/pods", json=_pod("x"))
    assert r.status_code == 404 and r.json()["details"]["kind"] == "namespaces", r.text
    assert api.get(f"{BASE}/pods/sa-missing").status_code == 404  # nothing stored


def test_dry_run_and_server_side_apply_are_admitted(api: httpx.Client) -> None:
    dry = ok(api.post(f"{BASE}/pods", params={"dryRun": "All"}, json=_pod("sa-dry")), 201)
    assert len(_token_volumes(dry)) == 1
    assert api.get(f"{BASE}/pods/sa-dry").status_code == 404
    applied = ok(api.patch(f"{BASE}/pods/sa-applied", params={"fieldManager": "test"}, json=_pod("sa-applied"),
                           headers={"Content-Type": "application/apply-patch+yaml"}), 201)
    assert len(_token_volumes(applied)) == 1 and applied["spec"]["serviceAccount"] == "default"
    again = ok(api.patch(f"{BASE}/pods/sa-applied", params={"fieldManager": "test"}, json=_pod("sa-applied"),
                         headers={"Content-Type": "application/apply-patch+yaml"}), 200)
    assert again["spec"]["volumes"] == applied["spec"]["volumes"]  # an update is not admitted again


def test_service_account_name_is_immutable(api: httpx.Client) -> None:
    ok(api.post(f"{BASE}/serviceaccounts", json=_sa("other")), 201)
    pod = ok(api.post(f"{BASE}/pods", json=_pod("sa-immutable")), 201)
    r = api.patch(f"{BASE}/pods/sa-immutable", json={"spec": {"serviceAccountName": "other"}},
                  headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 422 and "pod updates may not change fields" in r.json()["message"], r.text
    # A client that drops the deprecated mirror (or keeps it) changes nothing.
    body = copy.deepcopy(pod)
    del body["spec"]["serviceAccount"]
    kept = ok(api.put(f"{BASE}/pods/sa-immutable", json=body))
    assert kept["spec"]["serviceAccount"] == "default"
    assert kept["metadata"]["resourceVersion"] == pod["metadata"]["resourceVersion"]
    ok(api.put(f"{BASE}/pods/sa-immutable", json=kept))


def test_kubectl_table_and_describe(server: LocalAPIServer, api: httpx.Client, tmp_path: Path) -> None:
    ok(api.post(f"{BASE}/pods", json=_pod("sa-describe")), 201)
    kubectl = kubectl_path("1.32")
    base = [kubectl, "--kubeconfig", str(server.kubeconfig), "--cache-dir", str(tmp_path / "cache")]
    table = subprocess.run([*base, "get", "pod", "sa-describe"], capture_output=True, text=True, timeout=60)
    assert table.returncode == 0 and "sa-describe" in table.stdout and "Pending" in table.stdout, table.stderr
    described = subprocess.run([*base, "describe", "pod", "sa-describe"], capture_output=True, text=True,
                               timeout=60)
    assert described.returncode == 0, described.stderr
    out = described.stdout
    assert "Service Account:  default" in out
    assert f"{TOKEN_MOUNT_PATH} from kube-api-access-" in out and "(ro)" in out
    assert "TokenExpirationSeconds:  3607" in out and "ConfigMapName:           kube-root-ca.crt" in out


def test_unknown_plugin_is_a_one_line_error(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "minikube_py", "apiserver", "--local", "--data-dir",
                          str(tmp_path / "d"), "--port", "0", "--disable-admission-plugins", "Nope"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode != 0
    assert "unknown plugin 'Nope'" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


# ---- what a kubelet may do for the pods admitted so ------------------------------------------------

@pytest.fixture(scope="module")
def node_pods(server: LocalAPIServer) -> dict[str, dict[str, Any]]:
    pods = {}
    with admin(server) as c:
        for account in ("runner", "other-runner"):
            ok(c.post(f"{BASE}/serviceaccounts", json=_sa(account)), 201)
        ok(c.post(f"{BASE}/configmaps", json={"apiVersion": "v1", "kind": "ConfigMap",
                                              "metadata": {"name": "kube-root-ca.crt"},
                                              "data": {"ca.crt": server.ca_file.read_text()}}), 201)
        for node in ("n1", "n2"):
            ok(c.post("/api/v1/nodes", json={"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}), 201)
        pods["mine"] = ok(c.post(f"{BASE}/pods", json=_pod("on-n1", serviceAccountName="runner", nodeName="n1")), 201)
        pods["other"] = ok(c.post(f"{BASE}/pods", json=_pod("on-n2", serviceAccountName="other-runner",
                                                            nodeName="n2")), 201)
        pods["same-sa-n2"] = ok(c.post(f"{BASE}/pods", json=_pod("runner-on-n2", serviceAccountName="runner",
                                                                 nodeName="n2")), 201)
    return pods


@pytest.fixture()
def kubelet_n1(server: LocalAPIServer) -> Iterator[httpx.Client]:
    with as_cert(server, client_cert(server, "sa-node-n1", "system:node:n1", ("system:nodes",))) as c:
        yield c


def _bound(pod: dict[str, Any]) -> dict[str, Any]:
    m = pod["metadata"]
    return {**TOKEN_REQUEST, "spec": {"expirationSeconds": 3607, "boundObjectRef": {
        "apiVersion": "v1", "kind": "Pod", "name": m["name"], "uid": m["uid"]}}}


def test_kubelet_gets_tokens_for_its_pods_only(node_pods: dict[str, dict[str, Any]],
                                               kubelet_n1: httpx.Client) -> None:
    got = ok(kubelet_n1.post(f"{BASE}/serviceaccounts/runner/token", json=_bound(node_pods["mine"])), 201)
    assert got["status"]["token"] and got["spec"]["boundObjectRef"]["name"] == "on-n1"
    # An account none of its pods uses: the Node authorizer says no.
    r = kubelet_n1.post(f"{BASE}/serviceaccounts/other-runner/token", json=_bound(node_pods["other"]))
    assert r.status_code == 403 and "system:node:n1" in r.json()["message"], r.text
    # The account of one of its pods, but bound to another node's pod, or to nothing: NodeRestriction.
    r = kubelet_n1.post(f"{BASE}/serviceaccounts/runner/token", json=_bound(node_pods["same-sa-n2"]))
    assert r.status_code == 403 and "scheduled on a different node" in r.json()["message"], r.text
    r = kubelet_n1.post(f"{BASE}/serviceaccounts/runner/token", json=TOKEN_REQUEST)
    assert r.status_code == 403 and "not bound to a pod" in r.json()["message"], r.text


def test_kubelet_reads_the_root_ca_of_its_pods(node_pods: dict[str, dict[str, Any]],
                                               kubelet_n1: httpx.Client) -> None:
    cm = ok(kubelet_n1.get(f"{BASE}/configmaps/kube-root-ca.crt"))
    assert "BEGIN CERTIFICATE" in cm["data"]["ca.crt"]
    # Not in a namespace where none of its pods runs.
    r = kubelet_n1.get("/api/v1/namespaces/kube-system/configmaps/kube-root-ca.crt")
    assert r.status_code == 403, r.text
