"""Fake nodes, as kwok does them: Node objects that heartbeat and "run" every pod bound to them,
with no container runtime behind them. Control-plane tests and benchmarks use them to drive the
scheduler and controllers at scale on one machine.

One process serves a whole set of nodes (``<prefix><start>`` ... ``<prefix><start+count-1>``):
- registers each Node (labels, capacity/allocatable, addresses, nodeInfo, Ready=True);
- renews each node's Lease in ``kube-node-lease`` every heartbeat, as the kubelet's node lease
  controller does, and re-posts the node status every ``status_every`` heartbeats or at once when
  someone (the node lifecycle controller) has marked the node not Ready;
- moves every pod bound to one of its nodes to Running and Ready with a pod IP from the node's
  ``spec.podCIDR`` (waiting for the node IPAM controller to assign one);
- finishes graceful deletion: a pod with a ``deletionTimestamp`` is deleted with gracePeriodSeconds=0
  at once, as a kubelet does once its containers have stopped.

Stopping one node's heartbeats (to watch the node lifecycle controller react) needs no second
process: annotate the Node ``fake.minikube-py/stop-heartbeat=true`` and its Lease and status are no
longer renewed; remove the annotation and they resume. Its pods are still served (deletions are
still finished), so a node "partitioned" this way never leaves pods stuck in Terminating.

Scale: one pod informer for all pods (a field selector cannot name hundreds of nodes), filtered by the
node set in the handlers; pod work goes through one work queue with a bounded number of workers.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import hashlib
import ipaddress
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from minikube_py.api.validation import parse_quantity
from minikube_py.client import APIClient, ApiStatusError, Informer, WorkQueue, key_of, run_workers
from minikube_py.client.workqueue import ExponentialBackoff

log = logging.getLogger(__name__)

STOP_HEARTBEAT_ANNOTATION = "fake.minikube-py/stop-heartbeat"
KUBELET_VERSION = "v1.33.0-fake"
LEASE_NAMESPACE = "kube-node-lease"
# The kubelet's default: the node lifecycle controller reads it as the lease's validity.
LEASE_DURATION_SECONDS = 40
# The conditions a kubelet owns on its Node; others (set by other agents) are left alone.
NODE_CONDITIONS = (
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
)
POD_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")


POD_NODE_INDEX = "spec.nodeName"


def _pod_node(pod: dict[str, Any]) -> list[str]:
    node = (pod.get("spec") or {}).get("nodeName")
    return [node] if node else []


class FakeNodesError(ValueError):
    """A configuration mistake (bad quantity, count, range)."""


def now_rfc3339(micro: bool = False) -> str:
    t = dt.datetime.now(dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def _truthy(value: object) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


@dataclass(frozen=True)
class FakeNodeConfig:
    count: int
    prefix: str = "fake-node-"
    start: int = 0
    cpu: str = "4"
    memory: str = "16Gi"
    pods: int = 110
    heartbeat: float = 10.0
    # Node status is re-posted every this many heartbeats even when nothing changed (the kubelet's
    # nodeStatusReportFrequency; the Lease carries liveness in between).
    status_every: int = 6
    # InternalIPs are data only. Loopback by default so that anything which does dial a fake node
    # (the API server's logs/exec proxy) stays on this machine and is refused at once.
    address_range: str = "127.1.0.0/16"
    workers: int = 16

    def validate(self) -> None:
        if self.count < 0:
            raise FakeNodesError(f"count must not be negative, got {self.count}")
        if self.start < 0:
            raise FakeNodesError(f"start must not be negative, got {self.start}")
        if not self.prefix or len(self.prefix) > 200:
            raise FakeNodesError("the node name prefix must be 1-200 characters")
        for what, text in (("cpu", self.cpu), ("memory", self.memory)):
            try:
                if parse_quantity(text) <= 0:
                    raise ValueError("must be positive")
            except ValueError as e:
                raise FakeNodesError(f"--{what} {text!r}: {e}") from None
        if self.pods < 1:
            raise FakeNodesError(f"pods must be at least 1, got {self.pods}")
        if not self.heartbeat > 0:
            raise FakeNodesError(f"heartbeat must be positive, got {self.heartbeat}")
        if self.status_every < 1 or self.workers < 1:
            raise FakeNodesError("status_every and workers must be at least 1")
        try:
            net = ipaddress.ip_network(self.address_range)
        except ValueError as e:
            raise FakeNodesError(f"address range: {e}") from None
        if net.num_addresses - 2 < self.start + self.count:
            raise FakeNodesError(f"address range {net} has too few addresses for node index "
                                 f"{self.start + self.count - 1}")

    def names(self) -> list[str]:
        return [f"{self.prefix}{i}" for i in range(self.start, self.start + self.count)]

    def address(self, index: int) -> str:
        return str(ipaddress.ip_network(self.address_range).network_address + index + 1)


# ---- the objects ------------------------------------------------------------------------------------------

def node_conditions(now: str, previous: Iterable[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """The kubelet-owned conditions, healthy; transition times kept when the status did not change;
    conditions owned by others kept as they are."""
    before = {c.get("type"): c for c in previous if isinstance(c, dict)}
    out: list[dict[str, Any]] = []
    for ctype, status, reason, message in NODE_CONDITIONS:
        old = before.pop(ctype, None)
        moved = old is None or old.get("status") != status
        out.append({"type": ctype, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now if moved else old.get("lastTransitionTime", now)})  # type: ignore[union-attr]
    out.extend(before.values())
    return out


def node_manifest(cfg: FakeNodeConfig, index: int, now: str) -> dict[str, Any]:
    name = f"{cfg.prefix}{index}"
    resources = {"cpu": cfg.cpu, "memory": cfg.memory, "pods": str(cfg.pods), "ephemeral-storage": "100Gi"}
    ident = hashlib.sha256(name.encode()).hexdigest()
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64", "type": "fake"},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {},
        "status": {
            "capacity": dict(resources), "allocatable": dict(resources),
            "addresses": [{"type": "InternalIP", "address": cfg.address(index)},
                          {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": KUBELET_VERSION,
                         "operatingSystem": "linux", "architecture": "amd64",
                         "containerRuntimeVersion": "fake://0.1.0", "osImage": "minikube-py fake node",
                         "kernelVersion": "0.0.0-fake", "machineID": ident[:32],
                         "systemUUID": f"{ident[:8]}-{ident[8:12]}-{ident[12:16]}-{ident[16:20]}-{ident[20:32]}",
                         "bootID": ident[32:64]},
            "conditions": node_conditions(now),
            "phase": "Running",
        },
    }


def lease_manifest(node: str, now_micro: str, node_uid: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": node, "namespace": LEASE_NAMESPACE}
    if node_uid:
        # As the kubelet does: the garbage collector removes the Lease with its Node.
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}]
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
            "spec": {"holderIdentity": node, "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                     "renewTime": now_micro}}


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def readiness_gates_message(pod: dict[str, Any]) -> str | None:
    """Why the pod's readiness gates keep it from Ready (the kubelet's wording), or None when they allow it."""
    conditions = {c.get("type"): c.get("status") for c in (pod.get("status") or {}).get("conditions") or ()
                  if isinstance(c, dict)}
    for gate in (pod.get("spec") or {}).get("readinessGates") or ():
        ctype = gate.get("conditionType") if isinstance(gate, dict) else None
        if not ctype:
            continue
        if ctype not in conditions:
            return f'corresponding condition of pod readiness gate "{ctype}" does not exist.'
        if conditions[ctype] != "True":
            return f'the status of pod readiness gate "{ctype}" is not "True", but {conditions[ctype]}'
    return None


def pod_ready_condition(pod: dict[str, Any]) -> str | None:
    return next((c.get("status") for c in (pod.get("status") or {}).get("conditions") or ()
                 if isinstance(c, dict) and c.get("type") == "Ready"), None)


def _pod_conditions(pod: dict[str, Any], now: str) -> list[dict[str, Any]]:
    """Every kubelet-owned condition True (containers run and are ready) except Ready, which also needs
    the readiness gates; other conditions (the gates themselves) are kept as they are."""
    gates = readiness_gates_message(pod)
    before = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or () if isinstance(c, dict)}
    conditions = []
    for ctype in POD_CONDITIONS:
        prev = before.pop(ctype, None)
        want = "False" if ctype == "Ready" and gates else "True"
        if prev is not None and prev.get("status") == want and (want == "True" or prev.get("message") == gates):
            conditions.append(prev)
            continue
        cond: dict[str, Any] = {"type": ctype, "status": want, "lastProbeTime": None,
                                "lastTransitionTime": now}
        if want == "False":
            cond.update(reason="ReadinessGatesNotReady", message=gates)
        conditions.append(cond)
    conditions.extend(before.values())
    return conditions


def ready_status(pod: dict[str, Any], now: str) -> dict[str, Any]:
    """A running pod's status with Ready (and the containers' readiness) set again as the kubelet sees
    them — after the node lifecycle controller marked it not Ready, or a readiness gate changed."""
    status = copy.deepcopy(pod.get("status") or {})
    status["conditions"] = _pod_conditions(pod, now)
    for c in status.get("containerStatuses") or ():
        if isinstance(c, dict):
            c["ready"] = True
    return status


def running_status(pod: dict[str, Any], host_ip: str, pod_ip: str, now: str) -> dict[str, Any]:
    """The status a kubelet reports once every container of ``pod`` runs and is ready."""
    old = pod.get("status") or {}
    spec = pod.get("spec") or {}
    uid = str((pod.get("metadata") or {}).get("uid") or "")
    conditions = _pod_conditions(pod, now)

    def image_id(image: str) -> str:
        return f"fake://{image}@sha256:{_digest(image)}"

    containers = []
    for c in spec.get("containers") or ():
        image = str(c.get("image") or "")
        containers.append({
            "name": c.get("name"), "image": image, "imageID": image_id(image),
            "containerID": f"fake://{_digest(uid, str(c.get('name')))}",
            "ready": True, "started": True, "restartCount": 0,
            "state": {"running": {"startedAt": now}}, "lastState": {},
        })
    status: dict[str, Any] = {
        **{k: v for k, v in old.items() if k in ("qosClass", "nominatedNodeName")},
        "phase": "Running", "conditions": conditions,
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
        "startTime": old.get("startTime") or now, "containerStatuses": containers,
    }
    inits = []
    for c in spec.get("initContainers") or ():
        image = str(c.get("image") or "")
        inits.append({
            "name": c.get("name"), "image": image, "imageID": image_id(image),
            "containerID": f"fake://{_digest(uid, 'init', str(c.get('name')))}",
            "ready": True, "started": False, "restartCount": 0, "lastState": {},
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}},
        })
    if inits:
        status["initContainerStatuses"] = inits
    return status


# ---- pod IPs ----------------------------------------------------------------------------------------------

class PodIPAllocator:
    """Sequential pod IPs from each node's podCIDR, as the host-local IPAM plugin hands them out: the
    first host address is the bridge's gateway, pods take the following ones, the cursor moves on
    (a freed address is reused only after the range wraps)."""

    def __init__(self) -> None:
        self._nets: dict[str, ipaddress.IPv4Network | ipaddress.IPv6Network] = {}
        self._cursor: dict[str, int] = {}
        self._used: dict[str, dict[str, str]] = {}  # node -> ip -> pod uid
        self._by_pod: dict[str, tuple[str, str]] = {}  # pod uid -> (node, ip)

    def set_cidr(self, node: str, cidr: str) -> None:
        net = ipaddress.ip_network(cidr, strict=False)
        if self._nets.get(node) != net:
            self._nets[node] = net
            self._cursor.setdefault(node, 1)

    def has_cidr(self, node: str) -> bool:
        return node in self._nets

    def of(self, uid: str) -> str | None:
        held = self._by_pod.get(uid)
        return held[1] if held else None

    def record(self, node: str, uid: str, ip: str) -> None:
        """An address already in use (found on a pod at start-up): never hand it out again."""
        self._used.setdefault(node, {})[ip] = uid
        self._by_pod[uid] = (node, ip)

    def allocate(self, node: str, uid: str) -> str:
        held = self._by_pod.get(uid)
        if held is not None:
            return held[1]
        net = self._nets[node]
        used = self._used.setdefault(node, {})
        size = net.num_addresses
        # Skip the network address, the gateway (.1) and, for IPv4, the broadcast address.
        first, last = 2, size - (2 if net.version == 4 else 1)
        if last < first:
            raise RuntimeError(f"pod CIDR {net} of node {node} has no room for pods")
        cursor = self._cursor.get(node, 1)
        for step in range(1, last - first + 2):
            offset = first + (cursor - first + step) % (last - first + 1)
            ip = str(net.network_address + offset)
            if ip not in used:
                self._cursor[node] = offset
                self.record(node, uid, ip)
                return ip
        raise RuntimeError(f"pod CIDR {net} of node {node} is full")

    def release(self, uid: str) -> None:
        held = self._by_pod.pop(uid, None)
        if held is not None:
            node, ip = held
            if self._used.get(node, {}).get(ip) == uid:
                del self._used[node][ip]


# ---- the process ------------------------------------------------------------------------------------------

class FakeNodes:
    """Serve ``config.count`` fake nodes until cancelled."""

    def __init__(self, client: APIClient, config: FakeNodeConfig) -> None:
        config.validate()
        self.client = client
        self.config = config
        self.names = config.names()
        self._index = {name: config.start + i for i, name in enumerate(self.names)}
        self._addresses = {name: config.address(i) for name, i in self._index.items()}
        self.ips = PodIPAllocator()
        self.nodes = Informer(client, "nodes")
        self.pods = Informer(client, "pods")
        self.queue = WorkQueue("fake-nodes-pods", ExponentialBackoff(base=0.05, cap=10.0))
        self._leases: dict[str, dict[str, Any]] = {}
        self._uids: dict[str, str] = {}
        self._waiting_cidr: dict[str, set[str]] = {}  # node -> pod keys waiting for its podCIDR
        self._status_due: set[str] = set()  # nodes whose status must be re-posted at the next beat
        self._writes = asyncio.Semaphore(config.workers)
        self.ready = asyncio.Event()  # set once every node is registered and pods are being served
        self.pods_started = 0

    # ---- informer handlers: cheap, synchronous; they only record and enqueue ----

    def _on_node(self, node: dict[str, Any], old: dict[str, Any] | None = None) -> None:
        name = node["metadata"]["name"]
        if name not in self._index:
            return
        self._uids[name] = str(node["metadata"].get("uid") or "")
        cidr = (node.get("spec") or {}).get("podCIDR")
        if cidr:
            try:
                self.ips.set_cidr(name, cidr)
            except ValueError:
                log.warning("node %s: unusable podCIDR %r", name, cidr)
                return
            for key in self._waiting_cidr.pop(name, ()):
                self.queue.add(key)
        ready = next((c.get("status") for c in (node.get("status") or {}).get("conditions") or ()
                      if isinstance(c, dict) and c.get("type") == "Ready"), None)
        if ready != "True":
            # Someone (the node lifecycle controller) says we are not Ready: a live kubelet corrects it.
            self._status_due.add(name)

    def _on_pod(self, pod: dict[str, Any], old: dict[str, Any] | None = None) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if node not in self._index:
            return
        status = pod.get("status") or {}
        uid = str(pod["metadata"].get("uid") or "")
        ip = status.get("podIP")
        if ip and self.ips.of(uid) is None:
            # Started by an earlier run of ours: keep its address out of the pool.
            self.ips.record(node, uid, ip)
        if pod["metadata"].get("deletionTimestamp") or status.get("phase") not in ("Running", "Succeeded",
                                                                                     "Failed"):
            self.queue.add(key_of(pod))
        elif status.get("phase") == "Running" and self._ready_drifted(pod):
            self.queue.add(key_of(pod))

    @staticmethod
    def _ready_drifted(pod: dict[str, Any]) -> bool:
        want = "False" if readiness_gates_message(pod) else "True"
        return pod_ready_condition(pod) != want

    def _on_pod_delete(self, pod: dict[str, Any]) -> None:
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        self.ips.release(uid)

    # ---- pods ----

    async def _sync_pod(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None:
            return
        meta, spec = pod["metadata"], pod.get("spec") or {}
        node = spec.get("nodeName")
        if node not in self._index:
            return
        uid = str(meta.get("uid") or "")
        if meta.get("deletionTimestamp"):
            await self._finish_deletion(pod)
            return
        status = pod.get("status") or {}
        if status.get("phase") == "Running" and self._ready_drifted(pod) and not self.heartbeats_stopped(node):
            fresh = copy.deepcopy(pod)
            fresh["status"] = ready_status(pod, now_rfc3339())
            await self._write_pod_status(fresh, uid)
            return
        if status.get("phase") in ("Running", "Succeeded", "Failed"):
            return
        if not self.ips.has_cidr(node):
            self._waiting_cidr.setdefault(node, set()).add(key)
            # The node IPAM controller may be down or disabled; look again now and then anyway.
            self.queue.add_after(key, 5.0)
            return
        ip = self.ips.allocate(node, uid)
        fresh = copy.deepcopy(pod)
        fresh["status"] = running_status(pod, self._addresses[node], ip, now_rfc3339())
        if await self._write_pod_status(fresh, uid):
            self.pods_started += 1

    async def _write_pod_status(self, pod: dict[str, Any], uid: str) -> bool:
        async with self._writes:
            try:
                await self.client.update_status("pods", pod)
            except ApiStatusError as e:
                if e.code == 404:
                    self.ips.release(uid)
                    return False
                raise  # 409: the informer brings the newer pod and the key comes back with back-off
        return True

    async def _finish_deletion(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        async with self._writes:
            try:
                await self.client.delete("pods", meta["name"], meta.get("namespace"), grace_period_seconds=0,
                                         preconditions={"uid": meta.get("uid")})
            except ApiStatusError as e:
                if e.code not in (404, 409):  # gone, or a new pod under the same name: not ours to delete
                    raise
        self.ips.release(str(meta.get("uid") or ""))

    # ---- nodes ----

    async def _register(self, name: str) -> None:
        manifest = node_manifest(self.config, self._index[name], now_rfc3339())
        async with self._writes:
            try:
                created = await self.client.create("nodes", manifest)
                self._uids[name] = created["metadata"]["uid"]
                return
            except ApiStatusError as e:
                if e.code != 409:
                    raise
            # Registered by an earlier run: refresh labels and status, keep spec (podCIDR, taints).
            current = await self.client.patch("nodes", name, {"metadata": {"labels": manifest["metadata"]["labels"]}})
            self._uids[name] = current["metadata"]["uid"]
        await self._post_status(name, current)

    async def _post_status(self, name: str, current: dict[str, Any] | None = None) -> None:
        for _ in range(5):
            if current is None:
                current = await self.client.get("nodes", name)
            fresh = copy.deepcopy(current)
            want = node_manifest(self.config, self._index[name], now_rfc3339())["status"]
            status = fresh.setdefault("status", {})
            for k in ("capacity", "allocatable", "addresses", "daemonEndpoints", "nodeInfo", "phase"):
                status[k] = want[k]
            status["conditions"] = node_conditions(now_rfc3339(), status.get("conditions") or ())
            try:
                async with self._writes:
                    await self.client.update_status("nodes", fresh)
                return
            except ApiStatusError as e:
                if e.code != 409:
                    raise
                current = None
        raise RuntimeError(f"node {name}: status kept conflicting")

    async def _renew_lease(self, name: str) -> None:
        now = now_rfc3339(micro=True)
        lease = self._leases.get(name)
        async with self._writes:
            if lease is not None:
                fresh = copy.deepcopy(lease)
                fresh["spec"].update(holderIdentity=name, leaseDurationSeconds=LEASE_DURATION_SECONDS,
                                     renewTime=now)
                try:
                    self._leases[name] = await self.client.update("leases", fresh)
                    return
                except ApiStatusError as e:
                    if e.code not in (404, 409):
                        raise
            current = await self.client.get_or_none("leases", name, LEASE_NAMESPACE)
            if current is None:
                self._leases[name] = await self.client.create(
                    "leases", lease_manifest(name, now, self._uids.get(name)))
            else:
                current["spec"].update(holderIdentity=name, leaseDurationSeconds=LEASE_DURATION_SECONDS,
                                       renewTime=now)
                self._leases[name] = await self.client.update("leases", current)

    def heartbeats_stopped(self, name: str) -> bool:
        node = self.nodes.get(name)
        annotations = ((node or {}).get("metadata") or {}).get("annotations") or {}
        return _truthy(annotations.get(STOP_HEARTBEAT_ANNOTATION, ""))

    async def _heartbeat(self, name: str) -> None:
        beat = self.config.heartbeat
        # Spread the nodes' beats over the interval instead of writing them all in one burst.
        await asyncio.sleep(random.random() * beat)
        n = 0
        stopped = False
        while True:
            if self.heartbeats_stopped(name):
                if not stopped:
                    log.info("node %s: heartbeats stopped by annotation %s", name, STOP_HEARTBEAT_ANNOTATION)
                stopped = True
            else:
                if stopped:
                    log.info("node %s: heartbeats resumed", name)
                    self._status_due.add(name)
                    # Pods marked not Ready while the node was silent are Ready again, as the kubelet's
                    # status manager reports them.
                    for pod in self.pods.by_index(POD_NODE_INDEX, name):
                        self._on_pod(pod)
                stopped = False
                try:
                    await self._renew_lease(name)
                    n += 1
                    if n % self.config.status_every == 0 or name in self._status_due:
                        self._status_due.discard(name)
                        await self._post_status(name)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.warning("node %s: heartbeat failed: %s: %s", name, type(e).__name__, e)
            await asyncio.sleep(beat)

    # ---- running ----

    async def run(self) -> None:
        """Register the nodes, then heartbeat and serve pods until cancelled."""
        self.nodes.add_handlers(on_add=self._on_node, on_update=lambda old, new: self._on_node(new, old))
        # Register first, so that pods already bound to our nodes find them when the pod informer syncs.
        await asyncio.gather(*(self._register(n) for n in self.names))
        await self.nodes.start()
        self.pods.add_index(POD_NODE_INDEX, _pod_node)
        self.pods.add_handlers(on_add=self._on_pod, on_update=lambda old, new: self._on_pod(new, old),
                               on_delete=self._on_pod_delete)
        await self.pods.start()
        try:
            await self.nodes.wait_synced()
            await self.pods.wait_synced()
            # Leases right away: a restarted fake-nodes process should not leave its nodes looking dead.
            await asyncio.gather(*(self._renew_lease(n) for n in self.names), return_exceptions=True)
            self.ready.set()
            log.info("serving %d fake nodes (%s...)", len(self.names), self.names[0] if self.names else "")
            tasks = [asyncio.create_task(self._heartbeat(n), name=f"heartbeat-{n}") for n in self.names]
            try:
                await run_workers(self.queue, self._sync_pod, self.config.workers, log=log)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self.queue.shutdown()
            await self.pods.stop()
            await self.nodes.stop()
