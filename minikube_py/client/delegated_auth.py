"""Delegated authentication and authorization for the ports a component serves itself (the kubelet API
on 10250, the controller-manager's 10257 and the scheduler's 10259), as Kubernetes components do it:
the component holds no users or policy of its own and asks the API server.

- Authentication, tried in Kubernetes' order: an x509 client certificate (verified during the TLS
  handshake against ``--client-ca-file``; CN = user, O = groups), then a bearer token, sent to the API
  server in a TokenReview (the kubelet's ``--authentication-token-webhook``) and cached; then, only when
  enabled, the anonymous user ``system:anonymous``. Otherwise 401.
- Authorization: a SubjectAccessReview with the request's attributes, cached (``Webhook``), or
  ``AlwaysAllow``. Some paths (``--authorization-always-allow-paths``, the health checks by default)
  skip both, so that probes need no credentials.

The 401/403 answers are pluggable: the kubelet answers in plain text, the components with a ``Status``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
from aiohttp import web

from .rest import APIClient, APIConnectionError, ApiStatusError

log = logging.getLogger(__name__)

ANONYMOUS_USER = "system:anonymous"
UNAUTHENTICATED_GROUP = "system:unauthenticated"
AUTHENTICATED_GROUP = "system:authenticated"
DEFAULT_ALWAYS_ALLOW_PATHS = ("/healthz", "/readyz", "/livez")
AUTHORIZATION_MODES = ("AlwaysAllow", "Webhook")
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
SUBJECT_ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
# Kubernetes' own cache lifetimes: the kubelet keeps token reviews 2 min and access reviews 5 min
# (allowed) / 30 s (denied); kube-scheduler and kube-controller-manager keep all of them 10 s.
KUBELET_TOKEN_TTL, KUBELET_ALLOW_TTL, KUBELET_DENY_TTL = 120.0, 300.0, 30.0
COMPONENT_TOKEN_TTL, COMPONENT_ALLOW_TTL, COMPONENT_DENY_TTL = 10.0, 10.0, 10.0
# A rejected token is asked again soon: it may belong to a ServiceAccount being created right now.
TOKEN_FAILURE_TTL = 10.0
CACHE_ENTRIES = 4096  # bounds memory when a client sprays random tokens


class AuthenticationError(Exception):
    """The API server could not be asked whether a token is valid."""


class AuthorizationError(Exception):
    """The API server could not be asked whether a request is allowed."""


@dataclass(frozen=True)
class UserInfo:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict, compare=False)


ANONYMOUS = UserInfo(ANONYMOUS_USER, "", (UNAUTHENTICATED_GROUP,))
# Where a handler finds who is asking: request[USER].
USER = web.RequestKey("user", UserInfo)


@dataclass(frozen=True)
class Attributes:
    """What a request asks to do, in the terms of a SubjectAccessReview: a resource request when
    ``resource`` is set (the kubelet's ``nodes/proxy``), else a non-resource one (``get /metrics``)."""

    user: UserInfo
    verb: str
    path: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    namespace: str = ""
    group: str = ""
    version: str = ""

    @property
    def resource_request(self) -> bool:
        return bool(self.resource)

    def review_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"user": self.user.name, "groups": list(self.user.groups)}
        if self.user.uid:
            spec["uid"] = self.user.uid
        if self.user.extra:
            spec["extra"] = {k: list(v) for k, v in sorted(self.user.extra.items())}
        if self.resource_request:
            attrs = {"namespace": self.namespace, "verb": self.verb, "group": self.group, "version": self.version,
                     "resource": self.resource, "subresource": self.subresource, "name": self.name}
            spec["resourceAttributes"] = {k: v for k, v in attrs.items() if v}
        else:
            spec["nonResourceAttributes"] = {"path": self.path, "verb": self.verb}
        return spec


def non_resource_attributes(request: web.Request, user: UserInfo) -> Attributes:
    """A component's own paths: the lower-cased HTTP method on the path, as kube-apiserver's request info."""
    return Attributes(user=user, verb=request.method.lower(), path=request.path)


# ---- a small TTL cache ------------------------------------------------------------------------------

