"""The kubelet's side of ServiceAccount tokens, without a runtime: the projected volume the admission adds
is written (token from a TokenRequest bound to the pod, ca.crt, namespace) the AtomicWriter way, the
token is refreshed after 80 % of its lifetime (a test clock), and a failed refresh keeps the cached
token only while it is valid."""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from minikube_py.client.rest import APIClient
from minikube_py.kubelet.sa_tokens import TokenError, TokenManager
from minikube_py.kubelet.volumes import DATA_LINK, PodVolumes, VolumeError, write_atomic
from tests.apiserver.conftest import LocalAPIServer, running_apiserver

from .conftest import admin, as_token, ok

BASE = "/api/v1/namespaces/default"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAPIServer]:
    with running_apiserver(tmp_path_factory.mktemp("sa-mount") / "data", "--disable-admission-plugins=") as s:
        with admin(s) as c:
            ok(c.post(f"{BASE}/serviceaccounts", json={"apiVersion": "v1", "kind": "ServiceAccount",
                                                       "metadata": {"name": "default"}}), 201)
            # What the root CA publisher would have made (tests/controllers/test_rootca.py).
            ok(c.post(f"{BASE}/configmaps", json={"apiVersion": "v1", "kind": "ConfigMap",
                                                  "metadata": {"name": "kube-root-ca.crt"},
                                                  "data": {"ca.crt": s.ca_file.read_text()}}), 201)
        yield s


@pytest.fixture()
async def client(server: LocalAPIServer) -> AsyncIterator[APIClient]:
    c = APIClient.from_kubeconfig(server.kubeconfig)
    try:
        yield c
    finally:
        await c.close()


class Clock:
    """Real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def _claims(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _whoami(server: LocalAPIServer, token: str) -> httpx.Response:
    with as_token(server, token) as u:
        return u.post("/apis/authentication.k8s.io/v1/selfsubjectreviews",
                      json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})


def _make_pod(server: LocalAPIServer, name: str) -> dict[str, Any]:
    with admin(server) as c:
        return ok(c.post(f"{BASE}/pods", json={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                                               "spec": {"containers": [{"name": "c", "image": "demo/busybox"}]}}),
                  201)


def _volume_dir(root: Path, pod: dict[str, Any]) -> Path:
    [vol] = [v for v in pod["spec"]["volumes"] if v["name"].startswith("kube-api-access-")]
    return root / "pods" / pod["metadata"]["uid"] / "volumes" / "kubernetes.io~projected" / vol["name"]


async def test_token_ca_and_namespace_are_written_and_refreshed(server: LocalAPIServer, client: APIClient,
                                                                tmp_path: Path) -> None:
    pod = _make_pod(server, "mounted")
    clock = Clock()
    tokens = TokenManager(client, clock=clock)
    vols = PodVolumes(tmp_path, pod)

    async def get(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return await client.get_or_none(kind, name, namespace)

    await vols.setup(get, tokens=tokens)
    target = _volume_dir(tmp_path, pod)
    assert sorted(p.name for p in target.iterdir() if not p.name.startswith("..")) == ["ca.crt", "namespace",
                                                                                      "token"]
    for name in ("ca.crt", "namespace", "token"):
        assert os.readlink(target / name) == f"{DATA_LINK}/{name}"
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o644
    assert (target / "namespace").read_text() == "default"
    assert (target / "ca.crt").read_text() == server.ca_file.read_text()
    token = (target / "token").read_text()
    claims = _claims(token)
    assert claims["sub"] == "system:serviceaccount:default:default"
    assert claims["kubernetes.io"]["pod"] == {"name": "mounted", "uid": pod["metadata"]["uid"]}
    assert claims["exp"] - claims["iat"] == 3607
    assert ok(_whoami(server, token), 201)["status"]["userInfo"]["username"] == claims["sub"]
    mounts = vols.mounts(pod["spec"]["containers"][0])
    assert mounts == [{"containerPath": "/var/run/secrets/kubernetes.io/serviceaccount", "hostPath": str(target),
                       "readonly": True}]

    # A sync soon after: the cached token, nothing rewritten.
    data = os.readlink(target / DATA_LINK)
    await vols.setup(get, tokens=tokens)
    assert tokens.requests == 1 and os.readlink(target / DATA_LINK) == data

    # Past 80 % of its lifetime: a new token, swapped in as a new set; the old set is gone.
    clock.offset = 0.8 * 3607 + 11  # beyond the largest jitter too
    await vols.setup(get, tokens=tokens)
    assert tokens.requests == 2
    fresh = (target / "token").read_text()
    assert fresh != token and _claims(fresh)["jti"] != claims["jti"]
    assert os.readlink(target / DATA_LINK) != data and not (target / data).exists()
    assert sorted(p.name for p in target.iterdir()) == sorted(
        [DATA_LINK, os.readlink(target / DATA_LINK), "ca.crt", "namespace", "token"])

    # The pod deleted: its bound tokens stop working at once.
    with admin(server) as c:
        ok(c.delete(f"{BASE}/pods/mounted", params={"gracePeriodSeconds": "0"}))
    assert _whoami(server, fresh).status_code == 401
    vols.teardown()


async def test_failed_refresh_keeps_a_valid_token_only(server: LocalAPIServer, client: APIClient) -> None:
    pod = _make_pod(server, "refresh-fails")
    clock = Clock()
    tokens = TokenManager(client, clock=clock)
    first = await tokens.token(pod, [], 3607)
    with admin(server) as c:
        ok(c.delete(f"{BASE}/pods/refresh-fails", params={"gracePeriodSeconds": "0"}))
    clock.offset = 0.9 * 3607  # due for refresh; the TokenRequest now fails (no such pod)
    assert await tokens.token(pod, [], 3607) == first
    clock.offset = 3607 + 1  # expired: nothing to serve
    with pytest.raises(TokenError, match="failed to fetch token"):
        await tokens.token(pod, [], 3607)
    tokens.forget_pod(pod["metadata"]["uid"])


async def test_token_request_refused_is_a_clear_volume_error(server: LocalAPIServer, client: APIClient) -> None:
    pod = _make_pod(server, "refused")
    gone = {**pod, "metadata": {**pod["metadata"], "uid": "not-its-uid"}}
    with pytest.raises(TokenError, match='failed to fetch token for service account "default"'):
        await TokenManager(client).token(gone, ["api"], 600)


def test_atomic_writer_layout(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    target.mkdir()
    (target / "stale").write_text("from an older layout")
    assert write_atomic(target, {"a": (b"1", 0o644), "sub/b": (b"2", 0o600)})
    assert sorted(p.name for p in target.iterdir() if not p.name.startswith("..")) == ["a", "sub"]
    assert (target / "sub" / "b").read_text() == "2" and os.readlink(target / "sub") == f"{DATA_LINK}/sub"
    assert stat.S_IMODE((target / "sub" / "b").stat().st_mode) == 0o600
    assert not write_atomic(target, {"a": (b"1", 0o644), "sub/b": (b"2", 0o600)})  # unchanged: no new set
    assert write_atomic(target, {"a": (b"3", 0o644)})
    assert sorted(p.name for p in target.iterdir()) == sorted([DATA_LINK, os.readlink(target / DATA_LINK), "a"])
    assert (target / "a").read_text() == "3"
    with pytest.raises(VolumeError, match=r"must not start with '\.\.'"):
        write_atomic(target, {"..data": (b"x", 0o644)})
    with pytest.raises(VolumeError):
        write_atomic(target, {"../escape": (b"x", 0o644)})
