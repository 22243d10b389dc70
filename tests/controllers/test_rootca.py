"""The root CA publisher (root-ca-cert-publisher) against a real API server: kube-root-ca.crt in every
active namespace, made again when deleted, put back when edited; and where its CA comes from."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from minikube_py.client.rest import APIClient
from minikube_py.controllers.manager import parse_controllers
from minikube_py.controllers.rootca import CONFIGMAP_NAME, DESCRIPTION_ANNOTATION
from tests.apiserver.conftest import REPO, LocalAPIServer
from tests.controllers.cluster_fixtures import *  # noqa: F403
from tests.controllers.cluster_fixtures import ManagerFactory, eventually, make_namespace

CONTROLLER = "root-ca-certificate-publisher-controller"


async def _published(client: APIClient, ns: str, ca: str) -> dict[str, Any]:
    cm = await client.get_or_none("configmaps", CONFIGMAP_NAME, ns)
    assert cm is not None, f"no {CONFIGMAP_NAME} in {ns}"
    assert cm.get("data") == {"ca.crt": ca} and not cm.get("binaryData"), cm
    assert cm["metadata"]["annotations"][DESCRIPTION_ANNOTATION]
    return cm


def test_names() -> None:
    assert parse_controllers("root-ca-cert-publisher") == [CONTROLLER]
    assert CONTROLLER in parse_controllers("*")


async def test_publishes_and_repairs(cluster_api: LocalAPIServer, cluster_client: APIClient,
                                     make_managers: ManagerFactory) -> None:
    ca = cluster_api.ca_file.read_text()
    await make_managers(CONTROLLER, root_ca_pem=ca.encode())
    for ns in ("default", "kube-system"):
        await eventually(lambda ns=ns: _published(cluster_client, ns, ca))
    ns = await make_namespace(cluster_client, "rootca")
    first = await eventually(lambda: _published(cluster_client, ns, ca))

    await cluster_client.delete("configmaps", CONFIGMAP_NAME, ns)
    again = await eventually(lambda: _published(cluster_client, ns, ca))
    assert again["metadata"]["uid"] != first["metadata"]["uid"]

    edited = {**again, "data": {"ca.crt": "not a CA", "extra": "x"}, "binaryData": {"b": "AA=="},
              "metadata": {**again["metadata"], "annotations": {"mine": "kept"}}}
    await cluster_client.update("configmaps", edited)
    repaired = await eventually(lambda: _published(cluster_client, ns, ca))
    assert repaired["metadata"]["uid"] == again["metadata"]["uid"]
    assert repaired["metadata"]["annotations"]["mine"] == "kept"

    # A namespace being deleted gets nothing new: its ConfigMap deleted stays deleted. (No namespace
    # controller runs here, so the namespace stays Terminating.) A namespace made afterwards getting
    # its ConfigMap shows the controller has handled the deletion by then.
    await cluster_client.delete("namespaces", ns)
    await cluster_client.delete("configmaps", CONFIGMAP_NAME, ns)
    later = await make_namespace(cluster_client, "rootca-later")
    await eventually(lambda: _published(cluster_client, later, ca))
    assert await cluster_client.get_or_none("configmaps", CONFIGMAP_NAME, ns) is None


async def test_without_a_ca_it_publishes_nothing(cluster_client: APIClient, make_managers: ManagerFactory,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    mgr = await make_managers(CONTROLLER)
    ns = await make_namespace(cluster_client, "no-ca")
    await eventually(lambda: "no root CA" in caplog.text)
    assert not mgr._tasks[CONTROLLER].done()  # idle, not ended: the manager keeps running
    assert await cluster_client.get_or_none("configmaps", CONFIGMAP_NAME, ns) is None


def _args(root_ca_file: Path | None) -> argparse.Namespace:
    return argparse.Namespace(root_ca_file=root_ca_file)


def test_root_ca_comes_from_the_flag_or_the_kubeconfig(cluster_api: LocalAPIServer, tmp_path: Path) -> None:
    from minikube_py.cli.controller_manager_cmd import _root_ca
    from minikube_py.cli.main import UserError

    ca = cluster_api.ca_file.read_bytes()
    assert _root_ca(_args(None), cluster_api.kubeconfig) == ca
    other = tmp_path / "other-ca.crt"
    other.write_bytes(ca)
    assert _root_ca(_args(other), cluster_api.kubeconfig) == ca
    bad = tmp_path / "bad.crt"
    bad.write_text("hello")
    with pytest.raises(UserError, match="not a PEM certificate"):
        _root_ca(_args(bad), cluster_api.kubeconfig)
    res = subprocess.run([sys.executable, "-m", "minikube_py", "controller-manager", "--kubeconfig",
                          str(cluster_api.kubeconfig), "--root-ca-file", str(tmp_path / "missing.crt")],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode != 0 and "--root-ca-file" in res.stderr and "Traceback" not in res.stderr
