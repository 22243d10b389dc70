"""The node IPAM controller: one pod subnet per node (``spec.podCIDR`` and ``spec.podCIDRs``) out of
the cluster CIDR, as kube-controller-manager's range allocator hands them out.

Allocations are stable (a node keeps its subnet for life) and go back to the pool when the node is
deleted. Before allocating anything the map of used subnets is rebuilt from the nodes that exist,
so a restarted (or newly elected) controller never hands out a subnet twice.

Options: ``cluster_cidr`` (default 10.244.0.0/16), ``node_cidr_mask_size`` (default 24).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from minikube_py.client.rest import ApiStatusError

from .base import Controller, ControllerContext

DEFAULT_CLUSTER_CIDR = "10.244.0.0/16"
DEFAULT_NODE_MASK = 24


class CIDRSet:
    """The subnets of one size inside a cluster CIDR, with the ones in use (Kubernetes' cidrset)."""

    def __init__(self, cluster_cidr: str, node_mask: int) -> None:
        try:
            net = ipaddress.ip_network(cluster_cidr, strict=True)
        except ValueError as e:
            raise ValueError(f"cluster CIDR {cluster_cidr!r}: {e}") from None
        if not isinstance(net, ipaddress.IPv4Network):
            raise ValueError(f"cluster CIDR {cluster_cidr}: only IPv4 is supported")
        if not net.prefixlen <= node_mask <= 30:
            raise ValueError(f"node CIDR mask /{node_mask} must lie between the cluster CIDR's "
                             f"/{net.prefixlen} and /30")
        self.network = net
        self.mask = node_mask
        self.size = 1 << (node_mask - net.prefixlen)
        self._step = 1 << (32 - node_mask)
        self._used: dict[int, str] = {}  # subnet index -> node name
        self._next = 0  # round robin, so a freed subnet is not handed out again at once

    def subnet(self, index: int) -> str:
        base = int(self.network.network_address) + index * self._step
        return f"{ipaddress.IPv4Address(base)}/{self.mask}"

    def index_of(self, cidr: str) -> int | None:
        """The index of ``cidr`` when it is one of this set's subnets, else None."""
        try:
            net = ipaddress.ip_network(cidr, strict=True)
        except ValueError:
            return None
        if net.prefixlen != self.mask or not net.subnet_of(self.network):  # type: ignore[arg-type]
            return None
        return (int(net.network_address) - int(self.network.network_address)) // self._step

    def occupy(self, cidr: str, node: str) -> str | None:
        """Mark ``cidr`` used by ``node``; returns the other node that already holds it, if any."""
        index = self.index_of(cidr)
        if index is None:
            return None
        holder = self._used.setdefault(index, node)
        return holder if holder != node else None

    def allocate(self, node: str) -> str | None:
        for i in range(self.size):
            index = (self._next + i) % self.size
            if index not in self._used:
                self._used[index] = node
                self._next = (index + 1) % self.size
                return self.subnet(index)
        return None

    def release(self, cidr: str, node: str) -> None:
        index = self.index_of(cidr)
        if index is not None and self._used.get(index) == node:
            del self._used[index]

    def __len__(self) -> int:
        return len(self._used)


class NodeIPAMController(Controller):
    name = "nodeipam"
    # One worker: allocation decisions are made one node at a time on one in-memory map.
    workers = 1

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.cidrs = CIDRSet(str(ctx.options.get("cluster_cidr", DEFAULT_CLUSTER_CIDR)),
                             int(ctx.options.get("node_cidr_mask_size", DEFAULT_NODE_MASK)))
        self.nodes = ctx.informers.informer("nodes")
        self._by_node: dict[str, str] = {}
        self.nodes.add_handlers(**self.handlers())

    async def run(self) -> None:
        await self.nodes.wait_synced()
        self._rebuild()
        await super().run()

    def _rebuild(self) -> None:
        for node in sorted(self.nodes.list(), key=lambda n: n["metadata"].get("creationTimestamp") or ""):
            self._occupy(node)

    def _occupy(self, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        cidr = (node.get("spec") or {}).get("podCIDR")
        if not cidr:
            return
        other = self.cidrs.occupy(cidr, name)
        if other is not None:
            self.log.warning("node %s has podCIDR %s, which node %s holds too", name, cidr, other)
            return
        self._by_node[name] = cidr

    async def reconcile(self, key: str) -> None:
        node = self.nodes.get(key)
        if node is None:
            cidr = self._by_node.pop(key, None)
            if cidr is not None:
                self.cidrs.release(cidr, key)
                self.log.info("node %s deleted: released %s", key, cidr)
            return
        if (node.get("spec") or {}).get("podCIDR"):
            self._occupy(node)
            return
        # Allocated before but the cache has not caught up yet: write the same subnet again.
        cidr = self._by_node.get(key) or self.cidrs.allocate(key)
        if cidr is None:
            await self.ctx.events.record(node, "Normal", "CIDRNotAvailable",
                                         f"Node {key} status is now: CIDRNotAvailable")
            raise RuntimeError(f"no pod CIDR left in {self.cidrs.network} for node {key}")
        self._by_node[key] = cidr
        try:
            await self.client.patch("nodes", key, {"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})
        except ApiStatusError as e:
            if e.code == 404:
                del self._by_node[key]
                self.cidrs.release(cidr, key)
                return
            raise
        self.log.info("node %s: podCIDR %s", key, cidr)