class TTLCache:
    """Answers kept for a time each, least recently used dropped first; concurrent misses of one key
    share a single computation (the API is asked once however many requests arrive together)."""

    def __init__(self, max_entries: int = CACHE_ENTRIES, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[Any]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> tuple[bool, Any]:
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        expires, value = entry
        if self.clock() >= expires:
            del self._entries[key]
            return False, None
        self._entries.move_to_end(key)
        return True, value

    def put(self, key: str, value: Any, ttl: float) -> None:
        if ttl <= 0:
            return
        self._entries[key] = (self.clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def get_or_compute(self, key: str, compute: Callable[[], Awaitable[Any]],
                             ttl_of: Callable[[Any], float]) -> Any:
        found, value = self.get(key)
        if found:
            self.hits += 1
            return value
        pending = self._inflight.get(key)
        if pending is not None:
            self.hits += 1
            return await asyncio.shield(pending)
        self.misses += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value = await compute()
        except BaseException as e:
            # Errors are not cached: the next request asks again.
            if not future.done():
                future.set_exception(e)
                future.exception()  # marks it retrieved when nobody else waited on it
            raise
        finally:
            self._inflight.pop(key, None)
        future.set_result(value)
        self.put(key, value, ttl_of(value))
        return value


# ---- authentication ---------------------------------------------------------------------------------

def _with_authenticated(groups: Iterable[str]) -> tuple[str, ...]:
    out = [g for g in groups if g]
    if AUTHENTICATED_GROUP not in out:
        out.append(AUTHENTICATED_GROUP)
    return tuple(dict.fromkeys(out))


def user_from_peercert(peer: Mapping[str, Any] | None) -> UserInfo | None:
    """The user a verified client certificate names (Kubernetes' x509 authenticator)."""
    if not peer:
        return None
    cn, orgs = "", []
    for rdn in peer.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationName":
                orgs.append(value)
    return UserInfo(cn, "", _with_authenticated(orgs)) if cn else None


class TokenReviewer:
    """Bearer tokens checked by the API server (TokenReview), the answers cached for a while."""

    def __init__(self, client: APIClient, *, ttl: float = COMPONENT_TOKEN_TTL,
                 failure_ttl: float = TOKEN_FAILURE_TTL, audiences: Iterable[str] = (),
                 cache: TTLCache | None = None) -> None:
        self.client = client
        self.ttl = ttl
        self.failure_ttl = min(failure_ttl, ttl)
        self.audiences = tuple(audiences)
        self.cache = cache or TTLCache()

    async def review(self, token: str) -> UserInfo | None:
        # The cache key is a digest: no token stays in memory longer than the request carrying it.
        key = hashlib.sha256("\0".join((token, *self.audiences)).encode()).hexdigest()
        return await self.cache.get_or_compute(key, lambda: self._ask(token),
                                               lambda user: self.ttl if user is not None else self.failure_ttl)

    async def _ask(self, token: str) -> UserInfo | None:
        spec: dict[str, Any] = {"token": token}
        if self.audiences:
            spec["audiences"] = list(self.audiences)
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        try:
            review = await self.client.request("POST", TOKEN_REVIEWS, body=body)
        except (ApiStatusError, APIConnectionError, TimeoutError) as e:
            raise AuthenticationError(f"TokenReview failed: {e}") from None
        status = (review or {}).get("status") or {}
        if not status.get("authenticated"):
            return None
        user = status.get("user") or {}
        if not user.get("username"):
            return None
        extra = {str(k): tuple(str(x) for x in v or ()) for k, v in (user.get("extra") or {}).items()}
        return UserInfo(str(user["username"]), str(user.get("uid") or ""),
                        _with_authenticated(str(g) for g in user.get("groups") or ()), extra)


# ---- authorization ----------------------------------------------------------------------------------

class Authorizer(Protocol):
    async def authorize(self, attrs: Attributes) -> tuple[bool, str]: ...


class AlwaysAllowAuthorizer:
    """``--authorization-mode=AlwaysAllow``: every authenticated request may do everything."""

    async def authorize(self, attrs: Attributes) -> tuple[bool, str]:
        return True, ""


class WebhookAuthorizer:
    """``--authorization-mode=Webhook``: a SubjectAccessReview per distinct request, cached."""

    def __init__(self, client: APIClient, *, allow_ttl: float = COMPONENT_ALLOW_TTL,
                 deny_ttl: float = COMPONENT_DENY_TTL, cache: TTLCache | None = None) -> None:
        self.client = client
        self.allow_ttl = allow_ttl
        self.deny_ttl = deny_ttl
        self.cache = cache or TTLCache()

    async def authorize(self, attrs: Attributes) -> tuple[bool, str]:
        spec = attrs.review_spec()
        key = hashlib.sha256(orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)).hexdigest()
        return await self.cache.get_or_compute(key, lambda: self._ask(spec),
                                               lambda d: self.allow_ttl if d[0] else self.deny_ttl)

    async def _ask(self, spec: dict[str, Any]) -> tuple[bool, str]:
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
        try:
            review = await self.client.request("POST", SUBJECT_ACCESS_REVIEWS, body=body)
        except (ApiStatusError, APIConnectionError, TimeoutError) as e:
            raise AuthorizationError(f"SubjectAccessReview failed: {e}") from None
        status = (review or {}).get("status") or {}
        return bool(status.get("allowed")) and not status.get("denied"), str(status.get("reason") or "")


def build_authorizer(mode: str, client: APIClient | None, *, allow_ttl: float = COMPONENT_ALLOW_TTL,
                     deny_ttl: float = COMPONENT_DENY_TTL) -> Authorizer:
    if mode == "AlwaysAllow":
        return AlwaysAllowAuthorizer()
    if mode == "Webhook":
        if client is None:
            raise ValueError("--authorization-mode=Webhook needs a kubeconfig to reach the API server")
        return WebhookAuthorizer(client, allow_ttl=allow_ttl, deny_ttl=deny_ttl)
    raise ValueError(f"--authorization-mode: unknown mode {mode!r} (known: {', '.join(AUTHORIZATION_MODES)})")


def parse_always_allow_paths(text: str) -> tuple[str, ...]:
    """``/healthz,/readyz`` -> paths; a trailing ``*`` matches a prefix (Kubernetes allows it only there)."""
    paths = tuple(p.strip() for p in text.split(",") if p.strip())
    for p in paths:
        if not p.startswith("/"):
            raise ValueError(f"always-allow path {p!r} must start with /")
        if "*" in p[:-1]:
            raise ValueError(f"always-allow path {p!r}: * is only allowed at the end")
    return paths


def check_client_ca_file(path: Path) -> None:
    """A CA bundle ssl can load, checked at start rather than found broken at the first handshake."""
    try:
        ssl.create_default_context(cafile=str(path))
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"not a PEM CA bundle ({e})") from None


