"""The one HTTP client every component uses to reach the API server (never the store).

One aiohttp session per client keeps a pool of keep-alive connections. Requests are shaped as
client-go shapes them: ``/api/v1/...`` for the core group, ``/apis/<group>/<version>/...`` for the
rest, JSON bodies, the patch type in ``Content-Type``. Every non-2xx answer becomes an
:class:`ApiStatusError` built from the server's ``Status`` body (or a synthesized one).

Retries, as client-go's ``rest`` package does them: a 429 (or a 5xx carrying ``Retry-After``) is
retried for every verb, since the server did not act on the request; a connection that could not be
opened is retried for every verb (nothing was sent); a connection lost mid-request is retried only
for GET, because repeating a write that may have landed turns its success into a 409 or a 404.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from minikube_py.api.resources import RESOURCES, ResourceInfo, lookup

log = logging.getLogger(__name__)

PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",
}

# The reasons client-go's errors package gives a status code when the body is not a Status.
_REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
    406: "NotAcceptable", 409: "Conflict", 410: "Expired", 413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
    503: "ServiceUnavailable", 504: "Timeout",
}
MAX_RETRIES = 5
# Retry-After longer than this is capped: a component should rather surface the error than stall.
MAX_RETRY_AFTER = 10.0
# A watch event larger than this is refused rather than buffered without bound (etcd's own value
# limit is 1.5 MiB; this leaves room for JSON overhead many times over).
MAX_WATCH_LINE = 64 * 1024 * 1024


class ApiStatusError(Exception):
    """A non-2xx answer from the API server, carrying its ``Status`` object."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status
        self.code = int(status.get("code") or 0)
        self.reason = str(status.get("reason") or "")
        self.message = str(status.get("message") or "")
        super().__init__(f"{self.code} {self.reason}: {self.message}")

    @property
    def retry_after(self) -> float | None:
        seconds = (self.status.get("details") or {}).get("retryAfterSeconds")
        return float(seconds) if isinstance(seconds, (int, float)) else None


class APIConnectionError(ConnectionError):
    """The API server could not be reached, or the connection broke, after the retries allowed."""


def synthesized_status(code: int, body: str = "") -> dict[str, Any]:
    """The ``Status`` client-go makes up for an error answer whose body is not a Status."""
    reason = _REASONS.get(code, "Unknown")
    text = " ".join(body.split())[:512]
    message = f"the server responded with the status code {code} ({reason})"
    if text:
        message += f": {text}"
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def resource(spec: str | ResourceInfo) -> ResourceInfo:
    """A served resource from ``"pods"``, ``"deployments.apps"``, ``"apps/v1/deployments"``, ``"v1/pods"``,
    a kind, a singular or a short name (as kubectl resolves them), or a ResourceInfo as it is."""
    if isinstance(spec, ResourceInfo):
        return spec
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"a resource is a name like 'pods' or 'deployments.apps', got {spec!r}")
    if "/" in spec:
        parts = spec.split("/")
        info = None
        if len(parts) == 2:
            info = lookup("", parts[0], parts[1])
        elif len(parts) == 3:
            info = lookup(parts[0], parts[1], parts[2])
        if info is None:
            raise ValueError(f"the server does not serve resource {spec!r} (give group/version/plural)")
        return info
    name, _, group = spec.partition(".")
    low = name.lower()
    candidates = [r for r in RESOURCES if (not group or r.group == group)
                  and low in (r.plural, r.singular, r.kind.lower(), *r.short_names)]
    if not candidates:
        raise ValueError(f"the server does not serve resource {spec!r}")
    # As kubectl: the core group wins a name it shares with another group.
    candidates.sort(key=lambda r: r.group != "")
    return candidates[0]


