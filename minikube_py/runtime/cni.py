"""Pod networking through CNI plugins, called as the CNI spec says (libcni's job in containerd).

The node's network is one conflist in the conf dir: ``bridge`` (with ``host-local`` IPAM on the node's
pod CIDR), ``portmap`` for hostPorts, and ``loopback`` (which passes the bridge's result through).
ADD runs the plugins in order, each getting the previous one's result; DEL runs them in reverse with
the result ADD returned, as libcni does from its result cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minikube_py.runtime import InternalError, InvalidArgumentError, UnavailableError

log = logging.getLogger("minikube_py.runtime.cni")

CNI_VERSION = "1.0.0"
CONFLIST_NAME = "10-minikube-py.conflist"
# A plugin that takes longer than this is stuck (bridge/portmap answer in milliseconds).
PLUGIN_TIMEOUT = 60.0
NOT_READY = "NetworkPluginNotReady"


@dataclass(frozen=True)
class CNINetwork:
    """One network configuration as loaded from the conf dir."""

    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]
    path: Path

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "cniVersion": self.cni_version, "plugins": list(self.plugins)}

    @classmethod
    def from_dict(cls, conf: dict[str, Any], path: Path) -> CNINetwork:
        if "plugins" not in conf and "type" in conf:
            conf = {"name": conf.get("name"), "cniVersion": conf.get("cniVersion", CNI_VERSION), "plugins": [conf]}
        name, plugins = conf.get("name"), conf.get("plugins")
        if not isinstance(name, str) or not name:
            raise ValueError("no network name")
        if not isinstance(plugins, list) or not plugins:
            raise ValueError("no plugins")
        for p in plugins:
            if not isinstance(p, dict) or not isinstance(p.get("type"), str) or "/" in p["type"]:
                raise ValueError(f"plugin without a valid type: {p!r}")
        return cls(name, str(conf.get("cniVersion", CNI_VERSION)), tuple(plugins), path)


def node_conflist(pod_cidr: str, *, bridge: str, network_name: str, ipam_data_dir: Path) -> dict[str, Any]:
    """The conflist for a node whose pods get addresses from ``pod_cidr`` (the Node's spec.podCIDR)."""
    try:
        subnet = ipaddress.ip_network(pod_cidr, strict=True)
    except ValueError as e:
        raise InvalidArgumentError(f"podCIDR {pod_cidr!r}: {e}") from None
    if subnet.num_addresses < 4:
        raise InvalidArgumentError(f"podCIDR {pod_cidr} is too small for a gateway and a pod")
    if not bridge or len(bridge) > 15 or "/" in bridge or any(c.isspace() for c in bridge):
        raise InvalidArgumentError(f"bridge name {bridge!r} is not a valid interface name")
    return {
        "cniVersion": CNI_VERSION,
        "name": network_name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(subnet)}]],
                    "routes": [{"dst": "0.0.0.0/0" if subnet.version == 4 else "::/0"}],
                    # Under the runtime's state dir (a tmpfs at /run): leases vanish with the netns at
                    # reboot instead of leaking as they do in /var/lib/cni.
                    "dataDir": str(ipam_data_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
            {"type": "loopback"},
        ],
    }