def auth_flag_values(client_ca_file: Path | None, always_allow_paths: str) -> tuple[Path | None, tuple[str, ...]]:
    """The components' --client-ca-file and --authorization-always-allow-paths, checked; ValueError names
    the flag."""
    if client_ca_file is not None:
        try:
            check_client_ca_file(client_ca_file)
        except ValueError as e:
            raise ValueError(f"--client-ca-file {client_ca_file}: {e}") from None
    try:
        return client_ca_file, parse_always_allow_paths(always_allow_paths)
    except ValueError as e:
        raise ValueError(f"--authorization-always-allow-paths: {e}") from None


# ---- answers ----------------------------------------------------------------------------------------

def _status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, **({"details": {}} if code == 403 else {}), "code": code}
    return web.Response(status=code, body=orjson.dumps(body), content_type="application/json",
                        headers={"X-Content-Type-Options": "nosniff"})


def status_unauthorized() -> web.Response:
    """kube-apiserver's (and every component's) 401."""
    return _status(401, "Unauthorized", "Unauthorized")


def status_forbidden(attrs: Attributes, reason: str) -> web.Response:
    """The generic API server's 403, here for non-resource paths such as ``/metrics``."""
    message = f'forbidden: User "{attrs.user.name}" cannot {attrs.verb} path "{attrs.path}"'
    if attrs.resource_request:
        what = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
        message = (f'{attrs.resource} "{attrs.name}" is forbidden: User "{attrs.user.name}" cannot {attrs.verb} '
                   f'resource "{what}" in API group "{attrs.group}" at the cluster scope')
    return _status(403, "Forbidden", f"{message}: {reason}" if reason else message)


