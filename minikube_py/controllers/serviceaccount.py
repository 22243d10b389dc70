"""The ServiceAccount controller: every active namespace has a ``default`` ServiceAccount, made
again if someone deletes it (kube-controller-manager's serviceaccount-controller)."""

from __future__ import annotations

import asyncio
from typing import Any

from minikube_py.client.rest import ApiStatusError

from .base import Controller, ControllerContext

DEFAULT_NAME = "default"


class ServiceAccountController(Controller):
    name = "serviceaccount"
    workers = 3

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.namespaces = ctx.informers.informer("namespaces")
        self.accounts = ctx.informers.informer("serviceaccounts")
        self.namespaces.add_handlers(**self.handlers())
        # Only a deletion matters: that is when the account must come back.
        self.accounts.add_handlers(on_delete=self._account_deleted)

    def _account_deleted(self, sa: dict[str, Any]) -> None:
        meta = sa.get("metadata") or {}
        if meta.get("name") == DEFAULT_NAME and meta.get("namespace"):
            self.enqueue_key(str(meta["namespace"]))

    async def run(self) -> None:
        await asyncio.gather(self.namespaces.wait_synced(), self.accounts.wait_synced())
        await super().run()

    async def reconcile(self, key: str) -> None:
        ns = self.namespaces.get(key)
        if ns is None or ns["metadata"].get("deletionTimestamp") \
                or (ns.get("status") or {}).get("phase", "Active") != "Active":
            return
        if self.accounts.get(f"{key}/{DEFAULT_NAME}") is not None:
            return
        sa = {"apiVersion": "v1", "kind": "ServiceAccount",
              "metadata": {"name": DEFAULT_NAME, "namespace": key}}
        try:
            await self.client.create("serviceaccounts", sa, key)
        except ApiStatusError as e:
            # 409: it exists and the cache is behind; 403/404: the namespace is going or gone.
            if e.code in (403, 404, 409):
                return
            raise
        self.log.info("created serviceaccount %s/%s", key, DEFAULT_NAME)
