"""The node agent: registers its Node, keeps its Lease and status, runs the pods bound to it through the
runtime (one ``PodWorker`` each), serves the kubelet API, and keeps the host-gw routes to the other
nodes' pod CIDRs.

A runtime that is down or not ready (runc or the CNI plugins missing, no pod CIDR yet) makes the Node
NotReady with the runtime's reason, an Event and a log line; the kubelet itself keeps running and
picks up when the runtime recovers — it never exits into a crash loop over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minikube_py.client import APIClient, ApiStatusError, Informer
from minikube_py.cni.routes import HostGwRoutes
from minikube_py.controllers.events import EventRecorder
from minikube_py.kubelet.backoff import BackOff
from minikube_py.kubelet.node_status import (
    LEASE_NAMESPACE,
    Machine,
    NodeConfig,
    Pressure,
    allocatable,
    conditions_changed,
    desired_conditions,
    lease_manifest,
    merge_conditions,
    node_labels,
    node_manifest,
    node_status,
    now_rfc3339,
    runtime_not_ready,
)
from minikube_py.kubelet.pod_workers import POD_UID_LABEL, PodWorker
from minikube_py.kubelet.sa_tokens import TokenManager
from minikube_py.runtime import NotFoundError, RuntimeServiceError
from minikube_py.runtime.client import RuntimeClient

log = logging.getLogger("minikube_py.kubelet")

UNKNOWN_RUNTIME = "minikube-py://unknown"
_UID_DIR = re.compile(r"^[0-9a-fA-F-]{8,}$")


@dataclass
class KubeletConfig:
    node_name: str
    node_ip: str
    runtime_endpoint: Path = Path("/run/minikube-py/runtime.sock")
    root_dir: Path = Path("/var/lib/minikube-py/kubelet")
    pod_log_dir: Path = Path("/var/log/pods")
    bind_address: str = "0.0.0.0"
    port: int = 10250
    healthz_port: int = 10248
    register_node: bool = True
    max_pods: int = 110
    node_labels: dict[str, str] = field(default_factory=dict)
    cluster_dns: list[str] = field(default_factory=list)
    cluster_domain: str = "cluster.local"
    # The kubelet's nodeStatusUpdateFrequency (check) and nodeStatusReportFrequency (post even unchanged).
    status_update_frequency: float = 10.0
    status_report_frequency: float = 300.0
    lease_renew_interval: float = 10.0
    # The PLEG relist period: how often each pod worker looks at its containers.
    sync_period: float = 1.0
    housekeeping_period: float = 10.0
    backoff_initial: float = 10.0
    backoff_cap: float = 300.0
    host_gw_routes: bool = True


class Kubelet:
    def __init__(self, client: APIClient, runtime: RuntimeClient, config: KubeletConfig,
                 machine: Machine | None = None) -> None:
        self.client = client
        self.runtime = runtime
        self.config = config
        self.machine = machine or Machine.detect(config.root_dir)
        self.node_config = NodeConfig(config.node_name, config.node_ip, config.port, config.max_pods,
                                      dict(config.node_labels))
        self.allocatable = allocatable(self.machine, config.max_pods)
        self.recorder = EventRecorder(client, "kubelet", host=config.node_name)
        self.container_backoff = BackOff(config.backoff_initial, config.backoff_cap)
        self.image_backoff = BackOff(config.backoff_initial, config.backoff_cap)
        self.sa_tokens = TokenManager(client)  # serviceAccountToken projections (kubelet/volumes.py)
        self.workers: dict[str, PodWorker] = {}
        self._finished: dict[str, float] = {}  # uids whose worker ended, briefly: late events are ignored
        self.pods = Informer(client, "pods", field_selector=f"spec.nodeName={config.node_name}")
        self.nodes = Informer(client, "nodes")
        self.routes = HostGwRoutes(config.node_name) if config.host_gw_routes else None
        self.node_uid = ""
        self.runtime_version = UNKNOWN_RUNTIME
        self.applied_pod_cidr = ""
        self._pending_cidr = ""
        self.ready_reason: str | None = None   # None: not reported yet
        self._last_report = 0.0
        self._pulls: dict[str, asyncio.Future[str]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._status_now = asyncio.Event()
        self._routes_now = asyncio.Event()
        self.started = asyncio.Event()

    # ---- running ---------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; pods keep running when the kubelet stops."""
        for d in (self.config.root_dir, self.config.pod_log_dir):
            d.mkdir(parents=True, exist_ok=True)
        await self._read_runtime_version()
        if self.config.register_node:
            await self._retry_forever("registering the node", self.register_node, stop)
        self.nodes.add_handlers(self._on_node, lambda old, new: self._on_node(new), lambda _n: self._routes_now.set())
        await self.nodes.start()
        self.pods.add_handlers(self._on_pod, lambda old, new: self._on_pod(new), self._on_pod_delete)
        await self.pods.start()
        loops = [self._lease_loop(), self._status_loop(), self._housekeeping_loop()]
        if self.routes is not None:
            loops.append(self._routes_loop())
        tasks = [asyncio.create_task(loop) for loop in loops]
        await self.pods.wait_synced()
        self.started.set()
        log.info("kubelet for node %s is running (%d pods bound here)", self.config.node_name, len(self.pods))
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(w.stop() for w in list(self.workers.values())), return_exceptions=True)
            await self.pods.stop()
            await self.nodes.stop()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _retry_forever(self, what: str, fn: Any, stop: asyncio.Event) -> None:
        delay = 0.5
        while not stop.is_set():
            try:
                await fn()
                return
            except (ApiStatusError, OSError, TimeoutError) as e:
                log.warning("%s failed: %s; retrying in %.0fs", what, e, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 10.0)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- events ------------------------------------------------------------------------------------------

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Record an Event in the background (events never slow a sync down, nor fail it)."""
        if type_ == "Warning":
            meta = obj.get("metadata") or {}
            log.info("%s %s/%s: %s: %s", obj.get("kind"), meta.get("namespace") or "", meta.get("name"), reason,
                     message)
        target = copy.copy(obj)
        target.setdefault("apiVersion", "v1")
        target.setdefault("kind", "Pod")
        self._spawn(self.recorder.record(target, type_, reason, message))

    # ---- the node ----------------------------------------------------------------------------------------

    async def _read_runtime_version(self) -> None:
        try:
            v = await self.runtime.version()
            self.runtime_version = f"{v.get('runtimeName') or 'minikube-py'}://{v.get('runtimeVersion') or ''}"
        except RuntimeServiceError as e:
            log.warning("the container runtime at %s is not reachable: %s", self.config.runtime_endpoint, e)

    async def register_node(self) -> None:
        runtime_status, error = await self._runtime_status()
        wanted = desired_conditions(runtime_not_ready(runtime_status, error), Pressure.measure(self.config.root_dir))
        manifest = node_manifest(self.node_config, self.machine, self.runtime_version, wanted)
        try:
            created = await self.client.create("nodes", manifest)
            self.node_uid = created["metadata"]["uid"]
            log.info("registered node %s", self.config.node_name)
            return
        except ApiStatusError as e:
            if e.code != 409:
                raise
        # Registered before: refresh labels and status; spec (podCIDR, taints) stays as the cluster set it.
        current = await self.client.patch("nodes", self.config.node_name,
                                          {"metadata": {"labels": node_labels(self.node_config, self.machine)}})
        self.node_uid = current["metadata"]["uid"]
        await self.update_node_status(force=True, current=current)

    async def _runtime_status(self) -> tuple[dict[str, Any] | None, str]:
        try:
            return await self.runtime.status(), ""
        except RuntimeServiceError as e:
            return None, str(e)

    async def update_node_status(self, force: bool = False, current: dict[str, Any] | None = None) -> None:
        """Post the node's status when a condition changed, or every status_report_frequency anyway."""
        if self.runtime_version == UNKNOWN_RUNTIME:
            await self._read_runtime_version()
        runtime_status, error = await self._runtime_status()
        not_ready = runtime_not_ready(runtime_status, error)
        wanted = desired_conditions(not_ready, Pressure.measure(self.config.root_dir))
        for _ in range(3):
            node = current or self.nodes.get(self.config.node_name) or \
                await self.client.get("nodes", self.config.node_name)
            status = node.get("status") or {}
            fields = node_status(self.node_config, self.machine, self.runtime_version)
            changed = conditions_changed(status.get("conditions") or [], wanted) or \
                any(status.get(k) != v for k, v in fields.items())
            due = time.monotonic() - self._last_report >= self.config.status_report_frequency
            if not (changed or due or force):
                return
            fresh = copy.deepcopy(node)
            fresh["status"] = {**status, **fields,
                               "conditions": merge_conditions(status.get("conditions") or [], wanted, now_rfc3339())}
            try:
                await self.client.update_status("nodes", fresh)
                break
            except ApiStatusError as e:
                if e.code != 409:
                    raise
                current = None
                node = await self.client.get("nodes", self.config.node_name)
                current = node
        self._last_report = time.monotonic()
        if not_ready != self.ready_reason:
            self._ready_changed(not_ready)

    def _ready_changed(self, not_ready: str) -> None:
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.config.node_name, "uid": self.node_uid or self.config.node_name}}
        if not_ready:
            log.warning("node %s is NotReady: %s", self.config.node_name, not_ready)
            self.event(node, "Normal", "NodeNotReady", f"Node {self.config.node_name} status is now: NodeNotReady")
        else:
            log.info("node %s is Ready", self.config.node_name)
            self.event(node, "Normal", "NodeReady", f"Node {self.config.node_name} status is now: NodeReady")
        self.ready_reason = not_ready

    async def _status_loop(self) -> None:
        while True:
            try:
                await self.update_node_status()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("updating the node status failed: %s: %s", type(e).__name__, e)
            self._status_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._status_now.wait(), self.config.status_update_frequency)

    async def renew_lease(self) -> None:
        name = self.config.node_name
        lease = await self.client.get_or_none("leases.coordination.k8s.io", name, LEASE_NAMESPACE)
        if lease is None:
            try:
                await self.client.create("leases.coordination.k8s.io", lease_manifest(name, self.node_uid or None))
            except ApiStatusError as e:
                if e.code != 409:
                    raise
            return
        fresh = copy.deepcopy(lease)
        fresh["spec"] = {**(lease.get("spec") or {}), **lease_manifest(name, None)["spec"]}
        await self.client.update("leases.coordination.k8s.io", fresh)

    async def _lease_loop(self) -> None:
        while True:
            try:
                await self.renew_lease()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("renewing the node lease failed: %s: %s", type(e).__name__, e)
            await asyncio.sleep(self.config.lease_renew_interval)

    def _on_node(self, node: dict[str, Any]) -> None:
        self._routes_now.set()
        if node["metadata"]["name"] != self.config.node_name:
            return
        cidr = str((node.get("spec") or {}).get("podCIDR") or "")
        if cidr and cidr != self.applied_pod_cidr and cidr != self._pending_cidr:
            self._pending_cidr = cidr
            self._spawn(self._apply_pod_cidr(cidr))

    async def _apply_pod_cidr(self, cidr: str) -> None:
        delay = 1.0
        while cidr == self._pending_cidr and cidr != self.applied_pod_cidr:
            try:
                await self.runtime.update_runtime_config(cidr)
                self.applied_pod_cidr = cidr
                log.info("node %s: pod CIDR %s handed to the runtime", self.config.node_name, cidr)
                self._status_now.set()
                return
            except RuntimeServiceError as e:
                log.warning("handing pod CIDR %s to the runtime failed: %s; retrying in %.0fs", cidr, e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _routes_loop(self) -> None:
        assert self.routes is not None
        while True:
            self._routes_now.clear()
            if self.nodes.has_synced:
                try:
                    await self.routes.sync(self.nodes.list())
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.warning("host-gw routes sync failed: %s: %s", type(e).__name__, e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._routes_now.wait(), 30.0)

    # ---- pods --------------------------------------------------------------------------------------------

    def _on_pod(self, pod: dict[str, Any]) -> None:
        uid = str(pod["metadata"].get("uid") or "")
        if not uid or uid in self._finished:
            return
        worker = self.workers.get(uid)
        if worker is None:
            worker = self.workers[uid] = PodWorker(self, pod)
            worker.start()
        else:
            worker.update(pod)

    def _on_pod_delete(self, pod: dict[str, Any]) -> None:
        worker = self.workers.get(str(pod["metadata"].get("uid") or ""))
        if worker is not None:
            worker.remove()

    def worker_done(self, worker: PodWorker) -> None:
        if self.workers.get(worker.uid) is worker:
            del self.workers[worker.uid]
        self.sa_tokens.forget_pod(worker.uid)
        now = time.monotonic()
        self._finished[worker.uid] = now
        for uid in [u for u, at in self._finished.items() if now - at > 600]:
            del self._finished[uid]

    def worker_for(self, namespace: str, name: str) -> PodWorker | None:
        pod = self.pods.get(f"{namespace}/{name}")
        if pod is None:
            return None
        return self.workers.get(str(pod["metadata"].get("uid") or ""))

    async def get_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.client.get_or_none(kind, name, namespace)

    async def pull_image(self, image: str) -> str:
        """Pull ``image``; pods asking for the same image at once share one pull."""
        pending = self._pulls.get(image)
        if pending is None:
            pending = asyncio.ensure_future(self.runtime.pull_image(image))
            self._pulls[image] = pending
            pending.add_done_callback(lambda _f: self._pulls.pop(image, None))
        return await asyncio.shield(pending)

    def pod_log_dir(self, pod: dict[str, Any]) -> Path:
        meta = pod.get("metadata") or {}
        return self.config.pod_log_dir / f"{meta.get('namespace')}_{meta.get('name')}_{meta.get('uid')}"

    def container_log_path(self, pod: dict[str, Any], container: str, attempt: int) -> Path:
        return self.pod_log_dir(pod) / container / f"{attempt}.log"

    def dns_config(self, pod: dict[str, Any]) -> dict[str, list[str]]:
        """The sandbox's resolv.conf per dnsPolicy (ClusterFirst needs --cluster-dns, else the node's own)."""
        spec = pod.get("spec") or {}
        namespace = str((pod.get("metadata") or {}).get("namespace") or "default")
        policy = spec.get("dnsPolicy") or "ClusterFirst"
        servers: list[str] = []
        searches: list[str] = []
        options: list[str] = []
        if policy in ("ClusterFirst", "ClusterFirstWithHostNet") and self.config.cluster_dns:
            domain = self.config.cluster_domain
            servers = list(self.config.cluster_dns)
            searches = [f"{namespace}.svc.{domain}", f"svc.{domain}", domain]
            options = ["ndots:5"]
        extra = spec.get("dnsConfig") or {}
        servers += [str(s) for s in extra.get("nameservers") or ()]
        searches += [str(s) for s in extra.get("searches") or ()]
        for opt in extra.get("options") or ():
            if opt.get("name"):
                options.append(f"{opt['name']}:{opt['value']}" if opt.get("value") else str(opt["name"]))
        return {"servers": servers, "searches": searches, "options": options}

    # ---- housekeeping: what the runtime has that no pod explains ----------------------------------------

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.housekeeping_period)
            if not self.pods.has_synced:
                continue
            try:
                await self.cleanup_orphans()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("housekeeping failed: %s: %s", type(e).__name__, e)

    async def cleanup_orphans(self) -> None:
        """Remove sandboxes and containers of pods this kubelet does not run, and their directories."""
        known = set(self.workers)
        for sb in await self.runtime.list_pod_sandbox():
            uid = str((sb.get("labels") or {}).get(POD_UID_LABEL) or "")
            if uid in known:
                continue
            meta = sb.get("metadata") or {}
            log.info("removing orphaned sandbox %s of pod %s/%s", str(sb["id"])[:12], meta.get("namespace"),
                     meta.get("name"))
            with contextlib.suppress(NotFoundError):
                await self.runtime.stop_pod_sandbox(str(sb["id"]))
            with contextlib.suppress(NotFoundError):
                await self.runtime.remove_pod_sandbox(str(sb["id"]))
        for c in await self.runtime.list_containers():
            uid = str((c.get("labels") or {}).get(POD_UID_LABEL) or "")
            if uid not in known:
                log.info("removing orphaned container %s", str(c["id"])[:12])
                with contextlib.suppress(NotFoundError):
                    await self.runtime.remove_container(str(c["id"]))
        pods_dir = self.config.root_dir / "pods"
        if pods_dir.is_dir():
            for d in pods_dir.iterdir():
                if d.name not in known and _UID_DIR.match(d.name) and not _has_mounts(d):
                    shutil.rmtree(d, ignore_errors=True)


def _has_mounts(path: Path) -> bool:
    prefix = str(path.resolve()) + "/"
    try:
        return any(line.split()[4].startswith(prefix) for line in Path("/proc/self/mountinfo").read_text().splitlines())
    except OSError:
        return True
