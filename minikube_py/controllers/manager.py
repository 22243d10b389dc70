"""The controller-manager: one process running every controller on shared informers, behind a
leader election so that of several copies only one acts (kube-controller-manager).

While standing by or leading it serves /healthz and /metrics on its component port (10257). The
leader builds the ControllerContext (client, shared informers, event recorder, options), starts
the enabled controllers and the informers they asked for, and runs until it loses the lease — then
``run`` returns 1 and the process should exit, as Kubernetes components do, so that its supervisor
restarts it as a fresh candidate.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from minikube_py.client.component import ComponentServer
from minikube_py.client.leaderelection import LeaderElector
from minikube_py.client.rest import APIClient

from .base import ControllerContext, SharedInformers
from .clientbuilder import ClientBuilder, SimpleClientBuilder
from .events import EventRecorder

log = logging.getLogger("minikube_py.controllers.manager")

COMPONENT = "kube-controller-manager"
LEASE_NAME = "kube-controller-manager"
DEFAULT_PORT = 10257


@dataclass(frozen=True)
class ControllerSpec:
    name: str  # kube-controller-manager's name for it
    module: str
    cls: str
    aliases: tuple[str, ...] = ()
    # The kube-system ServiceAccount it acts as with --use-service-account-credentials (Kubernetes'
    # name for it; empty means the same as the controller's name).
    service_account: str = ""

    @property
    def account(self) -> str:
        return self.service_account or self.name


# Names as kube-controller-manager 1.28+ spells them; the older short names work as aliases.
CONTROLLERS: tuple[ControllerSpec, ...] = (
    ControllerSpec("namespace-controller", "minikube_py.controllers.namespace", "NamespaceController",
                   ("namespace",)),
    ControllerSpec("serviceaccount-controller", "minikube_py.controllers.serviceaccount",
                   "ServiceAccountController", ("serviceaccount",), "service-account-controller"),
    ControllerSpec("node-ipam-controller", "minikube_py.controllers.nodeipam", "NodeIPAMController",
                   ("nodeipam",), "node-controller"),
    ControllerSpec("node-lifecycle-controller", "minikube_py.controllers.nodelifecycle",
                   "NodeLifecycleController", ("nodelifecycle",), "node-controller"),
    ControllerSpec("endpoints-controller", "minikube_py.controllers.endpoints", "EndpointsController",
                   ("endpoint", "endpoints"), "endpoint-controller"),
    ControllerSpec("endpointslice-controller", "minikube_py.controllers.endpointslice",
                   "EndpointSliceController", ("endpointslice",)),
    ControllerSpec("replicaset-controller", "minikube_py.controllers.replicaset", "ReplicaSetController",
                   ("replicaset",)),
    ControllerSpec("deployment-controller", "minikube_py.controllers.deployment", "DeploymentController",
                   ("deployment",)),
    ControllerSpec("daemonset-controller", "minikube_py.controllers.daemonset", "DaemonSetController",
                   ("daemonset",), "daemon-set-controller"),
    ControllerSpec("garbage-collector-controller", "minikube_py.controllers.garbagecollector",
                   "GarbageCollector", ("garbagecollector",), "generic-garbage-collector"),
    ControllerSpec("root-ca-certificate-publisher-controller", "minikube_py.controllers.rootca",
                   "RootCACertPublisher", ("root-ca-cert-publisher",), "root-ca-cert-publisher"),
)
_BY_NAME = {n: spec for spec in CONTROLLERS for n in (spec.name, *spec.aliases)}


def parse_controllers(value: str | Iterable[str]) -> list[str]:
    """kube-controller-manager's ``--controllers``: ``*`` enables every controller, ``foo`` enables
    foo, ``-foo`` disables foo (whatever the order). Returns the enabled names in start order."""
    items = [p.strip() for p in (value.split(",") if isinstance(value, str) else value)]
    items = [p for p in items if p]
    if not items:
        raise ValueError("--controllers: give at least one controller, or '*'")
    star = False
    enabled: set[str] = set()
    disabled: set[str] = set()
    for item in items:
        if item == "*":
            star = True
            continue
        negate = item.startswith("-")
        name = item[1:] if negate else item
        spec = _BY_NAME.get(name)
        if spec is None:
            known = ", ".join(s.name for s in CONTROLLERS)
            raise ValueError(f"--controllers: unknown controller {name!r} (known: {known})")
        (disabled if negate else enabled).add(spec.name)
    return [s.name for s in CONTROLLERS if (star or s.name in enabled) and s.name not in disabled]


def default_identity() -> str:
    """As client-go's: hostname plus a uuid, so two managers on one machine differ."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


