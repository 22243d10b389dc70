"""Pod sandboxes: a network namespace joined to the CNI network, and the files every container of the
pod shares (/etc/hosts, /etc/hostname, /etc/resolv.conf).

No pause process holds the namespace: ``ip netns add`` bind-mounts it to a file under /run/netns,
named after the sandbox id, and containers join it by that path. Each sandbox keeps its record in
``<root>/sandboxes/<id>/sandbox.json`` so a restarted daemon knows its pods again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from minikube_py.runtime import InternalError, InvalidArgumentError, UnavailableError
from minikube_py.runtime.cni import CNI, CNINetwork, pod_ip

log = logging.getLogger("minikube_py.runtime.sandbox")

READY, NOTREADY = "SANDBOX_READY", "SANDBOX_NOTREADY"
NETNS_DIR = Path("/run/netns")
HOSTNAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", re.IGNORECASE)
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}


@dataclass
class Sandbox:
    id: str
    metadata: dict[str, Any]
    hostname: str
    labels: dict[str, str]
    annotations: dict[str, str]
    port_mappings: list[dict[str, Any]]
    dns_config: dict[str, Any]
    created_at: int
    state: str = READY
    ip: str = ""
    netns: str = ""
    # The network ADD ran on and its result, kept for DEL: the conf dir may change in between.
    network: dict[str, Any] | None = None
    cni_result: dict[str, Any] | None = None
    network_attached: bool = False

    def status(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "metadata": self.metadata,
            "state": self.state,
            "createdAt": self.created_at,
            "network": {"ip": self.ip, "additionalIps": []},
            "linux": {"namespaces": {"options": {"network": "POD", "pid": "CONTAINER", "ipc": "CONTAINER"}}},
            "labels": self.labels,
            "annotations": self.annotations,
        }

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "metadata": self.metadata, "state": self.state, "createdAt": self.created_at,
                "labels": self.labels, "annotations": self.annotations}

    def cni_args(self) -> dict[str, str]:
        return {"K8S_POD_NAMESPACE": self.metadata.get("namespace", ""), "K8S_POD_NAME": self.metadata.get("name", ""),
                "K8S_POD_INFRA_CONTAINER_ID": self.id, "K8S_POD_UID": self.metadata.get("uid", "")}

    def cni_port_mappings(self) -> list[dict[str, Any]]:
        """CRI port mappings as the portmap plugin's ``runtimeConfig.portMappings`` (host ports only)."""
        out = []
        for pm in self.port_mappings:
            if int(pm.get("hostPort") or 0) <= 0:
                continue
            entry: dict[str, Any] = {"hostPort": int(pm["hostPort"]), "containerPort": int(pm["containerPort"]),
                                     "protocol": PROTOCOLS.get(str(pm.get("protocol") or "TCP").upper(), "tcp")}
            if pm.get("hostIp"):
                entry["hostIP"] = pm["hostIp"]
            out.append(entry)
        return out


def parse_sandbox_config(sandbox_id: str, config: Any) -> Sandbox:
    """Validate a RunPodSandbox ``config`` into a Sandbox (not yet started)."""
    if not isinstance(config, dict):
        raise InvalidArgumentError("config must be an object")
    meta = config.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        raise InvalidArgumentError("config.metadata.name is required")
    metadata = {"name": str(meta["name"]), "namespace": str(meta.get("namespace") or "default"),
                "uid": str(meta.get("uid") or ""), "attempt": int(meta.get("attempt") or 0)}
    hostname = str(config.get("hostname") or metadata["name"])[:63]
    if not HOSTNAME_RE.match(hostname):
        raise InvalidArgumentError(f"hostname {hostname!r} is not a valid DNS label")
    pms = config.get("portMappings") or []
    if not isinstance(pms, list):
        raise InvalidArgumentError("config.portMappings must be a list")
    for pm in pms:
        if not isinstance(pm, dict):
            raise InvalidArgumentError("each port mapping must be an object")
        for key in ("containerPort", "hostPort"):
            value = pm.get(key, 0) or 0
            if not isinstance(value, int) or not 0 <= value <= 65535:
                raise InvalidArgumentError(f"portMappings {key} {value!r} is not a port number")
        if str(pm.get("protocol") or "TCP").upper() not in PROTOCOLS:
            raise InvalidArgumentError(f"portMappings protocol {pm.get('protocol')!r} is not TCP, UDP or SCTP")
    dns = config.get("dnsConfig") or {}
    if not isinstance(dns, dict):
        raise InvalidArgumentError("config.dnsConfig must be an object")
    return Sandbox(
        id=sandbox_id, metadata=metadata, hostname=hostname, labels=_str_map(config.get("labels"), "labels"),
        annotations=_str_map(config.get("annotations"), "annotations"), port_mappings=list(pms),
        dns_config={k: [str(x) for x in dns.get(k) or []] for k in ("servers", "searches", "options")},
        created_at=time.time_ns())


def _str_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"{what} must be an object of strings")
    return {str(k): str(v) for k, v in value.items()}


def matches(labels: dict[str, str], selector: dict[str, str] | None) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


