"""The Node a kubelet registers and keeps reporting: capacity from this machine, addresses, nodeInfo,
labels, and the four conditions (Ready from the runtime's RuntimeReady/NetworkReady; the pressure
conditions from free memory, disk and PIDs), with the kubelet's reasons and messages.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KUBELET_VERSION = "v1.33.0-minikube-py"
LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40
# Reserved for the system, as --system-reserved/--kube-reserved would; small, this is a lab.
RESERVED_CPU_MILLI = 100
RESERVED_MEMORY = 256 * 1024 * 1024
# The kubelet's default hard eviction thresholds, used here only to report pressure.
MEMORY_AVAILABLE_MIN = 100 * 1024 * 1024
DISK_AVAILABLE_MIN_FRACTION = 0.10
PID_AVAILABLE_MIN_FRACTION = 0.05
ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def now_rfc3339(micro: bool = False) -> str:
    t = dt.datetime.now(dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def go_arch() -> str:
    machine = platform.machine()
    return ARCHES.get(machine, machine.lower())


def meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    """/proc/meminfo in bytes."""
    out: dict[str, int] = {}
    for line in path.read_text().splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[name] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


def os_image(path: Path = Path("/etc/os-release")) -> str:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Machine:
    cpus: int
    memory: int            # bytes
    storage: int           # bytes of the filesystem holding the kubelet's root dir
    os_image: str
    kernel: str
    arch: str
    machine_id: str
    boot_id: str

    @classmethod
    def detect(cls, root_dir: Path) -> Machine:
        probe = root_dir if root_dir.exists() else Path("/")
        return cls(cpus=os.cpu_count() or 1, memory=meminfo().get("MemTotal", 0),
                   storage=shutil.disk_usage(probe).total, os_image=os_image(), kernel=platform.release(),
                   arch=go_arch(), machine_id=_read("/etc/machine-id"),
                   boot_id=_read("/proc/sys/kernel/random/boot_id"))


@dataclass(frozen=True)
class NodeConfig:
    name: str
    node_ip: str
    port: int = 10250
    max_pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)


def capacity(machine: Machine, max_pods: int) -> dict[str, str]:
    return {"cpu": str(machine.cpus), "memory": f"{machine.memory // 1024}Ki",
            "ephemeral-storage": f"{machine.storage // 1024}Ki", "pods": str(max_pods)}


def allocatable(machine: Machine, max_pods: int) -> dict[str, str]:
    cpu_milli = max(machine.cpus * 1000 - RESERVED_CPU_MILLI, 100)
    memory = max(machine.memory - RESERVED_MEMORY, machine.memory // 2)
    storage = int(machine.storage * (1 - DISK_AVAILABLE_MIN_FRACTION))
    return {"cpu": f"{cpu_milli}m", "memory": f"{memory // 1024}Ki",
            "ephemeral-storage": str(storage), "pods": str(max_pods)}


def node_labels(cfg: NodeConfig, machine: Machine) -> dict[str, str]:
    return {"kubernetes.io/hostname": cfg.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": machine.arch,
            "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": machine.arch, **cfg.labels}


def node_info(machine: Machine, runtime_version: str) -> dict[str, str]:
    return {"kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": KUBELET_VERSION, "operatingSystem": "linux",
            "architecture": machine.arch, "containerRuntimeVersion": runtime_version, "osImage": machine.os_image,
            "kernelVersion": machine.kernel, "machineID": machine.machine_id, "systemUUID": machine.machine_id,
            "bootID": machine.boot_id}


def parse_node_labels(text: str) -> dict[str, str]:
    """``--node-labels k=v,k2=v2`` -> dict; ValueError on a malformed pair."""
    out: dict[str, str] = {}
    for pair in (p.strip() for p in text.split(",")):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--node-labels: {pair!r} is not key=value")
        out[key] = value
    return out


# ---- conditions -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pressure:
    memory: bool = False
    disk: bool = False
    pid: bool = False

    @classmethod
    def measure(cls, root_dir: Path) -> Pressure:
        mem = meminfo().get("MemAvailable")
        probe = root_dir if root_dir.exists() else Path("/")
        disk = shutil.disk_usage(probe)
        pid_max = int(_read("/proc/sys/kernel/pid_max") or 0)
        pids = sum(1 for p in Path("/proc").iterdir() if p.name.isdigit()) if pid_max else 0
        return cls(memory=mem is not None and mem < MEMORY_AVAILABLE_MIN,
                   disk=disk.total > 0 and disk.free / disk.total < DISK_AVAILABLE_MIN_FRACTION,
                   pid=pid_max > 0 and (pid_max - pids) / pid_max < PID_AVAILABLE_MIN_FRACTION)


def runtime_not_ready(runtime_status: dict[str, Any] | None, runtime_error: str = "") -> str:
    """Why the node is not Ready because of its runtime, in the kubelet's words; "" when it is fine."""
    if runtime_status is None:
        return f"container runtime is down: {runtime_error}" if runtime_error else "container runtime is down"
    problems = []
    for cond in runtime_status.get("conditions") or ():
        if not cond.get("status"):
            problems.append(f"{cond.get('type')}=false reason:{cond.get('reason') or ''} "
                            f"message:{cond.get('message') or ''}")
    types = {c.get("type") for c in runtime_status.get("conditions") or ()}
    if problems and any(p.startswith("NetworkReady") for p in problems) and len(problems) == 1:
        return f"container runtime network not ready: {problems[0]}"
    if problems:
        return f"container runtime not ready: {'; '.join(problems)}"
    if "RuntimeReady" not in types:
        return "container runtime status check may not have completed yet"
    return ""