def write_conflist(conf_dir: Path, conflist: dict[str, Any]) -> Path:
    conf_dir.mkdir(parents=True, exist_ok=True)
    path = conf_dir / CONFLIST_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(conflist, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def load_network(conf_dir: Path) -> CNINetwork | None:
    """The first network in ``conf_dir`` by file name (as libcni picks), or None when there is none.

    A file that is not a valid network config raises ValueError naming it.
    """
    try:
        names = sorted(p for p in conf_dir.iterdir() if p.suffix in (".conflist", ".conf", ".json"))
    except FileNotFoundError:
        return None
    for path in names:
        try:
            conf = json.loads(path.read_text())
            if not isinstance(conf, dict):
                raise ValueError("not a JSON object")
            return CNINetwork.from_dict(conf, path)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None
    return None


class CNI:
    """The CNI plugins of one node: its conf dir and the directory holding the plugin binaries."""

    def __init__(self, conf_dir: Path, bin_dir: Path) -> None:
        self.conf_dir = conf_dir
        self.bin_dir = bin_dir

    def missing_plugins(self, network: CNINetwork) -> list[str]:
        return [p["type"] for p in network.plugins if not os.access(self.bin_dir / p["type"], os.X_OK)]

    def ready_network(self) -> CNINetwork:
        """The network pods join now; UnavailableError with the kubelet's wording when there is none."""
        try:
            network = load_network(self.conf_dir)
        except ValueError as e:
            raise UnavailableError(f"{NOT_READY}: invalid cni config: {e}") from None
        if network is None:
            raise UnavailableError(f"{NOT_READY}: cni config uninitialized")
        missing = self.missing_plugins(network)
        if missing:
            raise UnavailableError(f"{NOT_READY}: cni plugin not initialized: missing plugin binaries "
                                   f"{', '.join(missing)} in {self.bin_dir}")
        return network

    def status(self) -> tuple[bool, str, str]:
        """(ready, reason, message) for the NetworkReady condition."""
        try:
            self.ready_network()
        except UnavailableError as e:
            return False, NOT_READY, e.message
        return True, "", ""

    async def add(self, network: CNINetwork, container_id: str, netns: Path, *,
                  port_mappings: list[dict[str, Any]], args: dict[str, str]) -> dict[str, Any]:
        """Attach ``netns`` to the network; returns the final CNI result (with ``ips``)."""
        result: dict[str, Any] | None = None
        for plugin in network.plugins:
            result = await self._exec(network, plugin, "ADD", container_id, netns, port_mappings, args, result)
        if not result or not result.get("ips"):
            raise InternalError(f"CNI network {network.name!r} returned no IP address for the pod")
        return result

    async def delete(self, network: CNINetwork, container_id: str, netns: Path, *,
                     port_mappings: list[dict[str, Any]], args: dict[str, str],
                     prev_result: dict[str, Any] | None) -> None:
        """Detach, every plugin in reverse; all are tried, and the first failure is raised after."""
        first: Exception | None = None
        for plugin in reversed(network.plugins):
            try:
                await self._exec(network, plugin, "DEL", container_id, netns, port_mappings, args, prev_result)
            except (InternalError, UnavailableError) as e:
                log.warning("CNI DEL %s for %s: %s", plugin["type"], container_id, e)
                first = first or e
        if first is not None:
            raise first

    async def _exec(self, network: CNINetwork, plugin: dict[str, Any], command: str, container_id: str,
                    netns: Path, port_mappings: list[dict[str, Any]], args: dict[str, str],
                    prev_result: dict[str, Any] | None) -> dict[str, Any] | None:
        binary = self.bin_dir / plugin["type"]
        if not os.access(binary, os.X_OK):
            raise UnavailableError(f"CNI plugin {plugin['type']!r} not found in {self.bin_dir}")
        conf = {"cniVersion": network.cni_version, "name": network.name, **plugin}
        if prev_result is not None:
            conf["prevResult"] = prev_result
        if plugin.get("capabilities", {}).get("portMappings"):
            conf["runtimeConfig"] = {"portMappings": port_mappings}
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": str(netns),
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(self.bin_dir),
            "CNI_ARGS": ";".join(["IgnoreUnknown=1", *(f"{k}={v}" for k, v in args.items())]),
        }
        proc = await asyncio.create_subprocess_exec(
            str(binary), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, cwd="/")
        try:
            out, err = await asyncio.wait_for(proc.communicate(json.dumps(conf).encode()), PLUGIN_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise InternalError(f"CNI plugin {plugin['type']} {command} timed out after {PLUGIN_TIMEOUT:.0f}s") \
                from None
        if proc.returncode != 0:
            raise InternalError(f"CNI plugin {plugin['type']} {command} failed: {_plugin_error(out, err)}")
        if command != "ADD":
            return None
        try:
            result = json.loads(out)
        except ValueError:
            raise InternalError(f"CNI plugin {plugin['type']} returned no JSON result: {out[:200]!r}") from None
        return result if isinstance(result, dict) else None


def pod_ip(result: dict[str, Any]) -> str:
    """The pod's address from a CNI result: the first IPv4 one, else the first."""
    addrs = [str(ip.get("address", "")).split("/")[0] for ip in result.get("ips", []) if isinstance(ip, dict)]
    addrs = [a for a in addrs if a]
    for a in addrs:
        if ipaddress.ip_address(a).version == 4:
            return a
    if not addrs:
        raise InternalError("the CNI result holds no IP address")
    return addrs[0]


def _plugin_error(out: bytes, err: bytes) -> str:
    """The spec's error object ``{"code", "msg", "details"}`` as one line, else the raw output."""
    with contextlib.suppress(ValueError, AttributeError):
        e = json.loads(out)
        text = str(e.get("msg", ""))
        if e.get("details"):
            text += f": {e['details']}"
        if text:
            return text
    return (out + err).decode(errors="replace").strip()[:2000] or "no output"
