"""The logs and exec subresources: the API server relays them to the kubelet of the pod's node.

``log`` becomes ``GET /containerLogs/{ns}/{pod}/{container}`` on the kubelet, streamed back as it
comes. ``exec`` accepts kubectl's WebSocket (v5/v4.channel.k8s.io) and relays frames to the kubelet's
``/exec`` WebSocket; kubectl before 1.30 speaks SPDY/3.1, which ``spdy.relay_spdy_exec`` translates
onto the same kubelet WebSocket.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web
from yarl import URL

from minikube_py.api import errors
from minikube_py.api.resources import lookup
from minikube_py.kubelet.streaming import (
    WEBSOCKET_PROTOCOLS,
    StreamOptions,
    StreamRequestError,
    is_websocket_upgrade,
    relay_websockets,
)

if TYPE_CHECKING:
    from .server import APIServer

log = logging.getLogger("minikube_py.apiserver.kubelet_proxy")

CONNECT_TIMEOUT = 10.0
# Address types tried in order (kube-apiserver's --kubelet-preferred-address-types, InternalIP first).
ADDRESS_PREFERENCE = ("InternalIP", "Hostname", "InternalDNS", "ExternalIP", "ExternalDNS")
LOG_INT_PARAMS = ("tailLines", "sinceSeconds", "limitBytes")
LOG_BOOL_PARAMS = ("follow", "timestamps", "previous", "insecureSkipTLSVerifyBackend")
MAX_ERROR_BODY = 64 * 1024


async def proxy_to_kubelet(srv: APIServer, request: web.Request, pod: dict[str, Any], sub: str
                           ) -> web.StreamResponse:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    name, namespace = meta["name"], meta.get("namespace") or "default"
    if sub == "log" and request.method != "GET":
        raise errors.method_not_allowed(f"{request.method} is not supported on pods/log")
    container = _container(pod, request.query.get("container"))
    log_query = _log_query(request) if sub == "log" else None
    exec_options = _exec_options(request) if sub == "exec" else None
    node_name = spec.get("nodeName")
    if not node_name:
        raise errors.bad_request(f"pod {name} does not have a host assigned")
    base = await kubelet_url(srv, node_name)
    if log_query is not None:
        url = base.with_path(f"/containerLogs/{namespace}/{name}/{container}").with_query(log_query)
        return await _proxy_log(srv, request, url, node_name)
    assert exec_options is not None
    url = base.with_path(f"/exec/{namespace}/{name}/{container}").with_query(_exec_query(exec_options))
    return await _proxy_exec(srv, request, url, node_name, exec_options)


# ---- the request: container, query ---------------------------------------------------------------------

def _container(pod: dict[str, Any], wanted: str | None) -> str:
    spec = pod.get("spec") or {}
    name = pod["metadata"]["name"]
    regular = [c.get("name", "") for c in spec.get("containers") or []]
    init = [c.get("name", "") for c in spec.get("initContainers") or []]
    ephemeral = [c.get("name", "") for c in spec.get("ephemeralContainers") or []]
    if not wanted:
        if len(regular) == 1:
            return regular[0]
        msg = f"a container name must be specified for pod {name}, choose one of: [{' '.join(regular)}]"
        if init:
            msg += f" or one of the init containers: [{' '.join(init)}]"
        if ephemeral:
            msg += f" or one of the ephemeral containers: [{' '.join(ephemeral)}]"
        raise errors.bad_request(msg)
    if wanted not in (*regular, *init, *ephemeral):
        raise errors.bad_request(f"container {wanted} is not valid for pod {name}")
    return wanted


def _log_query(request: web.Request) -> dict[str, str]:
    """kubectl's PodLogOptions, checked as kube-apiserver does, in the kubelet's terms."""
    q = request.query
    out: dict[str, str] = {}
    for key in LOG_BOOL_PARAMS:
        raw = q.get(key)
        if raw is None or raw == "":
            continue
        if raw.lower() not in ("true", "false", "1", "0", "t", "f"):
            raise errors.bad_request(f'invalid value for {key}: "{raw}" is not a boolean')
        if raw.lower() in ("true", "1", "t") and key != "insecureSkipTLSVerifyBackend":
            out[key] = "true"
    for key in LOG_INT_PARAMS:
        raw = q.get(key)
        if raw is None or raw == "":
            continue
        try:
            value = int(raw)
        except ValueError:
            raise errors.bad_request(f'invalid value for {key}: "{raw}" is not an integer') from None
        if value < 0 or (value == 0 and key != "tailLines"):
            bound = "greater than or equal to 0" if key == "tailLines" else "greater than 0"
            cause = errors.Cause(key, f"Invalid value: {value}: must be {bound}")
            raise errors.invalid("PodLogOptions", "", [cause])
        out[key] = str(value)
    if q.get("sinceTime"):
        if "sinceSeconds" in out:
            raise errors.invalid("PodLogOptions", "", [errors.Cause(
                "", "at most one of `sinceTime` or `sinceSeconds` may be specified")])
        out["sinceTime"] = q["sinceTime"]
    return out


def _exec_options(request: web.Request) -> StreamOptions:
    try:
        return StreamOptions.from_query(request.query, request.query.getall("command", []))
    except StreamRequestError as e:
        raise errors.bad_request(str(e)) from None


def _exec_query(opts: StreamOptions) -> list[tuple[str, str]]:
    query = [("command", c) for c in opts.command]
    for key in ("stdin", "stdout", "stderr", "tty"):
        query.append((key, "true" if getattr(opts, key) else "false"))
    return query


# ---- where the kubelet is, and how to talk to it ----------------------------------------------------------

async def kubelet_url(srv: APIServer, node_name: str) -> URL:
    """The kubelet API base URL of ``node_name`` (its Node's address and daemonEndpoints port)."""
    info = lookup("", "v1", "nodes")
    assert info is not None
    node = await srv.registry.get(info, None, node_name)
    status = node.get("status") or {}
    by_type: dict[str, str] = {}
    for addr in status.get("addresses") or []:
        if isinstance(addr, dict) and addr.get("address"):
            by_type.setdefault(str(addr.get("type")), str(addr["address"]))
    host = next((by_type[t] for t in ADDRESS_PREFERENCE if t in by_type), None)
    if host is None:
        raise errors.service_unavailable(f'no preferred addresses found for node "{node_name}"; '
                                         f"known addresses: {sorted(by_type.items())}")
    endpoint = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {})
    port = endpoint.get("Port") or endpoint.get("port") or srv.config.kubelet_port
    try:
        port = int(port)
    except (TypeError, ValueError):
        port = srv.config.kubelet_port
    return URL.build(scheme="https" if _uses_tls(srv) else "http", host=host, port=port)


