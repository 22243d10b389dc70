"""The kubelet API on port 10250, the part the API server's logs/exec proxy calls:

- ``GET /containerLogs/{namespace}/{pod}/{container}?follow=&tailLines=&timestamps=&sinceSeconds=
  &sinceTime=&limitBytes=&previous=``: the container's CRI log file, as text;
- ``/exec/{namespace}/{pod}/{container}?command=..&stdin=&stdout=&stderr=&tty=``: a channel WebSocket
  (``v5.channel.k8s.io``/v4) relayed frame for frame to the runtime's streaming exec;
- ``GET /healthz``, and ``GET /pods`` (the pods this kubelet runs, as a PodList).

Every request is authenticated and authorized as the kubelet does it (``--client-ca-file``,
``--authentication-token-webhook``, ``--authorization-mode=Webhook``; see
``minikube_py/client/delegated_auth.py``): the path maps to the Node's subresource (``request_attributes``)
and a refusal reads as the kubelet's, ``Unauthorized`` or ``Forbidden (user=..., verb=..., resource=nodes,
subresource(s)=[proxy])`` in plain text.

HTTPS with ``--tls-cert-file``/``--tls-private-key-file``, or a self-signed certificate made at start
(the kubelet's own behaviour); plain HTTP only when asked (loopback tests: the API server then dials
``http://``).
"""

from __future__ import annotations

import datetime as dt
import logging
import posixpath
import ssl
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web

from minikube_py.client.delegated_auth import Attributes, DelegatedAuth, UserInfo
from minikube_py.kubelet.logs import LogOptions, write_log
from minikube_py.kubelet.pod_status import RUNNING
from minikube_py.kubelet.streaming import (
    WEBSOCKET_PROTOCOLS,
    StreamOptions,
    StreamRequestError,
    relay_websockets,
    status_response,
)
from minikube_py.pki import create_ca, issue_cert, write_private_file
from minikube_py.runtime import NotFoundError, RuntimeServiceError

if TYPE_CHECKING:
    from minikube_py.kubelet.kubelet import Kubelet

log = logging.getLogger("minikube_py.kubelet.server")

# The kubelet's verbs: other methods (HEAD, OPTIONS) get none, which no RBAC rule grants.
VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
# Paths with a subresource of their own; everything else (logs, exec, attach, run, portForward, pods,
# healthz) is nodes/proxy, the kubelet's all-powerful one.
SUBRESOURCES = (("/stats", "stats"), ("/metrics", "metrics"), ("/logs", "log"), ("/spec", "spec"),
                ("/checkpoint", "checkpoint"))


def _is_subpath(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def request_attributes(method: str, path: str, node_name: str, user: UserInfo) -> Attributes:
    """What a kubelet API request asks, as the kubelet's authorizer sees it (pkg/kubelet/server/auth.go):
    a verb from the method on ``nodes/<subresource>`` named after this node."""
    clean = posixpath.normpath("/" + path.lstrip("/"))
    subresource = next((sub for prefix, sub in SUBRESOURCES if _is_subpath(clean, prefix)), "proxy")
    return Attributes(user=user, verb=VERBS.get(method.upper(), ""), path=path, resource="nodes",
                      subresource=subresource, name=node_name, version="v1")


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message, headers={"X-Content-Type-Options": "nosniff"})


def kubelet_unauthorized() -> web.Response:
    return _text(401, "Unauthorized")


def kubelet_forbidden(attrs: Attributes, reason: str) -> web.Response:
    return _text(403, f"Forbidden (user={attrs.user.name}, verb={attrs.verb}, resource={attrs.resource}, "
                      f"subresource(s)=[{attrs.subresource}])")


def kubelet_authorization_error(attrs: Attributes, error: Exception) -> web.Response:
    return _text(500, f"Authorization error (user={attrs.user.name}, verb={attrs.verb}, resource={attrs.resource}, "
                      f"subresource(s)=[{attrs.subresource}])")


