"""host-gw routes between nodes, as flannel's host-gw backend does them: for every other Node with a
``spec.podCIDR`` and an InternalIP, ``ip route replace <podCIDR> via <InternalIP>``, so pods on different
nodes reach each other through the nodes' own network (no overlay).

The kubelet runs this on each node (in its own network namespace). Routes it installs carry a routing
protocol number of their own, so a restarted kubelet finds the routes of its previous run and removes
those whose node is gone. A next hop must be on a network this node is directly connected to (never a
loopback address, never this node's own address); otherwise the route is skipped with a log line, so
a Node object can never send pod traffic anywhere but to a neighbour on the lab network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import shutil
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

log = logging.getLogger("minikube_py.cni.routes")

# The rtnetlink protocol number marking our routes (unassigned in /etc/iproute2/rt_protos).
ROUTE_PROTOCOL = "77"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
# Runs ``ip ARGS``; returns (exit code, output).
Runner = Callable[[list[str]], Awaitable[tuple[int, str]]]


async def run_ip(args: list[str]) -> tuple[int, str]:
    binary = shutil.which("ip")
    if binary is None:
        return 127, "the 'ip' command (iproute2) is not installed"
    proc = await asyncio.create_subprocess_exec(binary, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace").strip()


def internal_ip(node: dict[str, Any]) -> str | None:
    for addr in (node.get("status") or {}).get("addresses") or ():
        if isinstance(addr, dict) and addr.get("type") == "InternalIP" and addr.get("address"):
            return str(addr["address"])
    return None


def desired_routes(own_node: str, nodes: Iterable[dict[str, Any]]) -> dict[IPNetwork, ipaddress._BaseAddress]:
    """podCIDR -> next hop for every other node that has both (malformed values are skipped)."""
    out: dict[IPNetwork, ipaddress._BaseAddress] = {}
    for node in nodes:
        name = (node.get("metadata") or {}).get("name")
        cidr = (node.get("spec") or {}).get("podCIDR")
        via = internal_ip(node)
        if name == own_node or not cidr or not via:
            continue
        try:
            out[ipaddress.ip_network(cidr, strict=False)] = ipaddress.ip_address(via)
        except ValueError:
            log.warning("node %s: podCIDR %r or InternalIP %r is not an address; no route", name, cidr, via)
    return out


def parse_addresses(output: str) -> list[IPInterface]:
    """``ip -o addr show`` -> the interfaces' addresses with their prefix."""
    out: list[IPInterface] = []
    for line in output.splitlines():
        fields = line.split()
        for i, word in enumerate(fields[:-1]):
            if word in ("inet", "inet6"):
                try:
                    out.append(ipaddress.ip_interface(fields[i + 1]))
                except ValueError:
                    pass
    return out


def parse_routes(output: str) -> dict[IPNetwork, str]:
    """``ip -o route show proto N`` -> destination -> next hop (as text)."""
    out: dict[IPNetwork, str] = {}
    for line in output.splitlines():
        fields = line.split()
        if not fields or "via" not in fields:
            continue
        try:
            dest = ipaddress.ip_network(fields[0], strict=False)
        except ValueError:
            continue
        out[dest] = fields[fields.index("via") + 1]
    return out


def usable_next_hop(via: ipaddress._BaseAddress, local: list[IPInterface]) -> str:
    """Why ``via`` must not be a next hop ("" when it may): it has to be a neighbour on a connected network."""
    if via.is_loopback or via.is_unspecified or via.is_multicast:
        return f"{via} is not a neighbour's address"
    if any(iface.ip == via for iface in local):
        return f"{via} is an address of this node"
    if not any(via in iface.network for iface in local if not iface.ip.is_loopback):
        return f"{via} is not on a network this node is directly connected to"
    return ""


class HostGwRoutes:
    """Keeps this node's routes to the other nodes' pod CIDRs in line with the Node objects."""

    def __init__(self, node_name: str, runner: Runner = run_ip) -> None:
        self.node_name = node_name
        self.run = runner
        self._skipped: dict[IPNetwork, str] = {}  # logged once per reason, not every sync

    async def sync(self, nodes: Iterable[dict[str, Any]]) -> dict[IPNetwork, str]:
        """Add, replace and remove routes; returns the routes now in place (destination -> next hop)."""
        wanted = desired_routes(self.node_name, nodes)
        rc, out = await self.run(["-o", "addr", "show"])
        if rc != 0:
            log.warning("host-gw routes: cannot list this node's addresses: %s", out)
            return {}
        local = parse_addresses(out)
        rc, out = await self.run(["-o", "route", "show", "proto", ROUTE_PROTOCOL])
        current = parse_routes(out) if rc == 0 else {}
        own_networks = [iface.network for iface in local]
        installed: dict[IPNetwork, str] = {}
        for cidr, via in sorted(wanted.items(), key=lambda kv: str(kv[0])):
            why = usable_next_hop(via, local)
            if not why and any(cidr.overlaps(net) for net in own_networks if net.version == cidr.version):
                why = f"{cidr} overlaps a network of this node"
            if why:
                if self._skipped.get(cidr) != why:
                    log.warning("host-gw route to %s via %s skipped: %s", cidr, via, why)
                    self._skipped[cidr] = why
                continue
            self._skipped.pop(cidr, None)
            if current.get(cidr) != str(via):
                rc, out = await self.run(["route", "replace", str(cidr), "via", str(via), "proto", ROUTE_PROTOCOL])
                if rc != 0:
                    log.warning("ip route replace %s via %s: %s", cidr, via, out)
                    continue
                log.info("host-gw route %s via %s", cidr, via)
            installed[cidr] = str(via)
        for cidr, via_text in current.items():
            if cidr not in installed:
                rc, out = await self.run(["route", "del", str(cidr), "via", via_text, "proto", ROUTE_PROTOCOL])
                if rc != 0:
                    log.warning("ip route del %s via %s: %s", cidr, via_text, out)
                else:
                    log.info("host-gw route %s via %s removed (its node is gone)", cidr, via_text)
        return installed