def _uses_tls(srv: APIServer) -> bool:
    c = srv.config
    return any(p is not None for p in (c.kubelet_client_cert, c.kubelet_client_key, c.kubelet_ca))


@functools.lru_cache(maxsize=8)
def _client_ssl(cert: Path | None, key: Path | None, ca: Path | None) -> ssl.SSLContext:
    if ca is not None:
        # --kubelet-certificate-authority: the kubelet's serving certificate must chain to it and name the
        # address dialled (its InternalIP), as kube-apiserver checks it.
        ctx = ssl.create_default_context(cafile=str(ca))
    else:
        # kube-apiserver without --kubelet-certificate-authority does not verify the kubelet either.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def kubelet_session(srv: APIServer) -> aiohttp.ClientSession:
    c = srv.config
    ssl_ctx: ssl.SSLContext | bool = (_client_ssl(c.kubelet_client_cert, c.kubelet_client_key, c.kubelet_ca)
                                      if _uses_tls(srv) else False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=None)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_ctx, force_close=True),
                                 timeout=timeout, auto_decompress=False)


# OpenSSL's verify codes that Go words as an unknown authority (the usual case: a kubelet with a
# self-signed certificate while --kubelet-certificate-authority is given) or an expired certificate.
_UNKNOWN_AUTHORITY_CODES = {18, 19, 20, 21}
_EXPIRED_CODES = {9, 10}


def _certificate_problem(e: aiohttp.ClientConnectorCertificateError) -> str:
    cause = e.certificate_error
    code = getattr(cause, "verify_code", None)
    if code in _UNKNOWN_AUTHORITY_CODES:
        return "x509: certificate signed by unknown authority"
    if code in _EXPIRED_CODES:
        return "x509: certificate has expired or is not yet valid"
    return f"x509: {getattr(cause, 'verify_message', '') or cause}"


def _unreachable(node_name: str, url: URL, e: BaseException) -> errors.ApiError:
    if isinstance(e, aiohttp.ClientConnectorCertificateError):
        # --kubelet-certificate-authority refused the kubelet's serving certificate: kube-apiserver's words.
        return errors.internal_error(f'Get "{url}": tls: failed to verify certificate: {_certificate_problem(e)}')
    if isinstance(e, aiohttp.ClientConnectorError):
        err = e.os_error
        detail = os.strerror(err.errno) if err.errno else (err.strerror or str(err))
        why = f"dial tcp {url.host}:{url.port}: connect: {detail.lower()}"
    elif isinstance(e, TimeoutError):
        why = f"dial tcp {url.host}:{url.port}: i/o timeout"
    else:
        why = str(e) or type(e).__name__
    return errors.service_unavailable(f'the kubelet of node "{node_name}" cannot be reached: {why}')


