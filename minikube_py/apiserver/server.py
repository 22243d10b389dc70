"""The API server: an aiohttp application in front of the generic registry.

Every request passes, in order: authentication, the authorizer hook, then one handler per verb.
Errors anywhere become Kubernetes ``Status`` objects with the right code (never a traceback).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from minikube_py import __version__
from minikube_py.api import errors
from minikube_py.store import Store, StoreError, StoreUnavailableError

from . import discovery, handlers, impersonation
from .metrics import Metrics
from .objects import dumps
from .rbac import MASTERS, decide
from .registry import Registry
from .requests import RequestInfo, accepts_json, parse_path

log = logging.getLogger("minikube_py.apiserver")

# The Kubernetes release whose API this server speaks (kubectl warns beyond +/-1 minor of skew).
KUBE_VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "gitCommit": f"minikube-py-{__version__}",
                "gitTreeState": "clean", "buildDate": "2026-11-23T00:00:00Z", "goVersion": "python3",
                "compiler": "cpython", "platform": "linux/amd64"}

HEALTH_PATHS = frozenset({"/healthz", "/livez", "/readyz"})


@dataclass(frozen=True)
class User:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()


ANONYMOUS = User("system:anonymous", "", ("system:unauthenticated",))


class Authorizer(Protocol):
    """Returns (allowed, reason), or an awaitable of it; ``field_selector`` is the request's, which
    the Node authorizer needs for lists and watches of pods."""

    def authorize(self, user: User, ri: RequestInfo, field_selector: str = "") -> Any: ...


class AllowAuthenticated:
    """``--authorization-mode=AlwaysAllow``: every authenticated user may do everything."""

    def authorize(self, user: User, ri: RequestInfo, field_selector: str = "") -> tuple[bool, str]:
        return True, ""


@dataclass
class Config:
    store_url: str
    bind_address: str = "127.0.0.1"
    port: int = 6443
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    token_file: Path | None = None
    anonymous: bool = False
    advertise_address: str = "127.0.0.1"
    service_cidr: str = "10.96.0.0/12"
    node_port_range: tuple[int, int] = (30000, 32767)
    bookmark_interval: float = 60.0
    kubelet_port: int = 10250
    kubelet_client_cert: Path | None = None
    kubelet_client_key: Path | None = None
    kubelet_ca: Path | None = None
    authorization_mode: str = "Node,RBAC"
    service_account_key_files: tuple[Path, ...] = ()
    service_account_signing_key: Path | None = None
    service_account_issuer: str = "https://kubernetes.default.svc.cluster.local"
    encryption_config: Path | None = None
    # TLS to etcd (https:// endpoints in store_url): kube-apiserver's --etcd-cafile/-certfile/-keyfile.
    etcd_cafile: Path | None = None
    etcd_certfile: Path | None = None
    etcd_keyfile: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class APIServer:
    def __init__(self, config: Config, store: Store, authorizer: Authorizer | None = None) -> None:
        from .rbac import build_authorizer
        from .serviceaccounts import ServiceAccountTokens

        self.config = config
        if config.encryption_config is not None:
            from .encryption import EncryptingStore, load_config

            store = EncryptingStore(store, load_config(config.encryption_config))
        self.store = store
        self.registry = Registry(store, config.service_cidr, config.node_port_range)
        self.metrics = Metrics()
        self.authorizer: Authorizer = authorizer or build_authorizer(config.authorization_mode, self.registry)
        # With RBAC in the chain, system:masters is allowed everything whatever else the chain holds
        # (the union allows on the first yes, and RBAC says yes to masters without a lookup): the
        # pipeline says so itself, before building the chain's coroutines on every admin request.
        self._masters_allowed = authorizer is None and "RBAC" in (
            m.strip() for m in config.authorization_mode.split(","))
        self.sa_tokens: ServiceAccountTokens | None = None
        if config.service_account_signing_key is not None or config.service_account_key_files:
            from .serviceaccounts import load_public_keys, load_signing_key

            signing = (load_signing_key(config.service_account_signing_key)
                       if config.service_account_signing_key is not None else None)
            public = [k for f in config.service_account_key_files for k in load_public_keys(f)]
            self.sa_tokens = ServiceAccountTokens(config.service_account_issuer, signing, public)
        self.tokens: Any = None
        if config.token_file is not None:
            from .tokens import TokenFile

            self.tokens = TokenFile.load(config.token_file)
        self._runner: web.AppRunner | None = None
        self._client_cas: Any = None  # x509_auth.ClientCAs once ssl_context() read --client-ca-file
        self.port: int = config.port
        self.ready = False
        self.watch_tasks: set[asyncio.Task[Any]] = set()

    # ---- authentication ----------------------------------------------------------------------------

    def authenticate(self, request: web.Request) -> User | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer ") and (self.tokens is not None or self.sa_tokens is not None):
            token = header[7:].strip()
            info = self.tokens.authenticate(token) if self.tokens is not None else None
            if info is None and self.sa_tokens is not None:
                info = self.sa_tokens.authenticate(token)
                if info is not None:
                    request["sa_token"] = info  # still to check against the store: see _pipeline
            if info is not None:
                return User(info.name, info.uid, (*info.groups, "system:authenticated"))
            return None
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        if peer:
            from .x509_auth import certificate_identity

            identity = certificate_identity(peer, self._client_cas, time.time())
            if identity is None:
                return None  # expired, not yet valid or nameless: 401 as kube-apiserver
            return User(identity[0], "", (*identity[1], "system:authenticated"))
        if header:
            return None
        return ANONYMOUS if self.config.anonymous else None

    # ---- the request pipeline ------------------------------------------------------------------------

    @web.middleware
    async def _pipeline(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                        ) -> web.StreamResponse:
        started = time.perf_counter()
        query = dict(request.query)
        ri = parse_path(request.method, request.path, query)
        resource = ri.resource or ""
        code = 500
        self.metrics.inflight += 1
        try:
            if request.path not in HEALTH_PATHS:
                user = self.authenticate(request)
                if user is not None and "sa_token" in request and not await self.sa_tokens.still_bound(
                        self.registry, request["sa_token"]):
                    user = None  # its ServiceAccount (or pod) was deleted, perhaps made again
                if user is None:
                    raise errors.unauthorized()
                if impersonation.requested(request.headers):
                    user = await impersonation.impersonate(user, request.headers, self._allowed)
                if self._masters_allowed and MASTERS in user.groups:
                    allowed, reason = True, ""
                else:
                    allowed, reason = await decide(self.authorizer, user, ri, query.get("fieldSelector", ""))
                if not allowed:
                    message = _forbidden_message(user, ri)
                    raise errors.forbidden(f"{message}: {reason}" if reason else message)
                request["user"] = user
            request["ri"] = ri
            resp = await handler(request)
            code = resp.status
            return resp
        except errors.ApiError as e:
            code = e.code
            return error_response(e)
        except web.HTTPException:
            raise
        except StoreUnavailableError as e:
            code = 503
            return error_response(errors.service_unavailable(str(e)))
        except StoreError as e:
            log.exception("store error on %s %s", request.method, request.path)
            code = 500
            return error_response(errors.internal_error(str(e)))
        except (asyncio.CancelledError, ConnectionResetError):
            code = 499
            raise
        except Exception as e:  # the server keeps serving; the client gets a Status
            log.exception("internal error on %s %s", request.method, request.path)
            code = 500
            return error_response(errors.internal_error(f"{type(e).__name__}: {e}"))
        finally:
            self.metrics.inflight -= 1
            self.metrics.observe(ri.verb.upper() if ri.is_resource else request.method, resource,
                                 ri.subresource, code, time.perf_counter() - started)

    async def _allowed(self, user: User, ri: RequestInfo) -> tuple[bool, str]:
        if self._masters_allowed and MASTERS in user.groups:
            return True, ""
        return await decide(self.authorizer, user, ri)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        ri: RequestInfo = request["ri"]
        path = request.path
        if ri.is_resource:
            if ri.info is None:
                if handlers.is_bindings_create(request, ri):
                    return await handlers.handle_bindings(self, request, ri)
                # Reviews parse as resources of their groups but are answered, never stored.
                if request.method == "POST" and ri.group in discovery.EXTRA_GROUPS:
                    return await handlers.handle_review(self, request, ri)
                raise errors.not_found_path()
            return await handlers.handle_resource(self, request, ri)
        if request.method not in ("GET", "HEAD"):
            if path.startswith("/apis/authorization.k8s.io/v1/") or path.startswith(
                    "/apis/authentication.k8s.io/v1/"):
                return await handlers.handle_review(self, request, ri)
            if not _known_non_resource(ri.parts):
                raise errors.not_found_path()  # kube-apiserver: 404 for a path it does not serve at all
            raise errors.method_not_allowed("the server does not allow this method on the requested resource")
        if path in HEALTH_PATHS or path.startswith(("/healthz/", "/livez/", "/readyz/")):
            if path.startswith("/readyz") and not self.ready:
                return web.Response(status=503, text="[-]bootstrap not finished\nreadyz check failed\n")
            return web.Response(text="ok", content_type="text/plain")
        if path == "/version":
            return json_response(KUBE_VERSION)
        if path == "/metrics":
            return web.Response(body=self.metrics.render(), content_type="text/plain",
                                charset="utf-8", headers={"X-Content-Type": "version=0.0.4"})
        accept = request.headers.get("Accept", "")
        if path == "/api":
            agg = discovery.wants_aggregated(accept)
            if agg:
                return web.Response(body=discovery.aggregated(True, agg.split("v=")[1].split(";")[0]),
                                    headers={"Content-Type": agg})
            return raw_json(discovery.api_versions())
        if path == "/apis":
            agg = discovery.wants_aggregated(accept)
            if agg:
                return web.Response(body=discovery.aggregated(False, agg.split("v=")[1].split(";")[0]),
                                    headers={"Content-Type": agg})
            return raw_json(discovery.api_group_list())
        parts = ri.parts
        if parts[:1] == ["api"] and len(parts) == 2:
            body = discovery.resource_list("", parts[1])
            if body is not None:
                return raw_json(body)
        if parts[:1] == ["apis"] and len(parts) == 2:
            body = discovery.api_group(parts[1])
            if body is not None:
                return raw_json(body)
        if parts[:1] == ["apis"] and len(parts) == 3:
            body = discovery.resource_list(parts[1], parts[2])
            if body is not None:
                return raw_json(body)
        if parts[:1] == ["openapi"]:
            return await handlers.handle_openapi(self, request, parts)
        raise errors.not_found_path()

    # ---- life cycle ----------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        from .requests import MAX_BODY_BYTES

        app = web.Application(middlewares=[self._pipeline], client_max_size=MAX_BODY_BYTES + 1024)
        # [\s\S], not ".": a path may carry a percent-encoded newline and must still reach _route.
        app.router.add_route("*", r"/{tail:[\s\S]*}", self._route)
        return app

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.config.tls_cert is None or self.config.tls_key is None:
            return None
        from .x509_auth import ClientCAs, defer_time_checks

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.config.tls_cert), str(self.config.tls_key))
        ctx.set_alpn_protocols(["http/1.1"])
        if self.config.client_ca is not None:
            ctx.load_verify_locations(str(self.config.client_ca))
            ctx.verify_mode = ssl.CERT_OPTIONAL
            # Dates are the authenticator's (401), not the handshake's: see x509_auth.
            defer_time_checks(ctx)
            self._client_cas = ClientCAs.load(self.config.client_ca)
        return ctx

    async def start(self) -> None:
        from .bootstrap import bootstrap

        # handler_cancellation: a watch whose client went away must stop, not wait for its next event.
        self._runner = web.AppRunner(self.build_app(), handler_cancellation=True, access_log=None,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        from .tls_site import AlertingTLSSite

        ctx = self.ssl_context()
        # With TLS, a refused client certificate's alert reaches the client (see tls_site).
        site = (AlertingTLSSite if ctx is not None else web.TCPSite)(
            self._runner, self.config.bind_address, self.config.port, ssl_context=ctx, backlog=1024,
            reuse_address=True)
        await site.start()
        if self.config.port == 0:
            server = site._server  # aiohttp keeps the bound socket here; needed for port 0 in tests
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        await self.registry.start()
        # The RBAC authorizer's watch-fed view of roles and bindings (an explicit authorizer may have none).
        if hasattr(self.authorizer, "start"):
            await self.authorizer.start()
        await bootstrap(self)
        # Building the OpenAPI documents takes seconds on a cold cache: do it off the event loop now,
        # not in the first kubectl apply's request.
        from minikube_py.api import openapi

        self._warm = asyncio.get_running_loop().run_in_executor(None, openapi.warm_up)
        self.ready = True
        log.info("serving on %s:%d", self.config.bind_address, self.port)

    async def stop(self) -> None:
        self.ready = False
        for task in list(self.watch_tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if hasattr(self.authorizer, "stop"):
            await self.authorizer.stop()
        await self.registry.stop()


def _known_non_resource(parts: list[str]) -> bool:
    """Whether GET serves this non-resource path (so another method there is 405, not 404)."""
    if parts[:1] in (["version"], ["metrics"], ["healthz"], ["livez"], ["readyz"], ["openapi"]):
        return True
    if parts in (["api"], ["apis"]):
        return True
    if parts[:1] == ["api"] and len(parts) == 2:
        return discovery.resource_list("", parts[1]) is not None
    if parts[:1] == ["apis"] and len(parts) == 2:
        return discovery.api_group(parts[1]) is not None
    if parts[:1] == ["apis"] and len(parts) == 3:
        return discovery.resource_list(parts[1], parts[2]) is not None
    return False


def _forbidden_message(user: User, ri: RequestInfo) -> str:
    if not ri.is_resource:
        return f'forbidden: User "{user.name}" cannot {ri.verb} path "{ri.path}"'
    what = f'resource "{ri.resource}"' + (f' subresource "{ri.subresource}"' if ri.subresource else "")
    where = f' in the namespace "{ri.namespace}"' if ri.namespace else ""
    scope = "" if ri.namespace else " at the cluster scope"
    return (f'{ri.resource}{"." + ri.group if ri.group else ""}{" " + chr(34) + ri.name + chr(34) if ri.name else ""}'
            f' is forbidden: User "{user.name}" cannot {ri.verb} {what} in API group "{ri.group}"{where}{scope}')


def error_response(e: errors.ApiError) -> web.Response:
    resp = web.Response(status=e.code, body=dumps(e.status()), content_type="application/json")
    for k, v in e.headers.items():
        resp.headers[k] = v
    return resp


def json_response(obj: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    resp = web.Response(status=status, body=dumps(obj), content_type="application/json")
    for w in warnings or ():
        text = w.replace("\\", "\\\\").replace('"', '\\"')
        # A warning may quote a client's field name; a control character would break the header.
        text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
        resp.headers.add("Warning", f'299 - "{text}"')
    return resp


def raw_json(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


def watch_timeout(query: dict[str, str]) -> float:
    raw = query.get("timeoutSeconds")
    if raw:
        try:
            return max(0.0, float(int(raw)))
        except ValueError:
            raise errors.bad_request(f'invalid timeoutSeconds "{raw}"') from None
    # kube-apiserver: a random timeout between min-request-timeout (1800 s) and twice that.
    return 1800.0 * (1 + random.random())


def accepts(request: web.Request) -> None:
    if not accepts_json(request.headers.get("Accept")):
        raise errors.ApiError(406, "NotAcceptable",
                              "only the following media types are accepted: application/json, application/yaml")
