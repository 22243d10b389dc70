"""No secret material in any log: an API server and a controller-manager at -v, taken through the
authentication and authorization paths (good, unknown and forged tokens, ServiceAccount tokens,
client certificates of our CA and of another, a forbidden user, Secrets written and read), then
every log is searched for the tokens, private keys (PEM bodies) and Secret values involved."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from minikube_py.localcluster import free_port
from minikube_py.pki import ensure_pki
from tests.apiserver.conftest import REPO, running_apiserver

from .conftest import USERS, write_token_file

SECRET_VALUE = "s3cr3t-value-that-must-never-be-logged-0f9a"


def pem_bodies(path: Path) -> list[str]:
    """The base64 lines of a PEM file: any of them in a log would be a leak."""
    return [line for line in path.read_text().splitlines() if line and not line.startswith("-----")]


def exercise(server_url: str, ca: Path, admin_token: str, cert: tuple[str, str], foreign: tuple[str, str]) -> str:
    """Drive the authn/authz paths; returns the ServiceAccount token it obtained."""
    verify = ssl.create_default_context(cafile=str(ca))
    admin = httpx.Client(base_url=server_url, verify=verify, timeout=30.0,
                         headers={"Authorization": f"Bearer {admin_token}"})
    with admin:
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "leak-check"},
                  "stringData": {"password": SECRET_VALUE}}
        assert admin.post("/api/v1/namespaces/default/secrets", json=secret).status_code == 201
        assert admin.get("/api/v1/namespaces/default/secrets/leak-check").status_code == 200
        bad = {**secret, "metadata": {"name": "Bad_Name"}}  # a validation error quoting the object
        assert admin.post("/api/v1/namespaces/default/secrets", json=bad).status_code == 422
        admin.post("/api/v1/namespaces/default/serviceaccounts",
                   json={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "leaky"}})
        r = admin.post("/api/v1/namespaces/default/serviceaccounts/leaky/token",
                       json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})
        assert r.status_code == 201, r.text
        sa_token = r.json()["status"]["token"]
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": sa_token}}
        assert admin.post("/apis/authentication.k8s.io/v1/tokenreviews", json=review).status_code == 201
    for token, code in ((sa_token, 403), (USERS["bob"], 403), ("unknown-token-4242", 401),
                        (sa_token[:-4] + "AAAA", 401)):
        with httpx.Client(base_url=server_url, verify=verify, timeout=30.0,
                          headers={"Authorization": f"Bearer {token}"}) as c:
            assert c.get("/api/v1/namespaces/default/secrets").status_code == code
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(*cert)
    with httpx.Client(base_url=server_url, verify=ctx, timeout=30.0) as c:
        assert c.get("/api/v1/namespaces/default/secrets/leak-check").status_code == 200
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(*foreign)
    with httpx.Client(base_url=server_url, verify=ctx, timeout=30.0) as c, \
            contextlib.suppress(httpx.TransportError, ssl.SSLError):
        c.get("/api/v1/namespaces")
    return sa_token


def test_no_secret_material_in_any_log(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    write_token_file(data_dir)
    with running_apiserver(data_dir, "-v") as server:
        pki_dir = data_dir / "pki"
        cert_paths = ensure_pki(pki_dir, clients={"leak-admin": ("leak-admin", ("system:masters",))})
        foreign = ensure_pki(tmp_path / "foreign", clients={"intruder": ("intruder", ("system:masters",))})
        cm_log = tmp_path / "controller-manager.log"
        with open(cm_log, "w") as log:
            cm = subprocess.Popen(
                [sys.executable, "-m", "minikube_py", "controller-manager", "--kubeconfig", str(server.kubeconfig),
                 "--secure-port", str(free_port()), "--leader-elect=false", "-v"],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            )
        try:
            sa_token = exercise(server.url, server.ca_file, server.token,
                                (str(cert_paths["leak-admin.crt"]), str(cert_paths["leak-admin.key"])),
                                (str(foreign["intruder.crt"]), str(foreign["intruder.key"])))
            # The controller-manager reads Secrets and makes ServiceAccount tokens meanwhile.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and cm_log.stat().st_size == 0 and cm.poll() is None:
                time.sleep(0.2)
            time.sleep(2)
            assert cm.poll() is None, cm_log.read_text()
        finally:
            if cm.poll() is None:
                os.kill(cm.pid, signal.SIGTERM)
            try:
                cm.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(cm.pid, signal.SIGKILL)
                cm.wait()
        admin_token = server.token
    logs = {p: p.read_text(errors="replace") for p in [cm_log, *tmp_path.glob("*.log"), *data_dir.rglob("*.log")]}
    apiserver_log = tmp_path / "data.log"
    assert apiserver_log in logs and "INFO" in logs[apiserver_log], "the API server did not log at -v"

    secrets: dict[str, str] = {"admin token": admin_token, "ServiceAccount token": sa_token,
                               "Secret value": SECRET_VALUE,
                               "Secret value (base64)": base64.b64encode(SECRET_VALUE.encode()).decode()}
    secrets |= {f"token of {user}": token for user, token in USERS.items()}
    # A JWT's signature is the part that makes it a credential; header and claims are not secret.
    secrets["ServiceAccount token signature"] = sa_token.rsplit(".", 1)[1]
    for key in [*pki_dir.glob("*.key"), *(tmp_path / "foreign").glob("*.key")]:
        for i, line in enumerate(pem_bodies(key)):
            secrets[f"{key.name} line {i + 1}"] = line
    enc = data_dir / "encryption-config.yaml"
    if enc.exists():
        for line in enc.read_text().splitlines():
            if "secret:" in line:
                secrets["encryption key"] = line.split("secret:", 1)[1].strip()
    assert len(secrets) > 10
    leaks = [f"{what} in {path.name}" for path, text in logs.items() for what, value in secrets.items()
             if value and value in text]
    assert not leaks, leaks