class SandboxStore:
    """The sandboxes of one runtime: their records on disk, netns and network."""

    def __init__(self, root: Path, cni: CNI) -> None:
        self.dir = root / "sandboxes"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cni = cni
        self.sandboxes: dict[str, Sandbox] = {}
        self._load()

    def _load(self) -> None:
        for path in sorted(self.dir.glob("*/sandbox.json")):
            try:
                sb = Sandbox(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as e:
                log.warning("skipping unreadable sandbox record %s: %s", path, e)
                continue
            if sb.state == READY and sb.netns and not Path(sb.netns).exists():
                sb.state = NOTREADY  # rebooted: the namespace is gone, so is the pod's network
            self.sandboxes[sb.id] = sb

    def pod_dir(self, sandbox_id: str) -> Path:
        return self.dir / sandbox_id

    def save(self, sb: Sandbox) -> None:
        path = self.pod_dir(sb.id) / "sandbox.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(sb)))
        os.replace(tmp, path)

    def get(self, sandbox_id: str) -> Sandbox | None:
        return self.sandboxes.get(sandbox_id)

    async def run(self, sb: Sandbox) -> Sandbox:
        """Create the namespace, attach it to the network and write the pod's files; undone on failure."""
        network = self.cni.ready_network()
        netns = NETNS_DIR / sb.id
        sb.netns = str(netns)
        sb.network = network.to_dict()
        self.write_pod_files(sb)
        self.sandboxes[sb.id] = sb
        self.save(sb)
        try:
            await netns_add(sb.id)
            await netns_loopback_up(sb.id)
            sb.network_attached = True  # from here on a DEL is owed, even if ADD fails half-way
            self.save(sb)
            result = await self.cni.add(network, sb.id, netns, port_mappings=sb.cni_port_mappings(),
                                        args=sb.cni_args())
            sb.cni_result = result
            sb.ip = pod_ip(result)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.teardown_network(sb)
            with contextlib.suppress(Exception):
                await netns_delete(sb.id)
            self.sandboxes.pop(sb.id, None)
            shutil.rmtree(self.pod_dir(sb.id), ignore_errors=True)
            raise
        self.write_pod_files(sb)  # now /etc/hosts knows the pod's own address
        self.save(sb)
        return sb

    async def teardown_network(self, sb: Sandbox) -> None:
        if not sb.network_attached or sb.network is None:
            return
        network = CNINetwork.from_dict(sb.network, Path(""))
        await self.cni.delete(network, sb.id, Path(sb.netns), port_mappings=sb.cni_port_mappings(),
                              args=sb.cni_args(), prev_result=sb.cni_result)
        sb.network_attached = False
        self.save(sb)

    async def stop(self, sb: Sandbox) -> None:
        await self.teardown_network(sb)
        sb.state = NOTREADY
        self.save(sb)

    async def remove(self, sb: Sandbox) -> None:
        await self.teardown_network(sb)
        await netns_delete(sb.id)
        self.sandboxes.pop(sb.id, None)
        shutil.rmtree(self.pod_dir(sb.id), ignore_errors=True)

    def write_pod_files(self, sb: Sandbox) -> None:
        d = self.pod_dir(sb.id)
        d.mkdir(parents=True, exist_ok=True)
        hosts = ["# Kubernetes-managed hosts file (written by minikube-py runtime).",
                 "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                 "fe00::0\tip6-localnet", "fe00::0\tip6-mcastprefix", "fe00::1\tip6-allnodes",
                 "fe00::2\tip6-allrouters"]
        if sb.ip:
            hosts.append(f"{sb.ip}\t{sb.hostname}")
        _write(d / "hosts", "\n".join(hosts) + "\n")
        _write(d / "hostname", sb.hostname + "\n")
        _write(d / "resolv.conf", resolv_conf(sb.dns_config))


def resolv_conf(dns: dict[str, list[str]]) -> str:
    """The pod's resolv.conf: its dnsConfig, or the node's own file when it has none (dnsPolicy Default)."""
    if not any(dns.values()):
        try:
            return Path("/etc/resolv.conf").read_text()
        except OSError:
            return ""
    lines = [f"nameserver {s}" for s in dns.get("servers", [])]
    if dns.get("searches"):
        lines.append("search " + " ".join(dns["searches"]))
    if dns.get("options"):
        lines.append("options " + " ".join(dns["options"]))
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---- network namespaces through iproute2 --------------------------------------------------------------

async def _ip(*args: str) -> tuple[int, str]:
    binary = shutil.which("ip")
    if binary is None:
        raise UnavailableError("the 'ip' command (iproute2) is not installed; it creates pod network namespaces")
    proc = await asyncio.create_subprocess_exec(binary, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace").strip()


async def netns_add(name: str) -> None:
    rc, out = await _ip("netns", "add", name)
    if rc != 0:
        raise InternalError(f"ip netns add {name}: {out}")


async def netns_loopback_up(name: str) -> None:
    rc, out = await _ip("-n", name, "link", "set", "lo", "up")
    if rc != 0:
        raise InternalError(f"setting lo up in netns {name}: {out}")


async def netns_delete(name: str) -> None:
    """Delete the namespace; a missing one is already deleted."""
    if not (NETNS_DIR / name).exists():
        return
    rc, out = await _ip("netns", "delete", name)
    if rc != 0 and (NETNS_DIR / name).exists():
        raise InternalError(f"ip netns delete {name}: {out}")