def desired_conditions(not_ready: str, pressure: Pressure) -> list[tuple[str, str, str, str]]:
    """(type, status, reason, message) of the kubelet's four conditions."""
    ready = ("Ready", "False", "KubeletNotReady", not_ready) if not_ready else \
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status")
    return [
        ("MemoryPressure", "True", "KubeletHasInsufficientMemory", "kubelet has insufficient memory available")
        if pressure.memory else
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "True", "KubeletHasDiskPressure", "kubelet has disk pressure") if pressure.disk else
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "True", "KubeletHasInsufficientPID", "kubelet has insufficient PID available")
        if pressure.pid else
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ready,
    ]


def merge_conditions(previous: list[dict[str, Any]], wanted: list[tuple[str, str, str, str]], now: str
                     ) -> list[dict[str, Any]]:
    """The node's conditions: ours refreshed (transition time kept when the status did not change),
    conditions other agents own kept as they are."""
    before = {c.get("type"): c for c in previous if isinstance(c, dict)}
    out = []
    for ctype, status, reason, message in wanted:
        old = before.pop(ctype, None)
        moved = old is None or old.get("status") != status
        out.append({"type": ctype, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now if moved or old is None else old.get("lastTransitionTime", now)})
    out.extend(before.values())
    return out


def conditions_changed(previous: list[dict[str, Any]], wanted: list[tuple[str, str, str, str]]) -> bool:
    have = {c.get("type"): (c.get("status"), c.get("reason"), c.get("message")) for c in previous
            if isinstance(c, dict)}
    return any(have.get(t) != (s, r, m) for t, s, r, m in wanted)


def node_status(cfg: NodeConfig, machine: Machine, runtime_version: str) -> dict[str, Any]:
    """The status fields the kubelet owns besides conditions."""
    return {
        "capacity": capacity(machine, cfg.max_pods), "allocatable": allocatable(machine, cfg.max_pods),
        "addresses": [{"type": "InternalIP", "address": cfg.node_ip}, {"type": "Hostname", "address": cfg.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.port}},
        "nodeInfo": node_info(machine, runtime_version),
    }


def node_manifest(cfg: NodeConfig, machine: Machine, runtime_version: str,
                  conditions: list[tuple[str, str, str, str]]) -> dict[str, Any]:
    status = node_status(cfg, machine, runtime_version)
    status["conditions"] = merge_conditions([], conditions, now_rfc3339())
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": cfg.name, "labels": node_labels(cfg, machine),
                         "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
            "spec": {}, "status": status}


def lease_manifest(node: str, node_uid: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": node, "namespace": LEASE_NAMESPACE}
    if node_uid:
        # As the kubelet does: the garbage collector removes the Lease with its Node.
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}]
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
            "spec": {"holderIdentity": node, "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                     "renewTime": now_rfc3339(micro=True)}}
