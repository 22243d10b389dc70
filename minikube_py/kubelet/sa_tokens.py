"""ServiceAccount tokens the kubelet asks for its pods' projected ``serviceAccountToken`` volumes, as
Kubernetes' kubelet token manager does: one TokenRequest per (account, audiences, lifetime, pod),
bound to the pod (so the token dies with it), cached, and requested again once 80 % of its lifetime
has passed or it is 24 hours old — whichever comes first, minus a few seconds of jitter so that many
pods started together do not all ask at once. A failed refresh keeps serving the cached token until
it expires.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from minikube_py.client.rest import APIConnectionError, ApiStatusError
from minikube_py.kubelet.envvars import ContainerConfigError

if TYPE_CHECKING:
    from minikube_py.client.rest import APIClient

log = logging.getLogger("minikube_py.kubelet.sa_tokens")

DEFAULT_EXPIRATION = 3600  # a projection without expirationSeconds (the API's default)
MAX_TTL = 24 * 3600.0
MAX_JITTER = 10.0
REFRESH_FRACTION = 0.8


class TokenError(ContainerConfigError):
    """No token could be had for a projection (the pod waits with this message)."""


@dataclass(frozen=True)
class _Key:
    namespace: str
    account: str
    audiences: tuple[str, ...]
    expiration: int
    pod_uid: str


@dataclass
class _Token:
    token: str
    issued: float
    expires: float


class TokenManager:
    """Tokens for the pods of one kubelet; ``clock`` is a hook for tests (seconds since the epoch)."""

    def __init__(self, client: APIClient, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.clock = clock
        self._cache: dict[_Key, _Token] = {}
        self.requests = 0  # TokenRequests made (for tests and metrics)

    async def token(self, pod: dict[str, Any], audiences: Sequence[str] = (),
                    expiration: int | None = None) -> str:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        namespace = str(meta.get("namespace") or "default")
        account = str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
        key = _Key(namespace, account, tuple(audiences), int(expiration or DEFAULT_EXPIRATION),
                   str(meta.get("uid") or ""))
        self._drop_expired()
        cached = self._cache.get(key)
        if cached is not None and not self._needs_refresh(cached):
            return cached.token
        try:
            fresh = await self._request(key, str(meta.get("name") or ""))
        except (ApiStatusError, APIConnectionError, TimeoutError, OSError) as e:
            if cached is None:
                raise TokenError(f'failed to fetch token for service account "{account}": {_reason(e)}') from None
            if cached.expires <= self.clock():
                raise TokenError(f'token for service account "{account}" expired and refresh failed: '
                                 f"{_reason(e)}") from None
            log.warning("pod %s/%s: could not refresh the token of service account %s (the cached one is "
                        "valid until %s): %s", namespace, meta.get("name"), account, _rfc3339(cached.expires),
                        _reason(e))
            return cached.token
        self._cache[key] = fresh
        return fresh.token

    def forget_pod(self, uid: str) -> None:
        """The pod is gone: its tokens are useless (the API server refuses them) and leave the cache."""
        for key in [k for k in self._cache if k.pod_uid == uid]:
            del self._cache[key]

    def _needs_refresh(self, t: _Token) -> bool:
        now = self.clock()
        jitter = random.uniform(0, MAX_JITTER)
        if now > t.issued + MAX_TTL - jitter:
            return True
        return now > t.expires - (1 - REFRESH_FRACTION) * (t.expires - t.issued) - jitter

    def _drop_expired(self) -> None:
        now = self.clock()
        for key in [k for k, t in self._cache.items() if t.expires <= now]:
            del self._cache[key]

    async def _request(self, key: _Key, pod_name: str) -> _Token:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": list(key.audiences), "expirationSeconds": key.expiration,
                         "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod_name,
                                            "uid": key.pod_uid}}}
        self.requests += 1
        out = await self.client.create("serviceaccounts", body, key.namespace, subresource_of=key.account,
                                       subresource="token")
        status, spec = out.get("status") or {}, out.get("spec") or {}
        token = status.get("token")
        if not isinstance(token, str) or not token:
            raise TokenError(f'the TokenRequest for service account "{key.account}" returned no token')
        # The server decides the lifetime (it may shorten or extend what was asked): go by its answer.
        seconds = spec.get("expirationSeconds") if isinstance(spec.get("expirationSeconds"), int) else key.expiration
        expires = _parse_rfc3339(status.get("expirationTimestamp")) or self.clock() + seconds
        return _Token(token, expires - seconds, expires)


def _reason(e: BaseException) -> str:
    return str(e) or type(e).__name__


def _rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(int(t), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_rfc3339(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None
