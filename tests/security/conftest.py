"""A real API server (``apiserver --local``) with a static token file of test users, and helpers
to act as those users with httpx, real kubectl, or a client certificate."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from minikube_py.pki import ensure_pki
from tests.apiserver.conftest import KUBECTLS, LocalAPIServer, running_apiserver

# token -> user; none of them has a binding until a test makes one.
USERS = {"bob": "bob-token-0123456789", "carol": "carol-token-0123456789", "dave": "dave-token-0123456789",
         "erin": "erin-token-0123456789", "frank": "frank-token-0123456789",
         # test_impersonation's own: the server is shared by the session, so bindings must not leak.
         "ivan": "ivan-token-0123456789", "judy": "judy-token-0123456789"}


def write_token_file(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"{token},{user},uid-{user}" for user, token in USERS.items()]
    (data_dir / "tokens.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAPIServer]:
    data_dir = tmp_path_factory.mktemp("security") / "data"
    write_token_file(data_dir)
    with running_apiserver(data_dir) as server:
        yield server


def as_token(server: LocalAPIServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, verify=server.ssl_context(), timeout=30.0,
                        headers={"Authorization": f"Bearer {token}"})


def as_user(server: LocalAPIServer, user: str) -> httpx.Client:
    return as_token(server, USERS[user])


def admin(server: LocalAPIServer) -> httpx.Client:
    return server.http_client()


def client_cert(server: LocalAPIServer, stem: str, cn: str, groups: tuple[str, ...]) -> tuple[str, str]:
    """A client pair signed by the server's CA (made once, kept in its data dir)."""
    paths = ensure_pki(server.data_dir / "pki", clients={stem: (cn, groups)})
    return str(paths[f"{stem}.crt"]), str(paths[f"{stem}.key"])


def as_cert(server: LocalAPIServer, cert: tuple[str, str]) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    ctx.load_cert_chain(*cert)
    return httpx.Client(base_url=server.url, verify=ctx, timeout=30.0)


def write_user_kubeconfig(server: LocalAPIServer, path: Path, token: str) -> Path:
    from minikube_py.client.kubeconfig import write_kubeconfig

    write_kubeconfig(path, server=server.url, ca_pem=server.ca_file.read_bytes(), user="u", token=token)
    return path


def ok(resp: httpx.Response, *codes: int) -> Any:
    assert resp.status_code in (codes or (200, 201)), f"{resp.status_code}: {resp.text}"
    return resp.json()


def kubectl_path(version: str) -> str:
    path = KUBECTLS.get(version)
    if path is None:
        pytest.skip(f"kubectl {version} is not installed on this machine")
    return path
