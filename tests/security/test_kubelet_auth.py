"""The kubelet API (10250) as ``minikube-py kubelet`` serves it by default: no anonymous requests, x509
client certificates from the cluster CA, bearer tokens checked by a TokenReview and every request
authorized by a SubjectAccessReview, both cached. The API server's kubelet client certificate gets
through (``kubectl logs`` works); a user without RBAC gets the kubelet's 403.

The kubelet API runs in-process in front of a stand-in kubelet (one pod, one log file): no runtime or
root needed. Its authentication and authorization come from the kubelet CLI's own flags and defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from minikube_py.cli.kubelet_cmd import build_auth, register
from minikube_py.client import APIClient
from minikube_py.kubelet.server import serving_ssl_context, start_server
from tests.apiserver.conftest import LocalAPIServer

from .conftest import USERS, admin, ok
from .delegated_harness import (
    KUBELET_CLIENT,
    bind_cluster_role,
    client_context,
    client_pair,
    delegating_apiserver,
    review_calls,
    serving_pair,
)

NODE = "authn-node"
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "logger", "namespace": "default"},
       "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "demo/busybox"}]}}
LOG_LINE = "hello from the container"
FORBIDDEN = "Forbidden (user={user}, verb={verb}, resource=nodes, subresource(s)=[{sub}])"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAPIServer]:
    with delegating_apiserver(tmp_path_factory.mktemp("kubelet-auth") / "data") as server:
        with admin(server) as c:
            r = c.post("/api/v1/namespaces/default/serviceaccounts",
                       json={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})
            assert r.status_code in (201, 409), r.text
            ok(c.post("/api/v1/nodes", json={"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}), 201)
            ok(c.post("/api/v1/namespaces/default/pods", json=POD), 201)
        yield server


class _StubKubelet:
    """What the kubelet API reads of a kubelet: its node name, its pods and their log files."""

    def __init__(self, log_file: Path) -> None:
        self.config = SimpleNamespace(node_name=NODE)
        self.log_file = log_file
        pod = {**POD, "metadata": {**POD["metadata"], "uid": "u1"}}
        worker = SimpleNamespace(pod=pod, tracked={},
                                 container=lambda name, previous: None if previous else
                                 SimpleNamespace(name=name, attempt=0, id="cid"))
        self.workers = {("default", "logger"): worker}
        self.runtime = SimpleNamespace(container_status=self._status)

    @staticmethod
    async def _status(cid: str) -> dict[str, Any]:
        return {"state": "CONTAINER_EXITED"}

    def worker_for(self, namespace: str, name: str) -> Any:
        return self.workers.get((namespace, name))

    def container_log_path(self, pod: dict[str, Any], name: str, attempt: int) -> Path:
        return self.log_file


@dataclass
class KubeletAPI:
    url: str
    port: int
    auth: Any


def kubelet_args(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["kubelet", "--kubeconfig", "unused", "--node-ip", "127.0.0.1", *flags])


@asynccontextmanager
async def kubelet_api(api: LocalAPIServer, tmp: Path, *flags: str, foreign_serving: bool = False
                      ) -> AsyncIterator[KubeletAPI]:
    """The kubelet API on a free loopback port, with a serving certificate from the cluster CA (or a
    stranger's), reaching the API server as system:node:authn-node for its reviews."""
    serving = serving_pair(api, tmp, "kubelet-serving", f"system:node:{NODE}", foreign=foreign_serving)
    node_identity = client_pair(api, tmp, "kubelet-client", f"system:node:{NODE}", ("system:nodes",))
    log_file = tmp / "c.log"
    log_file.write_text(f"2024-05-01T10:00:00.000000000Z stdout F {LOG_LINE}\n")
    client = APIClient(api.url, ssl_context=client_context(api, node_identity))
    runner = None
    try:
        auth = build_auth(kubelet_args("--client-ca-file", str(api.ca_file), *flags), client)
        ctx = serving_ssl_context(NODE, "127.0.0.1", *serving)
        runner, port = await start_server(_StubKubelet(log_file), "127.0.0.1", 0, ctx, auth)  # type: ignore[arg-type]
        await _point_node_at(api, port)
        yield KubeletAPI(f"https://127.0.0.1:{port}", port, auth)
    finally:
        if runner is not None:
            await runner.cleanup()
        await client.close()


async def _point_node_at(api: LocalAPIServer, port: int) -> None:
    """Where the API server finds this kubelet: the Node's InternalIP and kubelet endpoint port."""
    async with api.api_client() as c:
        node = await c.get("nodes", NODE)
        node["status"] = {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                          "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}
        await c.update_status("nodes", node)


async def get(kubelet: KubeletAPI, path: str, *, ctx: ssl.SSLContext, token: str | None = None,
              method: str = "GET") -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http:
        async with http.request(method, kubelet.url + path, ssl=ctx, headers=headers) as r:
            return r.status, await r.text()


def _tmp(tmp_path: Path) -> Path:
    d = tmp_path / "kubelet"
    d.mkdir(exist_ok=True)
    return d


async def test_anonymous_requests_get_401(api: LocalAPIServer, tmp_path: Path) -> None:
    async with kubelet_api(api, _tmp(tmp_path)) as kubelet:
        ctx = client_context(api)
        for path in ("/pods", "/healthz", "/metrics", "/containerLogs/default/logger/c", "/exec/default/logger/c"):
            assert await get(kubelet, path, ctx=ctx) == (401, "Unauthorized"), path


async def test_the_apiserver_kubelet_client_certificate_is_allowed(api: LocalAPIServer, tmp_path: Path) -> None:
    pki = api.data_dir / "pki"
    async with kubelet_api(api, _tmp(tmp_path)) as kubelet:
        ctx = client_context(api, (pki / f"{KUBELET_CLIENT}.crt", pki / f"{KUBELET_CLIENT}.key"))
        status, body = await get(kubelet, "/pods", ctx=ctx)
        assert status == 200 and '"kind":"PodList"' in body
        status, body = await get(kubelet, "/containerLogs/default/logger/c", ctx=ctx)
        assert (status, body) == (200, LOG_LINE + "\n")


async def test_certificates_of_another_ca_are_refused(api: LocalAPIServer, tmp_path: Path) -> None:
    foreign = client_pair(api, tmp_path, "forged", "kube-apiserver-kubelet-client", ("system:masters",),
                          foreign=True)
    async with kubelet_api(api, _tmp(tmp_path)) as kubelet:
        with pytest.raises((aiohttp.ClientError, ssl.SSLError, OSError)):
            # The TLS handshake verifies the certificate (CERT_OPTIONAL): a stranger's one ends it.
            await get(kubelet, "/pods", ctx=client_context(api, foreign))


async def test_tokens_without_rbac_get_the_kubelets_403(api: LocalAPIServer, tmp_path: Path) -> None:
    async with kubelet_api(api, _tmp(tmp_path)) as kubelet:
        ctx = client_context(api)
        bob = USERS["bob"]
        for method, path, verb, sub in (("GET", "/pods", "get", "proxy"), ("GET", "/metrics", "get", "metrics"),
                                        ("GET", "/stats/summary", "get", "stats"),
                                        ("POST", "/exec/default/logger/c", "create", "proxy")):
            status, body = await get(kubelet, path, ctx=ctx, token=bob, method=method)
            assert (status, body) == (403, FORBIDDEN.format(user="bob", verb=verb, sub=sub)), path
        assert await get(kubelet, "/pods", ctx=ctx, token="not-a-token") == (401, "Unauthorized")


async def test_rbac_decides_view_is_not_enough_kubelet_api_admin_is(api: LocalAPIServer, tmp_path: Path) -> None:
    bind_cluster_role(api, "dave-view", "view", "User", "dave")
    bind_cluster_role(api, "carol-kubelet-api-admin", "system:kubelet-api-admin", "User", "carol")
    async with kubelet_api(api, _tmp(tmp_path)) as kubelet:
        ctx = client_context(api)
        status, body = await get(kubelet, "/pods", ctx=ctx, token=USERS["dave"])
        assert (status, body) == (403, FORBIDDEN.format(user="dave", verb="get", sub="proxy"))
        status, body = await get(kubelet, "/pods", ctx=ctx, token=USERS["carol"])
        assert status == 200 and '"kind":"PodList"' in body
        status, body = await get(kubelet, "/containerLogs/default/logger/c", ctx=ctx, token=USERS["carol"])
        assert (status, body) == (200, LOG_LINE + "\n")


async def test_token_and_access_reviews_are_cached(api: LocalAPIServer, tmp_path: Path) -> None:
    bind_cluster_role(api, "frank-kubelet-api-admin", "system:kubelet-api-admin", "User", "frank")
    async with kubelet_api(api, _tmp(tmp_path)) as kubelet:
        ctx = client_context(api)
        before = review_calls(api)
        for _ in range(3):
            status, _ = await get(kubelet, "/pods", ctx=ctx, token=USERS["frank"])
            assert status == 200
        after = review_calls(api)
        # The first request asked the API server once each; the next two were answered from the caches.
        assert after["tokenreviews"] - before["tokenreviews"] == 1
        assert after["subjectaccessreviews"] - before["subjectaccessreviews"] == 1
        assert kubelet.auth.token_reviewer.cache.hits == 2 and kubelet.auth.authorizer.cache.hits == 2
        assert kubelet.auth.token_reviewer.ttl == 120.0 and kubelet.auth.authorizer.allow_ttl == 300.0


async def test_logs_through_the_apiserver(api: LocalAPIServer, tmp_path: Path) -> None:
    """The API server dials the kubelet with its client certificate and verifies the kubelet's serving
    certificate against the cluster CA (--kubelet-certificate-authority)."""
    async with kubelet_api(api, _tmp(tmp_path)):
        async with aiohttp.ClientSession(headers=api.headers()) as http:
            async with http.get(f"{api.url}/api/v1/namespaces/default/pods/logger/log",
                                ssl=api.ssl_context()) as r:
                assert (r.status, await r.text()) == (200, LOG_LINE + "\n")
        kubectl = shutil.which("kubectl")
        assert kubectl is not None
        res = await asyncio.to_thread(subprocess.run, [kubectl, f"--kubeconfig={api.kubeconfig}", "logs", "logger"],
                                      capture_output=True, text=True, timeout=60)
        assert (res.returncode, res.stdout) == (0, LOG_LINE + "\n"), res.stderr


async def test_apiserver_refuses_a_kubelet_serving_certificate_it_cannot_verify(api: LocalAPIServer,
                                                                               tmp_path: Path) -> None:
    async with kubelet_api(api, _tmp(tmp_path), foreign_serving=True) as kubelet:
        async with aiohttp.ClientSession(headers=api.headers()) as http:
            async with http.get(f"{api.url}/api/v1/namespaces/default/pods/logger/log",
                                ssl=api.ssl_context()) as r:
                status = await r.json()
        assert r.status == 500 and status["reason"] == "InternalError"
        assert status["message"] == (f'Internal error occurred: Get "{kubelet.url}/containerLogs/default/logger/c": '
                                     "tls: failed to verify certificate: x509: certificate signed by unknown authority")


async def test_insecure_http_and_client_ca_do_not_mix(api: LocalAPIServer) -> None:
    from minikube_py.cli.main import UserError

    async with APIClient(api.url, ssl_context=api.ssl_context()) as client:
        with pytest.raises(UserError, match="--client-ca-file needs HTTPS"):
            build_auth(kubelet_args("--insecure-http", "--client-ca-file", str(api.ca_file)), client)
        with pytest.raises(UserError) as e:
            build_auth(kubelet_args("--client-ca-file", str(api.data_dir / "nope.crt")), client)
        assert str(e.value) == f"--client-ca-file {api.data_dir / 'nope.crt'}: no such file"
        auth = build_auth(kubelet_args(), client)
        # The defaults are closed: no anonymous user, tokens reviewed, every request reviewed.
        assert auth.anonymous is False and auth.token_reviewer is not None
        assert type(auth.authorizer).__name__ == "WebhookAuthorizer"