class _TokenBucket:
    """client-go's flowcontrol token bucket: ``qps`` tokens a second, up to ``burst`` saved up."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self.last = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        async with self._lock:  # waiters are served in order
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.qps)
            self.last = now
            if self.tokens < 1:
                await asyncio.sleep((1 - self.tokens) / self.qps)
                self.tokens = 1.0
                self.last = time.monotonic()
            self.tokens -= 1


class APIClient:
    """An API server client: CRUD, list (paged), watch and subresources, all Kubernetes JSON."""

    def __init__(
        self,
        server: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        headers: dict[str, str] | None = None,
        user_agent: str = "minikube-py",
        qps: float = 0,
        burst: int = 0,
        timeout: float = 30.0,
    ) -> None:
        if not server.startswith(("http://", "https://")):
            raise ValueError(f"server must be an http(s) URL, got {server!r}")
        if qps < 0 or burst < 0 or timeout <= 0:
            raise ValueError("qps and burst must not be negative; timeout must be positive")
        self.server = server.rstrip("/")
        self.timeout = timeout
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._headers = {"User-Agent": user_agent, "Accept": "application/json", **(headers or {})}
        self._limiter = _TokenBucket(qps, burst or max(1, int(qps))) if qps > 0 else None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @classmethod
    def from_kubeconfig(cls, path: str | Path | None = None, *, user_agent: str = "minikube-py") -> APIClient:
        from .kubeconfig import load_kubeconfig

        cfg = load_kubeconfig(Path(path) if path is not None else None)
        return cls(cfg.server, ssl_context=cfg.ssl_context(), headers=cfg.auth_headers(),
                   user_agent=user_agent)

    # ---- plumbing --------------------------------------------------------------------------------

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("this APIClient is closed")
        if self._session is None:
            # Created lazily: a session must be made inside the event loop that uses it.
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=100, keepalive_timeout=60),
            )
        return self._session

    def path(self, res: str | ResourceInfo, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
        """The URL path of a collection, an object or an object's subresource."""
        info = resource(res)
        base = f"/apis/{info.group}/{info.version}" if info.group else f"/api/{info.version}"
        if info.namespaced and namespace:
            base += f"/namespaces/{_segment(namespace, 'namespace')}"
        base += f"/{info.plural}"
        if name is not None:
            base += f"/{_segment(name, 'name')}"
            if subresource:
                base += f"/{_segment(subresource, 'subresource')}"
        elif subresource:
            raise ValueError("a subresource needs an object name")
        return base

    async def request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                      body: Any = None, content_type: str = "application/json") -> Any:
        """One API call with rate limiting and retries; the decoded JSON answer (None when empty)."""
        data = None
        headers: dict[str, str] = {}
        if body is not None:
            data = body if isinstance(body, bytes) else orjson.dumps(body)
            headers["Content-Type"] = content_type
        attempt = 0
        while True:
            attempt += 1
            if self._limiter is not None:
                await self._limiter.take()
            try:
                async with self._get_session().request(
                    method, self.server + path, params=params, data=data, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                ) as resp:
                    raw = await resp.read()
                    if 200 <= resp.status < 300:
                        return orjson.loads(raw) if raw else None
                    err = ApiStatusError(_status_of(resp.status, raw))
                    delay = _retry_delay(resp, err)
            except aiohttp.ClientConnectorError as e:
                # Nothing reached the server: safe to repeat for any verb.
                if attempt > MAX_RETRIES:
                    raise APIConnectionError(f"{method} {self.server}{path}: {e}") from e
                await asyncio.sleep(_backoff(attempt))
                continue
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as e:
                if method != "GET" or attempt > MAX_RETRIES:
                    raise APIConnectionError(f"{method} {self.server}{path}: {e}") from e
                await asyncio.sleep(_backoff(attempt))
                continue
            except TimeoutError as e:
                raise TimeoutError(f"{method} {self.server}{path}: no answer within {self.timeout}s") from e
            if delay is None or attempt > MAX_RETRIES:
                raise err
            log.debug("%s %s: %s; retrying in %.2fs", method, path, err, delay)
            await asyncio.sleep(delay)

    # ---- verbs -----------------------------------------------------------------------------------

    async def get(self, res: str | ResourceInfo, name: str, namespace: str | None = None, *,
                  subresource: str | None = None) -> dict[str, Any]:
        return await self.request("GET", self.path(res, namespace, name, subresource))

    async def get_or_none(self, res: str | ResourceInfo, name: str, namespace: str | None = None
                          ) -> dict[str, Any] | None:
        try:
            return await self.get(res, name, namespace)
        except ApiStatusError as e:
            if e.code == 404:
                return None
            raise

    async def list(self, res: str | ResourceInfo, namespace: str | None = None, *,
                   label_selector: str | None = None, field_selector: str | None = None, limit: int = 0,
                   continue_token: str | None = None, resource_version: str | None = None) -> dict[str, Any]:
        params = _query(labelSelector=label_selector, fieldSelector=field_selector,
                        limit=str(limit) if limit else None, resourceVersion=resource_version)
        if continue_token:
            params["continue"] = continue_token
        return await self.request("GET", self.path(res, namespace), params=params)

    async def list_all(self, res: str | ResourceInfo, namespace: str | None = None, *,
                       label_selector: str | None = None, field_selector: str | None = None,
                       page_size: int = 500) -> tuple[list[dict[str, Any]], str]:
        """Every page of a list: the items (with ``apiVersion`` and ``kind`` filled in) and the
        resourceVersion of the list, from which a watch continues without a gap."""
        info = resource(res)
        items: list[dict[str, Any]] = []
        token: str | None = None
        rv = ""
        while True:
            page = await self.list(info, namespace, label_selector=label_selector,
                                   field_selector=field_selector, limit=page_size, continue_token=token)
            for item in page.get("items") or ():
                item.setdefault("apiVersion", info.api_version)
                item.setdefault("kind", info.kind)
                items.append(item)
            meta = page.get("metadata") or {}
            # Every page of one paged list is served at the first page's revision.
            rv = rv or str(meta.get("resourceVersion") or "")
            token = meta.get("continue") or None
            if not token:
                return items, rv

    async def create(self, res: str | ResourceInfo, obj: dict[str, Any], namespace: str | None = None, *,
                     subresource_of: str | None = None, subresource: str | None = None,
                     field_manager: str | None = None) -> dict[str, Any]:
        """POST ``obj`` to the collection (or, with ``subresource_of=name``, to that object's
        ``subresource``, e.g. a Binding or an Eviction of a pod)."""
        info = resource(res)
        if namespace is None:
            namespace = (obj.get("metadata") or {}).get("namespace")
        if info.namespaced and not namespace:
            raise ValueError(f"{info.qualified} are namespaced: give a namespace")
        if (subresource_of is None) != (subresource is None):
            raise ValueError("subresource_of and subresource go together")
        path = self.path(info, namespace, subresource_of, subresource)
        return await self.request("POST", path, params=_query(fieldManager=field_manager), body=obj)

    async def update(self, res: str | ResourceInfo, obj: dict[str, Any], *,
                     subresource: str | None = None) -> dict[str, Any]:
        """PUT ``obj``; its ``metadata.resourceVersion`` makes the write conditional (409 when stale)."""
        info = resource(res)
        meta = obj.get("metadata") or {}
        if not meta.get("name"):
            raise ValueError("update needs metadata.name")
        if info.namespaced and not meta.get("namespace"):
            raise ValueError(f"{info.qualified} are namespaced: the object needs metadata.namespace")
        path = self.path(info, meta.get("namespace"), meta["name"], subresource)
        return await self.request("PUT", path, body=obj)

    async def update_status(self, res: str | ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
        return await self.update(res, obj, subresource="status")

    async def patch(self, res: str | ResourceInfo, name: str, patch: dict[str, Any] | list[Any],
                    namespace: str | None = None, *, patch_type: str = "merge",
                    subresource: str | None = None, field_manager: str | None = None,
                    force: bool = False) -> dict[str, Any]:
        content_type = PATCH_TYPES.get(patch_type)
        if content_type is None:
            raise ValueError(f"patch_type must be one of {', '.join(PATCH_TYPES)}, got {patch_type!r}")
        if patch_type == "apply" and not field_manager:
            raise ValueError("a server-side apply patch needs a field_manager")
        params = _query(fieldManager=field_manager, force="true" if force else None)
        # JSON is YAML, so an apply patch goes as JSON under the apply content type.
        return await self.request("PATCH", self.path(res, namespace, name, subresource), params=params,
                                  body=patch, content_type=content_type)

    async def delete(self, res: str | ResourceInfo, name: str, namespace: str | None = None, *,
                     grace_period_seconds: int | None = None, propagation_policy: str | None = None,
                     preconditions: dict[str, Any] | None = None) -> dict[str, Any] | None:
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        if propagation_policy is not None:
            body["propagationPolicy"] = propagation_policy
        if preconditions:
            body["preconditions"] = preconditions
        return await self.request("DELETE", self.path(res, namespace, name), body=body)

    async def watch(self, res: str | ResourceInfo, namespace: str | None = None, *,
                    resource_version: str | None = None, label_selector: str | None = None,
                    field_selector: str | None = None, timeout_seconds: int | None = None,
                    allow_bookmarks: bool = True) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Watch events as ``(type, object)`` until the server ends the stream. An ERROR event raises
        ApiStatusError (code 410 when the resourceVersion is too old: re-list); a broken connection
        raises APIConnectionError."""
        info = resource(res)
        params = _query(watch="true", resourceVersion=resource_version, labelSelector=label_selector,
                        fieldSelector=field_selector,
                        timeoutSeconds=str(timeout_seconds) if timeout_seconds is not None else None,
                        allowWatchBookmarks="true" if allow_bookmarks else None)
        url = self.server + self.path(info, namespace)
        if self._limiter is not None:
            await self._limiter.take()
        # No total timeout: a watch lasts as long as the server keeps it open.
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_connect=self.timeout)
        try:
            async with self._get_session().get(url, params=params, timeout=timeout) as resp:
                if resp.status != 200:
                    raise ApiStatusError(_status_of(resp.status, await resp.read()))
                buf = b""
                async for chunk in resp.content.iter_any():
                    buf += chunk
                    while (nl := buf.find(b"\n")) >= 0:
                        line, buf = buf[:nl], buf[nl + 1:]
                        if line.strip():
                            yield _watch_event(line)
                    if len(buf) > MAX_WATCH_LINE:
                        raise APIConnectionError(f"watch {url}: an event exceeds {MAX_WATCH_LINE} bytes")
                if buf.strip():
                    yield _watch_event(buf)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as e:
            raise APIConnectionError(f"watch {url}: {e}") from e

    # ---- lifecycle -------------------------------------------------------------------------------

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> APIClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _watch_event(line: bytes) -> tuple[str, dict[str, Any]]:
    try:
        ev = orjson.loads(line)
        kind, obj = ev["type"], ev["object"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise APIConnectionError(f"malformed watch event: {line[:200]!r}") from None
    if kind == "ERROR":
        raise ApiStatusError(obj if isinstance(obj, dict) and obj.get("kind") == "Status"
                             else synthesized_status(500, str(obj)))
    return kind, obj


def _status_of(code: int, raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        body.setdefault("code", code)
        return body
    return synthesized_status(code, raw.decode("utf-8", "replace"))


def _retry_delay(resp: aiohttp.ClientResponse, err: ApiStatusError) -> float | None:
    """How long to wait before repeating a request the server refused without acting on it."""
    header = resp.headers.get("Retry-After")
    if err.code != 429 and not (err.code >= 500 and header):
        return None
    seconds: float | None = None
    if header:
        try:
            seconds = float(header)
        except ValueError:
            seconds = None
    if seconds is None:
        seconds = err.retry_after if err.retry_after is not None else 1.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _backoff(attempt: int) -> float:
    base = min(0.05 * 2 ** (attempt - 1), 1.0)
    return base * (1 + random.random() * 0.2)


def _query(**params: str | None) -> dict[str, str]:
    return {k: v for k, v in params.items() if v is not None}


def _segment(value: str, what: str) -> str:
    if not isinstance(value, str) or not value or value in (".", "..") or "/" in value:
        raise ValueError(f"invalid {what} {value!r}")
    return quote(value, safe="")
