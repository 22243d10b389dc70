"""Per-component identities: the controller-manager's controllers act as their own ServiceAccounts
(``--use-service-account-credentials``, tokens from TokenRequest, refreshed before expiry), and the
local cluster (``up --local``) gives every component a certificate of its own, none but the admin's in
system:masters, with Secrets encrypted at rest."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from minikube_py.client import APIClient, ApiStatusError
from minikube_py.client.kubeconfig import load_kubeconfig, write_kubeconfig
from minikube_py.client.serviceaccount_token import ServiceAccountClient, ServiceAccountTokenSource
from minikube_py.controllers.manager import CONTROLLERS
from minikube_py.pki import ensure_pki
from tests import helpers
from tests.apiserver.conftest import LocalAPIServer
from tests.integration.conftest import UpCluster, start_up, stop_up

from .test_encryption import raw_value

REPO = Path(__file__).resolve().parents[2]
CM_USER = "system:kube-controller-manager"
RS_SA = "system:serviceaccount:kube-system:replicaset-controller"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0, detail: Callable[[], str] = str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{detail()}")
        time.sleep(0.2)


async def whoami(client: APIClient) -> dict[str, Any]:
    answer = await client.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                                  body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    return answer["status"]["userInfo"]


async def can(client: APIClient, user: str, verb: str, resource: str, group: str = "", namespace: str = "default",
              subresource: str = "") -> bool:
    answer = await client.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body={
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "resourceAttributes": {"verb": verb, "resource": resource, "group": group,
                                                      "namespace": namespace, "subresource": subresource}}})
    return bool(answer["status"].get("allowed"))


def replicaset(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": "demo/web"}]}}}}


# ---- the whole local cluster -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpCluster]:
    up = start_up(tmp_path_factory.mktemp("creds") / "data", fake_nodes=2)
    try:
        yield up
    finally:
        stop_up(up)


async def test_each_component_has_its_own_identity_and_only_the_admin_is_a_master(cluster: UpCluster) -> None:
    expected = {"admin": None, "controller-manager": CM_USER, "scheduler": "system:kube-scheduler",
                "fake-nodes": "minikube-py:fake-nodes"}
    for stem, user in expected.items():
        async with APIClient.from_kubeconfig(cluster.data_dir / f"{stem}.kubeconfig") as client:
            info = await whoami(client)
        masters = "system:masters" in (info.get("groups") or [])
        assert masters is (stem == "admin"), (stem, info)
        if user is not None:
            assert info["username"] == user
            assert load_kubeconfig(cluster.data_dir / f"{stem}.kubeconfig").client_cert_pem, stem
    argv = (cluster.data_dir / "logs" / "controller-manager.log").read_text().splitlines()[0]
    assert "--use-service-account-credentials" in argv


async def test_controllers_act_as_their_service_accounts(cluster: UpCluster) -> None:
    # Every controller whose module is there (one may be added before its module lands).
    accounts = sorted({spec.account for spec in CONTROLLERS if importlib.util.find_spec(spec.module)})
    async with cluster.client() as api:
        async def present() -> set[str]:
            listed = await api.list("serviceaccounts", "kube-system")
            return {sa["metadata"]["name"] for sa in listed["items"]}

        deadline = time.monotonic() + 60
        while not set(accounts) <= await present():
            assert time.monotonic() < deadline, f"missing accounts: {set(accounts) - await present()}"
            await asyncio.sleep(0.2)
        # The controller-manager's own identity may read everything but write no pods; its controllers can.
        assert not await can(api, CM_USER, "create", "pods")
        assert await can(api, RS_SA, "create", "pods")
        assert await can(api, "system:serviceaccount:kube-system:deployment-controller", "update", "deployments",
                         "apps", subresource="status")
        for account in accounts:
            role = await api.get("clusterroles.rbac.authorization.k8s.io", f"system:controller:{account}")
            assert role["rules"], account

    cluster.kubectl("create", "deployment", "web", "--image=demo/web", "--replicas=3")
    cluster.kubectl("rollout", "status", "deployment/web", "--timeout=60s")

    # Take "create pods" away from the replicaset-controller's role alone: scaling up now fails, and the
    # controller's own event names the identity that was refused.
    async with cluster.client() as api:
        res = "clusterroles.rbac.authorization.k8s.io"
        role = await api.get(res, "system:controller:replicaset-controller")
        original = [dict(r) for r in role["rules"]]
        role["rules"] = [{**r, "verbs": [v for v in r["verbs"] if v != "create"]}
                         if r.get("resources") == ["pods"] else r for r in role["rules"]]
        await api.update(res, role)
        try:
            cluster.kubectl("scale", "deployment/web", "--replicas=4")

            async def refused() -> str:
                events = await api.list("events", "default")
                return "\n".join(e["message"] for e in events["items"] if e.get("reason") == "FailedCreate")

            deadline = time.monotonic() + 60
            while f'User "{RS_SA}" cannot create resource "pods"' not in (text := await refused()):
                assert time.monotonic() < deadline, f"no FailedCreate event naming {RS_SA}: {text!r}"
                await asyncio.sleep(0.2)
        finally:
            role = await api.get(res, "system:controller:replicaset-controller")
            role["rules"] = original
            await api.update(res, role)
    cluster.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    assert "4" in cluster.kubectl("get", "deployment/web", "-o", "jsonpath={.status.availableReplicas}").stdout


def test_secrets_of_the_local_cluster_are_encrypted_at_rest(tmp_path: Path) -> None:
    up = start_up(tmp_path / "data", fake_nodes=0)
    try:
        secret = base64.b64encode(b"local-cluster-plaintext").decode()
        up.kubectl("create", "-f", "-", input=(
            '{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"}, "data": {"k": "' + secret + '"}}'))
        got = up.kubectl("get", "secret", "s1", "-o", "jsonpath={.data.k}").stdout
        assert got == secret
    finally:
        assert stop_up(up) == 0
    config = tmp_path / "data" / "encryption-config.yaml"
    assert config.stat().st_mode & 0o777 == 0o600
    raw = raw_value(tmp_path / "data", "/registry/secrets/default/s1")
    assert raw.startswith(b"k8s:enc:aescbc:v1:key1:"), raw[:40]
    assert b"local-cluster-plaintext" not in raw and secret.encode() not in raw


# ---- the controller-manager alone, against an API server ---------------------------------------------

def controller_manager_kubeconfig(server: LocalAPIServer, path: Path, stem: str, user: str) -> Path:
    paths = ensure_pki(server.data_dir / "pki", clients={stem: (user, ())})
    write_kubeconfig(path, server=server.url, ca_pem=server.ca_file.read_bytes(), user=user,
                     client_cert_pem=paths[f"{stem}.crt"].read_bytes(),
                     client_key_pem=paths[f"{stem}.key"].read_bytes())
    return path


def start_controller_manager(kubeconfig: Path, log: Path, *flags: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "minikube_py", "controller-manager", "--kubeconfig", str(kubeconfig),
             "--secure-port", "0", "--leader-elect=false",
             # The ServiceAccount controller makes the namespace's "default" account pods need.
             "--controllers", "replicaset-controller,serviceaccount-controller", *flags],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO)


async def test_without_the_flag_a_non_admin_manager_says_why_it_gets_403(secured: LocalAPIServer,
                                                                         tmp_path: Path) -> None:
    kubeconfig = controller_manager_kubeconfig(secured, tmp_path / "cm.kubeconfig", "cm-test", CM_USER)
    ns = f"cm-{uuid.uuid4().hex[:6]}"
    async with secured.api_client() as api:
        await api.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        await api.create("replicasets.apps", replicaset("rs", 2), ns)

        log = tmp_path / "without.log"
        proc = start_controller_manager(kubeconfig, log)
        try:
            wait_for("the 403 explanation", lambda: "--use-service-account-credentials" in log.read_text(),
                     detail=log.read_text)
        finally:
            helpers.stop_process(proc)
        text = log.read_text()
        assert f'User "{CM_USER}" cannot create pods' in text and "Traceback" not in text, text
        assert (await api.list("pods", ns))["items"] == []

        log = tmp_path / "with.log"
        proc = start_controller_manager(kubeconfig, log, "--use-service-account-credentials")
        try:
            deadline = time.monotonic() + 60
            while len((await api.list("pods", ns))["items"]) < 2:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.2)
        finally:
            helpers.stop_process(proc)
        assert await api.get_or_none("serviceaccounts", "replicaset-controller", "kube-system") is not None


def test_a_manager_that_may_not_request_tokens_fails_in_one_line(secured: LocalAPIServer, tmp_path: Path) -> None:
    kubeconfig = controller_manager_kubeconfig(secured, tmp_path / "nobody.kubeconfig", "cm-nobody", "nobody")
    res = subprocess.run(
        [sys.executable, "-m", "minikube_py", "controller-manager", "--kubeconfig", str(kubeconfig), "--secure-port",
         "0", "--leader-elect=false", "--use-service-account-credentials", "--controllers", "replicaset-controller"],
        capture_output=True, text=True, timeout=60, cwd=REPO, stdin=subprocess.DEVNULL)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr
    assert "403" in res.stderr and 'User "nobody"' in res.stderr, res.stderr


# ---- the token source ----------------------------------------------------------------------------------

async def test_tokens_are_refreshed_before_expiry_and_after_a_401(secured: LocalAPIServer) -> None:
    now = [time.time()]
    name = f"tok-{uuid.uuid4().hex[:6]}"
    async with secured.api_client() as root:
        tokens = ServiceAccountTokenSource(root, "kube-system", name, expiration_seconds=600, clock=lambda: now[0])
        async with ServiceAccountClient(secured.url, tokens, ssl_context=secured.ssl_context()) as client:
            assert (await whoami(client))["username"] == f"system:serviceaccount:kube-system:{name}"
            first = await tokens.token()
            assert tokens.fetches == 1
            now[0] += 600 * 0.75  # within the first 80% of its life: kept
            assert await tokens.token() == first and tokens.fetches == 1
            now[0] += 600 * 0.1  # past 80%: a new one before the old one expires
            await whoami(client)
            assert tokens.fetches == 2

            # A new account of the same name invalidates the old token (bound to the old uid): the 401
            # makes the client fetch a new token and try again, transparently.
            await root.delete("serviceaccounts", name, "kube-system")
            await root.create("serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount",
                                                  "metadata": {"name": name}}, "kube-system")
            now[0] += 1
            assert (await whoami(client))["username"].endswith(f":{name}")
            assert tokens.fetches == 3

            # The source makes the account when it is missing, as kube-controller-manager does.
            await root.delete("serviceaccounts", name, "kube-system")
            tokens.reset(now[0])
            assert (await whoami(client))["username"].endswith(f":{name}")
            assert await root.get_or_none("serviceaccounts", name, "kube-system") is not None

            with pytest.raises(ApiStatusError) as err:
                await client.list("secrets", "kube-system")
            assert err.value.code == 403


def test_every_controller_account_has_a_bootstrap_role_and_binding() -> None:
    from minikube_py.apiserver.rbac import controller_cluster_role_bindings, controller_roles

    roles = controller_roles()
    bound = {b["subjects"][0]["name"]: b["roleRef"]["name"] for b in controller_cluster_role_bindings()}
    for spec in CONTROLLERS:
        assert spec.account in roles, spec.name
        assert bound[spec.account] == f"system:controller:{spec.account}"
