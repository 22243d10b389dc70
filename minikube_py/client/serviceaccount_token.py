"""Acting as a ServiceAccount with tokens from the TokenRequest API, refreshed before they expire.

This is what kube-controller-manager's ``--use-service-account-credentials`` rests on (its dynamic
client builder): a privileged *root* client makes sure the ServiceAccount exists and asks
``serviceaccounts/<name>/token`` for a token; the controller's own client carries only that token
(no client certificate, which the API server would try first) and fetches a new one once 80% of the
old one's lifetime has passed — the 20% leeway client-go's token source keeps. A 401 answer (the
account was deleted and made anew, the signing key changed) drops the cached token, and the request
is tried once more with a fresh one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from minikube_py.api.resources import ResourceInfo

from .rest import APIClient, ApiStatusError

# kube-controller-manager asks for one-hour tokens for its controllers.
DEFAULT_EXPIRATION_SECONDS = 3600
LEEWAY = 0.2


class ServiceAccountTokenSource:
    """Tokens for one ServiceAccount, cached until 80% of their lifetime has passed."""

    def __init__(self, root: APIClient, namespace: str, name: str, *,
                 expiration_seconds: int = DEFAULT_EXPIRATION_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self.namespace = namespace
        self.name = name
        self.expiration_seconds = expiration_seconds
        self.clock = clock
        self._token: str | None = None
        self._issued_at = 0.0
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0  # how many tokens were requested: refreshes show up here

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"

    def _fresh(self) -> str | None:
        return self._token if self._token is not None and self.clock() < self._refresh_at else None

    async def token(self) -> str:
        token = self._fresh()
        if token is not None:
            return token
        async with self._lock:  # one TokenRequest however many requests wait for it
            token = self._fresh()
            if token is None:
                token = await self._fetch()
            return token

    def reset(self, older_than: float) -> None:
        """Forget the token if it was issued at or before ``older_than`` (a newer one is already fine)."""
        if self._token is not None and self._issued_at <= older_than:
            self._token = None

    async def ensure_account(self) -> None:
        """Get the ServiceAccount, creating it when missing (as kube-controller-manager does on every fetch)."""
        if await self.root.get_or_none("serviceaccounts", self.name, self.namespace) is not None:
            return
        try:
            await self.root.create("serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount",
                                                       "metadata": {"name": self.name}}, self.namespace)
        except ApiStatusError as e:
            if e.code != 409:  # another manager made it a moment ago
                raise

    async def _fetch(self) -> str:
        await self.ensure_account()
        now = self.clock()
        answer = await self.root.request(
            "POST", self.root.path("serviceaccounts", self.namespace, self.name, "token"),
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                  "spec": {"expirationSeconds": self.expiration_seconds}})
        status = (answer or {}).get("status") or {}
        token, expiry = status.get("token"), status.get("expirationTimestamp")
        if not isinstance(token, str) or not token or not isinstance(expiry, str):
            raise ValueError(f"the token request for {self.user} returned no token")
        expires = dt.datetime.fromisoformat(expiry).timestamp()
        if expires <= now:
            raise ValueError(f"the token request for {self.user} returned a token that expired at {expiry}")
        self.fetches += 1
        self._token, self._issued_at = token, now
        self._refresh_at = now + (expires - now) * (1 - LEEWAY)
        return token


class ServiceAccountClient(APIClient):
    """An APIClient that authenticates with a ServiceAccountTokenSource's current token only."""

    def __init__(self, server: str, tokens: ServiceAccountTokenSource, *, ssl_context: ssl.SSLContext | None = None,
                 user_agent: str = "minikube-py", **kwargs: Any) -> None:
        super().__init__(server, ssl_context=ssl_context, user_agent=user_agent, **kwargs)
        self.tokens = tokens

    async def _authorize(self) -> float:
        """Put the current token on the session; returns when it was asked for (for reset())."""
        started = self.tokens.clock()
        value = f"Bearer {await self.tokens.token()}"
        # The session copies the headers when it is made: set both so that a later session has it too.
        self._headers["Authorization"] = value
        if self._session is not None:
            self._session.headers["Authorization"] = value
        return started

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        started = await self._authorize()
        try:
            return await super().request(method, path, **kwargs)
        except ApiStatusError as e:
            if e.code != 401:
                raise
        self.tokens.reset(started)
        await self._authorize()
        return await super().request(method, path, **kwargs)

    async def watch(self, res: str | ResourceInfo, namespace: str | None = None,
                    **kwargs: Any) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        started = await self._authorize()
        try:
            async for event in super().watch(res, namespace, **kwargs):
                yield event
        except ApiStatusError as e:
            if e.code == 401:
                self.tokens.reset(started)  # the caller re-lists; that request gets a fresh token
            raise
