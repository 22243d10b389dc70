"""Which identity each controller acts as (kube-controller-manager's client builders).

Without ``--use-service-account-credentials`` every controller uses the controller-manager's own
client. With it, each controller gets a client of its own that authenticates as the ServiceAccount
``kube-system/<account>`` (Kubernetes' names: the deployment controller is ``deployment-controller``,
the node IPAM and lifecycle controllers share ``node-controller``), with tokens from the TokenRequest
API that the controller-manager's identity may ask for. The bootstrap policy binds
``system:controller:<account>`` to each account. Shared informers keep the controller-manager's own
client, as in Kubernetes, so the controllers' accounts need only the rights to write.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from minikube_py.client.kubeconfig import KubeConfig
from minikube_py.client.rest import APIClient
from minikube_py.client.serviceaccount_token import ServiceAccountClient, ServiceAccountTokenSource

CONTROLLER_NAMESPACE = "kube-system"


class ClientBuilder(Protocol):
    async def client(self, account: str) -> APIClient: ...

    async def close(self) -> None: ...


class SimpleClientBuilder:
    """Every controller uses the controller-manager's own client."""

    def __init__(self, root: APIClient) -> None:
        self.root = root

    async def client(self, account: str) -> APIClient:
        return self.root

    async def close(self) -> None:
        pass  # the root client belongs to the caller


class ServiceAccountClientBuilder:
    """One client per ServiceAccount in kube-system, made on first use and kept; the token is fetched
    right away so that a controller-manager that may not ask for it fails at start, not at first write."""

    def __init__(self, root: APIClient, kubeconfig: KubeConfig, *, namespace: str = CONTROLLER_NAMESPACE,
                 user_agent: str = "kube-controller-manager", expiration_seconds: int | None = None) -> None:
        self.root = root
        self.namespace = namespace
        self.user_agent = user_agent
        self.expiration_seconds = expiration_seconds
        # The CA and the server only: the controller-manager's client certificate must not travel along,
        # or the API server would authenticate the certificate instead of the token.
        self._anonymous = KubeConfig(server=kubeconfig.server, ca_pem=kubeconfig.ca_pem, insecure=kubeconfig.insecure)
        self._clients: dict[str, ServiceAccountClient] = {}
        self._lock = asyncio.Lock()

    async def client(self, account: str) -> APIClient:
        async with self._lock:
            existing = self._clients.get(account)
            if existing is not None:
                return existing
            kwargs = {} if self.expiration_seconds is None else {"expiration_seconds": self.expiration_seconds}
            tokens = ServiceAccountTokenSource(self.root, self.namespace, account, **kwargs)
            client = ServiceAccountClient(self._anonymous.server, tokens, ssl_context=self._anonymous.ssl_context(),
                                          user_agent=f"{self.user_agent}/{account}")
            await tokens.token()
            self._clients[account] = client
            return client

    @property
    def clients(self) -> dict[str, ServiceAccountClient]:
        return dict(self._clients)

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