def status_authorization_error(attrs: Attributes, error: Exception) -> web.Response:
    return _status(500, "InternalError", "Internal Server Error: authorization could not be checked")


# ---- the whole ----------------------------------------------------------------------------------------

AttributesOf = Callable[[web.Request, UserInfo], Attributes]


class DelegatedAuth:
    """Who is asking (x509, token review, maybe anonymous) and whether they may (access review),
    as an aiohttp middleware."""

    def __init__(self, *, authorizer: Authorizer, client_ca_file: Path | None = None,
                 token_reviewer: TokenReviewer | None = None, anonymous: bool = False,
                 always_allow_paths: Iterable[str] = ()) -> None:
        self.authorizer = authorizer
        self.client_ca_file = client_ca_file
        self.token_reviewer = token_reviewer
        self.anonymous = anonymous
        self.always_allow_paths = tuple(always_allow_paths)

    @classmethod
    def for_component(cls, client: APIClient, *, client_ca_file: Path | None = None,
                      always_allow_paths: Iterable[str] = DEFAULT_ALWAYS_ALLOW_PATHS) -> DelegatedAuth:
        """kube-scheduler's and kube-controller-manager's defaults: both reviews through their own
        kubeconfig, 10 s caches, health paths open, everything else refused without credentials."""
        return cls(authorizer=WebhookAuthorizer(client), client_ca_file=client_ca_file,
                   token_reviewer=TokenReviewer(client), always_allow_paths=always_allow_paths)

    def configure_tls(self, ctx: ssl.SSLContext) -> None:
        """Ask for a client certificate without requiring one (a bearer token may come instead); one
        that the client CA did not sign, or that expired, fails the handshake."""
        if self.client_ca_file is None:
            return
        ctx.load_verify_locations(cafile=str(self.client_ca_file))
        ctx.verify_mode = ssl.CERT_OPTIONAL

    def always_allowed(self, path: str) -> bool:
        for allowed in self.always_allow_paths:
            if path == allowed or (allowed.endswith("*") and path.startswith(allowed[:-1])):
                return True
        return False

    async def authenticate(self, request: web.Request) -> UserInfo | None:
        """The request's user, or None (401). Raises AuthenticationError when the API cannot be asked."""
        transport = request.transport
        user = user_from_peercert(transport.get_extra_info("peercert") if transport is not None else None)
        if user is not None:
            return user
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token and self.token_reviewer is not None:
            return await self.token_reviewer.review(token)
        if header:
            return None  # credentials we cannot check are not anonymous
        return ANONYMOUS if self.anonymous else None

    def middleware(self, attributes_of: AttributesOf = non_resource_attributes, *,
                   unauthorized: Callable[[], web.Response] = status_unauthorized,
                   forbidden: Callable[[Attributes, str], web.Response] = status_forbidden,
                   failed: Callable[[Attributes, Exception], web.Response] = status_authorization_error) -> Any:
        @web.middleware
        async def auth(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                       ) -> web.StreamResponse:
            if self.always_allowed(request.path):
                return await handler(request)
            try:
                user = await self.authenticate(request)
            except AuthenticationError as e:
                log.warning("unable to authenticate the request: %s", e)
                user = None
            if user is None:
                return unauthorized()
            attrs = attributes_of(request, user)
            try:
                allowed, reason = await self.authorizer.authorize(attrs)
            except AuthorizationError as e:
                log.warning("authorization error (user=%s, verb=%s, path=%s): %s", user.name, attrs.verb,
                            request.path, e)
                return failed(attrs, e)
            if not allowed:
                log.info("forbidden: user=%s verb=%s path=%s resource=%s/%s", user.name, attrs.verb, request.path,
                         attrs.resource, attrs.subresource)
                return forbidden(attrs, reason)
            request[USER] = user
            return await handler(request)

        return auth