def serving_ssl_context(node_name: str, node_ip: str, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """The given certificate, or a self-signed one for the node's name and IP (made in memory)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if cert is not None and key is not None:
        ctx.load_cert_chain(cert, key)
        return ctx
    stamp = int(dt.datetime.now(dt.UTC).timestamp())
    ca = create_ca(f"{node_name}-ca@{stamp}", days=365)
    ips = sorted({"127.0.0.1", node_ip} - {"", "0.0.0.0"})
    pair = issue_cert(ca, f"{node_name}@{stamp}", dns_names=[node_name, "localhost"], ip_addresses=ips,
                      server=True, days=365)
    with tempfile.TemporaryDirectory(prefix="minikube-py-kubelet-") as tmp:
        cert_path, key_path = Path(tmp) / "kubelet.crt", Path(tmp) / "kubelet.key"
        write_private_file(cert_path, pair.cert_pem + ca.cert_pem)
        write_private_file(key_path, pair.key_pem)
        ctx.load_cert_chain(cert_path, key_path)
    return ctx


class KubeletServer:
    def __init__(self, kubelet: Kubelet, auth: DelegatedAuth | None = None) -> None:
        self.kubelet = kubelet
        self.auth = auth

    def _attributes(self, request: web.Request, user: UserInfo) -> Attributes:
        return request_attributes(request.method, request.path, self.kubelet.config.node_name, user)

    def app(self) -> web.Application:
        middlewares = []
        if self.auth is not None:
            middlewares.append(self.auth.middleware(self._attributes, unauthorized=kubelet_unauthorized,
                                                    forbidden=kubelet_forbidden, failed=kubelet_authorization_error))
        app = web.Application(middlewares=middlewares)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/pods", self.pods)
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self.container_logs)
        app.router.add_route("*", "/exec/{namespace}/{pod}/{container}", self.exec)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def pods(self, request: web.Request) -> web.Response:
        items = [w.pod for w in list(self.kubelet.workers.values())]
        return web.Response(body=orjson.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}),
                            content_type="application/json")

    def _container(self, request: web.Request, previous: bool = False) -> tuple[Any, Any] | web.Response:
        ns, name, container = (request.match_info["namespace"], request.match_info["pod"],
                               request.match_info["container"])
        worker = self.kubelet.worker_for(ns, name)
        if worker is None:
            return status_response(404, "NotFound", f'pod "{name}" not found')
        spec = worker.pod.get("spec") or {}
        names = [str(c.get("name")) for c in (*(spec.get("initContainers") or ()), *(spec.get("containers") or ()))]
        if container not in names:
            return status_response(404, "NotFound", f'container "{container}" in pod "{name}" not found')
        rc = worker.container(container, previous)
        if rc is None:
            if previous:
                return status_response(400, "BadRequest",
                                       f'previous terminated container "{container}" in pod "{name}" not found')
            tracked = worker.tracked.get(container)
            reason = tracked.waiting[0] if tracked is not None and tracked.waiting else "ContainerCreating"
            return status_response(400, "BadRequest",
                                   f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        return worker, rc

    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        try:
            options = LogOptions.from_query(request.query)
        except ValueError as e:
            return status_response(400, "BadRequest", str(e))
        found = self._container(request, options.previous)
        if isinstance(found, web.Response):
            return found
        worker, rc = found
        path = self.kubelet.container_log_path(worker.pod, rc.name, rc.attempt)
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)

        async def still_running() -> bool:
            try:
                st = await self.kubelet.runtime.container_status(rc.id)
            except RuntimeServiceError:
                return False
            return st.get("state") == RUNNING

        try:
            await write_log(path, options, resp.write, still_running if not options.previous else None)
            await resp.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            log.debug("log reader of %s went away", path)
        return resp

    async def exec(self, request: web.Request) -> web.StreamResponse:
        try:
            options = StreamOptions.from_query(request.query, request.query.getall("command", []))
        except StreamRequestError as e:
            return status_response(400, "BadRequest", str(e))
        found = self._container(request)
        if isinstance(found, web.Response):
            return found
        _, rc = found
        ws = web.WebSocketResponse(protocols=WEBSOCKET_PROTOCOLS, max_msg_size=0)
        ready = ws.can_prepare(request)
        if not ready.ok or ready.protocol is None:
            return status_response(400, "BadRequest", "exec needs a WebSocket upgrade offering "
                                                      f"{', '.join(WEBSOCKET_PROTOCOLS)}")
        try:
            upstream = await self.kubelet.runtime.exec_stream(
                rc.id, list(options.command), tty=options.tty, stdin=options.stdin, stdout=options.stdout,
                stderr=options.stderr)
        except NotFoundError as e:
            return status_response(404, "NotFound", str(e))
        except RuntimeServiceError as e:
            return status_response(500, "InternalError", f"error executing command in container: {e}")
        try:
            # v4 and v5 frame alike; a v4 client just never sends v5's close-stdin frame.
            await ws.prepare(request)
            await relay_websockets(ws, upstream)
        finally:
            if not upstream.closed:
                await upstream.close()
        return ws


async def start_server(kubelet: Kubelet, bind_address: str, port: int, ssl_context: ssl.SSLContext | None,
                       auth: DelegatedAuth | None = None) -> tuple[web.AppRunner, int]:
    """Serve the kubelet API; without ``auth`` it is open to anyone who reaches it (in-process tests)."""
    if auth is not None and ssl_context is not None:
        auth.configure_tls(ssl_context)
    runner = web.AppRunner(KubeletServer(kubelet, auth).app(), access_log=None, handler_cancellation=True,
                           shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, bind_address, port, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    real_port = runner.addresses[0][1] if runner.addresses else port
    return runner, int(real_port)