async def _kubelet_error(resp: aiohttp.ClientResponse) -> errors.ApiError:
    """The kubelet's own error, as a Status: relayed if it sent one, else wrapped."""
    body = await resp.content.read(MAX_ERROR_BODY)
    if resp.content_type == "application/json":
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
            status = orjson.loads(body)
            if status.get("kind") == "Status" or "status" in status:
                code = int(status.get("code") or resp.status)
                return errors.ApiError(code, str(status.get("reason") or ""),
                                       str(status.get("message") or ""), status.get("details"))
    text = body.decode("utf-8", "replace").strip() or resp.reason or f"status {resp.status}"
    reason = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
              503: "ServiceUnavailable"}.get(resp.status, "InternalError")
    return errors.ApiError(resp.status if resp.status >= 400 else 500, reason, text)


# ---- logs -----------------------------------------------------------------------------------------------

async def _proxy_log(srv: APIServer, request: web.Request, url: URL, node_name: str) -> web.StreamResponse:
    async with kubelet_session(srv) as session:
        try:
            upstream = await session.get(url)
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise _unreachable(node_name, url, e) from None
        async with upstream:
            if upstream.status != 200:
                raise await _kubelet_error(upstream)
            resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as e:
                # The kubelet went away mid-stream; the client sees the stream end, as with the real proxy.
                log.info("log stream from node %s ended: %s", node_name, e)
            await resp.write_eof()
            return resp


# ---- exec -----------------------------------------------------------------------------------------------

def _offered_protocols(request: web.Request) -> list[str]:
    offered = [p.strip() for h in request.headers.getall("Sec-WebSocket-Protocol", [])
               for p in h.split(",") if p.strip()]
    return [p for p in offered if p in WEBSOCKET_PROTOCOLS]


async def _dial_exec(session: aiohttp.ClientSession, url: URL, node_name: str, protocols: list[str]
                     ) -> aiohttp.ClientWebSocketResponse:
    try:
        return await session.ws_connect(url, protocols=protocols, autoping=True, max_msg_size=0,
                                        timeout=aiohttp.ClientWSTimeout(ws_close=5.0))
    except aiohttp.WSServerHandshakeError as e:
        if e.status in (101, 200):
            raise errors.internal_error(f"the kubelet of node {node_name!r} refused the exec stream: "
                                        f"{e.message}") from None
        raise errors.ApiError(e.status if e.status >= 400 else 500, "InternalError" if e.status >= 500
                              else "BadRequest", f"the kubelet of node {node_name!r} answered exec with "
                              f"{e.status}: {e.message}") from None
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        raise _unreachable(node_name, url, e) from None


async def _proxy_exec(srv: APIServer, request: web.Request, url: URL, node_name: str, opts: StreamOptions
                      ) -> web.StreamResponse:
    upgrade = request.headers.get("Upgrade", "").lower()
    spdy = "spdy/3.1" in upgrade
    if not spdy and not is_websocket_upgrade(request):
        raise errors.bad_request("Upgrade request required")
    if spdy:
        from .spdy import negotiate_spdy_protocol, relay_spdy_exec

        protocol = negotiate_spdy_protocol(request)
        async with kubelet_session(srv) as session:
            kubelet = await _dial_exec(session, url, node_name, list(WEBSOCKET_PROTOCOLS))
            async with kubelet:
                return await relay_spdy_exec(request, kubelet, protocol, opts)
    protocols = _offered_protocols(request)
    if not protocols:
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        raise errors.bad_request(f"unsupported WebSocket subprotocols {offered!r}; this server speaks "
                                 f"{', '.join(WEBSOCKET_PROTOCOLS)}")
    async with kubelet_session(srv) as session:
        kubelet = await _dial_exec(session, url, node_name, protocols)
        async with kubelet:
            if kubelet.protocol not in protocols:
                raise errors.internal_error(f"the kubelet of node {node_name!r} chose the exec protocol "
                                            f"{kubelet.protocol!r}, which the client did not offer")
            client = web.WebSocketResponse(protocols=(kubelet.protocol,), max_msg_size=0)
            await client.prepare(request)
            await relay_websockets(client, kubelet)
            return client


