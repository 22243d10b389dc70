"""The root CA publisher (kube-controller-manager's ``root-ca-cert-publisher``): every active namespace
holds a ConfigMap ``kube-root-ca.crt`` whose ``ca.crt`` is the cluster CA, so that a pod can verify the
API server it reaches through the ``kubernetes`` Service (the ServiceAccount admission mounts it into
every pod next to the token). Deleted, it comes back; edited, its data is put back.

The CA comes from the ``root_ca_pem`` option (``--root-ca-file``, else the CA of the controller-manager's
kubeconfig); without one the controller does nothing, as Kubernetes does not start it then.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from minikube_py.client.rest import ApiStatusError

from .base import Controller, ControllerContext

CONFIGMAP_NAME = "kube-root-ca.crt"
CA_KEY = "ca.crt"
DESCRIPTION_ANNOTATION = "kubernetes.io/description"
# Kubernetes' own wording, so `kubectl describe` reads the same.
DESCRIPTION = ("Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints "
               "such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across "
               "distributions of Kubernetes clusters.")


class RootCACertPublisher(Controller):
    name = "root-ca-cert-publisher"
    workers = 2

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        pem = ctx.options.get("root_ca_pem") or b""
        self.ca = pem.decode() if isinstance(pem, bytes) else str(pem)
        self.namespaces = ctx.informers.informer("namespaces")
        # Only the one ConfigMap per namespace: the cache stays small however many ConfigMaps there are.
        self.configmaps = ctx.informers.informer("configmaps", field_selector=f"metadata.name={CONFIGMAP_NAME}")
        self.namespaces.add_handlers(on_add=self._namespace, on_update=lambda _old, new: self._namespace(new))
        self.configmaps.add_handlers(on_update=lambda _old, new: self._configmap(new), on_delete=self._configmap)

    def _namespace(self, ns: dict[str, Any]) -> None:
        self.enqueue_key(str(ns["metadata"]["name"]))

    def _configmap(self, cm: dict[str, Any]) -> None:
        meta = cm.get("metadata") or {}
        if meta.get("name") == CONFIGMAP_NAME and meta.get("namespace"):
            self.enqueue_key(str(meta["namespace"]))

    async def run(self) -> None:
        if not self.ca:
            self.log.warning("no root CA (--root-ca-file, or a CA in the kubeconfig): not publishing %s",
                             CONFIGMAP_NAME)
            # Idle rather than return: a controller that ends takes the controller-manager down with it.
            await asyncio.Event().wait()
        await asyncio.gather(self.namespaces.wait_synced(), self.configmaps.wait_synced())
        await super().run()

    def desired_data(self) -> dict[str, str]:
        return {CA_KEY: self.ca}

    async def reconcile(self, key: str) -> None:
        ns = self.namespaces.get(key)
        if ns is None or ns["metadata"].get("deletionTimestamp") \
                or (ns.get("status") or {}).get("phase", "Active") != "Active":
            return  # nothing new may be created in a namespace that is going
        data = self.desired_data()
        cached = self.configmaps.get(f"{key}/{CONFIGMAP_NAME}")
        try:
            if cached is None:
                await self.client.create("configmaps", {
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": CONFIGMAP_NAME, "namespace": key,
                                 "annotations": {DESCRIPTION_ANNOTATION: DESCRIPTION}},
                    "data": data}, key)
                self.log.info("created configmap %s/%s", key, CONFIGMAP_NAME)
                return
            annotations = cached["metadata"].get("annotations") or {}
            if cached.get("data") == data and not cached.get("binaryData") and annotations.get(DESCRIPTION_ANNOTATION):
                return
            cm = copy.deepcopy(cached)  # the cache's copy is shared: never change it in place
            cm["data"] = data
            cm.pop("binaryData", None)
            cm["metadata"]["annotations"] = {**annotations, DESCRIPTION_ANNOTATION: DESCRIPTION}
            await self.client.update("configmaps", cm)
            self.log.info("repaired configmap %s/%s", key, CONFIGMAP_NAME)
        except ApiStatusError as e:
            # 403/404: the namespace is going or gone. 409 (exists, or a stale resourceVersion) is raised
            # to come back with back-off, by when the cache has caught up.
            if e.code in (403, 404) and self.namespaces.get(key) is None:
                return
            if e.code == 403 and "being terminated" in str(e):
                return
            raise
