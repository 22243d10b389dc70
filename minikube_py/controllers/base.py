"""What every controller shares: one informer per resource (shared, as client-go's
SharedInformerFactory does), an event recorder, and the sample-controller shape — handlers only
enqueue keys, workers reconcile one key at a time with back-off on error."""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from minikube_py.api.resources import ResourceInfo
from minikube_py.client.informer import Informer, key_of
from minikube_py.client.rest import APIClient, resource
from minikube_py.client.workqueue import ExponentialBackoff, WorkQueue, run_workers

from .events import EventRecorder


class SharedInformers:
    """One informer per (resource, namespace, selectors): controllers watching the same kind share a
    cache and a watch instead of each opening their own."""

    def __init__(self, client: APIClient) -> None:
        self.client = client
        self._informers: dict[tuple[str, str | None, str | None, str | None], Informer] = {}
        self._started: set[Informer] = set()

    def informer(self, res: str | ResourceInfo, namespace: str | None = None, *,
                 label_selector: str | None = None, field_selector: str | None = None) -> Informer:
        info = resource(res)
        k = (info.qualified, namespace, label_selector, field_selector)
        inf = self._informers.get(k)
        if inf is None:
            inf = self._informers[k] = Informer(self.client, info, namespace, label_selector=label_selector,
                                                field_selector=field_selector)
        return inf

    async def start(self) -> None:
        for inf in list(self._informers.values()):
            if inf not in self._started:
                self._started.add(inf)
                await inf.start()

    async def wait_synced(self, timeout: float | None = None) -> bool:
        results = await asyncio.gather(*(i.wait_synced(timeout) for i in self._informers.values()))
        return all(results)

    async def stop(self) -> None:
        for inf in self._informers.values():
            await inf.stop()


@dataclass
class ControllerContext:
    client: APIClient
    informers: SharedInformers
    events: EventRecorder
    # Controller options by name, e.g. node_monitor_grace_period (seconds); each controller documents its own.
    options: dict[str, Any] = field(default_factory=dict)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("minikube_py.controllers"))


class Controller(abc.ABC):
    """Subclasses set ``name``, register informer handlers in ``__init__`` that only call
    ``self.enqueue``/``self.enqueue_key``, and implement ``reconcile(key)``. Reconcile reads from
    informer caches, never mutates a cached object (copy before changing), writes status last, and
    raises to be retried with back-off."""

    name: str = "controller"
    workers: int = 2

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.log = ctx.log.getChild(self.name)
        self.queue = WorkQueue(self.name, ExponentialBackoff(base=0.005, cap=60.0))

    def enqueue(self, obj: dict[str, Any]) -> None:
        self.queue.add(key_of(obj))

    def enqueue_key(self, key: str) -> None:
        self.queue.add(key)

    def handlers(self, key_fn: Callable[[dict[str, Any]], str | None] | None = None) -> dict[str, Callable[..., None]]:
        """add/update/delete handlers that enqueue ``key_fn(obj)`` (default: the object's own key)."""
        fn = key_fn or key_of

        def add(obj: dict[str, Any]) -> None:
            k = fn(obj)
            if k:
                self.queue.add(k)

        def update(old: dict[str, Any], new: dict[str, Any]) -> None:
            add(new)

        return {"on_add": add, "on_update": update, "on_delete": add}

    @abc.abstractmethod
    async def reconcile(self, key: str) -> None: ...

    async def run(self) -> None:
        try:
            await run_workers(self.queue, self._reconcile_logged, self.workers, log=self.log)
        finally:
            self.queue.shutdown()

    async def _reconcile_logged(self, key: str) -> None:
        # run_workers logs failures (409s at debug) and requeues with back-off.
        await self.reconcile(key)

    def shutdown(self) -> None:
        self.queue.shutdown()


def controller_ref(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The ownerReference with controller: true, if any."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref
    return None


def owner_reference(owner: dict[str, Any], *, controller: bool = True, block: bool = True) -> dict[str, Any]:
    m = owner["metadata"]
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": m["name"], "uid": m["uid"],
            "controller": controller, "blockOwnerDeletion": block}