class ControllerManager:
    def __init__(self, client: APIClient, *, controllers: str | Iterable[str] = "*",
                 options: dict[str, Any] | None = None, leader_elect: bool = True,
                 identity: str | None = None,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0,
                 lease_namespace: str = "kube-system", lease_name: str = LEASE_NAME,
                 bind_address: str = "127.0.0.1", secure_port: int | None = DEFAULT_PORT,
                 client_builder: ClientBuilder | None = None) -> None:
        self.client = client
        # Which client each controller writes with: the manager's own, or its ServiceAccount's.
        self.client_builder: ClientBuilder = client_builder or SimpleClientBuilder(client)
        self.enabled = parse_controllers(controllers)
        self.options = dict(options or {})
        self.identity = identity or default_identity()
        self.elector: LeaderElector | None = None
        if leader_elect:
            self.elector = LeaderElector(client, namespace=lease_namespace, name=lease_name,
                                         identity=self.identity, lease_duration=lease_duration,
                                         renew_deadline=renew_deadline, retry_period=retry_period)
        self.server: ComponentServer | None = None
        if secure_port is not None:
            self.server = ComponentServer(name=COMPONENT, bind_address=bind_address, port=secure_port)
            self.server.add_check("leaderElection", self._leader_check)
            self.server.add_check("controllers", self._controllers_check)
        self.controllers: dict[str, Any] = {}  # name -> running controller
        self.missing: list[str] = []  # enabled but whose module is not there (yet)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.leading = asyncio.Event()
        self.serving = asyncio.Event()  # set once the health port listens

    # ---- health and metrics ----------------------------------------------------------------------

    def _leader_check(self) -> bool:
        # A standby is healthy; a leader that lost the lease stops and exits anyway.
        return True

    def _controllers_check(self) -> bool:
        return not any(t.done() and not t.cancelled() and t.exception() is not None
                       for t in self._tasks.values())

    async def _sample_metrics(self) -> None:
        assert self.server is not None
        m = self.server.metrics
        master = m.gauge("leader_election_master_status", "1 while this instance leads, else 0.", ("name",))
        depth = m.gauge("workqueue_depth", "Keys waiting in a controller's work queue.", ("name",))
        running = m.gauge("controller_manager_controller_running", "1 for each running controller.",
                          ("controller",))
        while True:
            leading = self.elector.is_leader if self.elector is not None else self.leading.is_set()
            master.labels(LEASE_NAME).set(1 if leading else 0)
            for name, ctrl in self.controllers.items():
                queue = getattr(ctrl, "queue", None)
                if queue is not None:
                    depth.labels(getattr(ctrl, "name", name)).set(len(queue))
                task = self._tasks.get(name)
                running.labels(name).set(1 if task is not None and not task.done() else 0)
            await asyncio.sleep(1.0)

    # ---- running ---------------------------------------------------------------------------------

    async def run(self) -> int:
        """Until cancelled (0 after a clean stop is up to the caller) or until leadership is lost (1)."""
        sampler: asyncio.Task[None] | None = None
        if self.server is not None:
            await self.server.start()
            sampler = asyncio.create_task(self._sample_metrics(), name="controller-manager-metrics")
        self.serving.set()
        try:
            if self.elector is None:
                await self.run_controllers()
                return 0
            await self.elector.run(self.run_controllers)
            log.error("%s: leader election lost", self.identity)
            return 1
        finally:
            if sampler is not None:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
            if self.server is not None:
                await self.server.stop()

    async def run_controllers(self) -> None:
        """The leader's work: build the context, start the controllers and informers, run until cancelled."""
        informers = SharedInformers(self.client)
        ctx = ControllerContext(client=self.client, informers=informers,
                                events=EventRecorder(self.client, COMPONENT), options=self.options)
        self.missing = []
        for name in self.enabled:
            cls = self._load(name)
            if cls is None:
                self.missing.append(name)
                continue
            self.controllers[name] = cls(await self._context_for(name, ctx))
        await informers.start()
        for name, ctrl in self.controllers.items():
            self._tasks[name] = asyncio.create_task(ctrl.run(), name=f"controller-{name}")
        log.info("started controllers: %s", ", ".join(self.controllers) or "none")
        self.leading.set()
        try:
            # A controller that dies takes the manager down with it, as a panic does in Kubernetes.
            await asyncio.gather(*self._tasks.values())
        finally:
            self.leading.clear()
            for ctrl in self.controllers.values():
                shutdown = getattr(ctrl, "shutdown", None)
                if shutdown is not None:
                    shutdown()
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            await informers.stop()
            self._tasks.clear()
            self.controllers.clear()

    async def _context_for(self, name: str, shared: ControllerContext) -> ControllerContext:
        """The shared context, with the controller's own client (and an event recorder writing with it,
        so that its events are its own too) when it acts as its ServiceAccount."""
        client = await self.client_builder.client(_BY_NAME[name].account)
        if client is self.client:
            return shared
        return replace(shared, client=client, events=EventRecorder(client, COMPONENT))

    @staticmethod
    def _load(name: str) -> type | None:
        spec = _BY_NAME[name]
        try:
            module = importlib.import_module(spec.module)
        except ModuleNotFoundError as e:
            if e.name != spec.module:
                raise  # the module is there but something it imports is not: a real error
            log.warning("controller %s is not available (no module %s); skipping", name, spec.module)
            return None
        cls = getattr(module, spec.cls, None)
        if cls is None:
            log.warning("controller %s is not available (no %s in %s); skipping", name, spec.cls, spec.module)
        return cls
