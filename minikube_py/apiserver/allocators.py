"""ClusterIP and NodePort allocation, race-free across API servers.

Each allocated address or port is a key of its own under ``/registry/ranges/``; ``create`` fails if
another writer took it first, so two API servers sharing one etcd never hand out the same value
(Kubernetes keeps a bitmap in one key instead; one key per value avoids a hot key).
"""

from __future__ import annotations

import ipaddress
import random

from minikube_py.api import errors
from minikube_py.store import KeyExistsError, KeyNotFoundError, Store


def _invalid(owner: str, field: str, message: str) -> errors.ApiError:
    """422 in the shape kubectl prints (details.causes[].field); ``owner`` is "namespace/name"."""
    return errors.invalid("Service", owner.rpartition("/")[2], [errors.Cause(field, message)])


class IPAllocator:
    def __init__(self, store: Store, cidr: str, reserved: tuple[str, ...] = ()) -> None:
        self.store = store
        self.network = ipaddress.ip_network(cidr)
        # The network and broadcast addresses are never handed out, as in Kubernetes.
        self._first = int(self.network.network_address) + 1
        self._last = int(self.network.broadcast_address) - 1
        self.reserved = set(reserved)
        self._next = self._first

    def _key(self, ip: str) -> str:
        return f"/registry/ranges/serviceips/{ip}"

    def contains(self, ip: str) -> bool:
        try:
            return ipaddress.ip_address(ip) in self.network
        except ValueError:
            return False

    async def allocate(self, ip: str | None = None, owner: str = "") -> str:
        """Take ``ip`` (422 if taken or outside the range), or the next free address."""
        if ip is not None:
            if not self.contains(ip):
                raise _invalid(owner, "spec.clusterIPs", f'Invalid value: ["{ip}"]: failed to allocate IP '
                               f"{ip}: the provided IP ({ip}) is not in the valid range. The range of valid "
                               f"IPs is {self.network}")
            try:
                await self.store.create(self._key(ip), owner.encode())
            except KeyExistsError:
                raise _invalid(owner, "spec.clusterIPs", f'Invalid value: ["{ip}"]: failed to allocate IP '
                               f"{ip}: provided IP is already allocated") from None
            return ip
        size = self._last - self._first + 1
        # Start where the last allocation ended: a full scan only happens when the range is nearly full.
        for i in range(size):
            n = self._first + (self._next - self._first + i) % size
            candidate = str(ipaddress.ip_address(n))
            if candidate in self.reserved:
                continue
            try:
                await self.store.create(self._key(candidate), owner.encode())
            except KeyExistsError:
                continue
            self._next = n + 1 if n < self._last else self._first
            return candidate
        raise errors.ApiError(500, "InternalError", f"Internal error occurred: range {self.network} is full")

    async def release(self, ip: str) -> None:
        try:
            await self.store.delete(self._key(ip))
        except KeyNotFoundError:
            pass


class PortAllocator:
    def __init__(self, store: Store, first: int = 30000, last: int = 32767) -> None:
        self.store = store
        self.first = first
        self.last = last

    def _key(self, port: int) -> str:
        return f"/registry/ranges/servicenodeports/{port}"

    async def allocate(self, port: int | None = None, owner: str = "", field: str = "spec.ports[0].nodePort") -> int:
        if port is not None:
            if not self.first <= port <= self.last:
                raise _invalid(owner, field, f"Invalid value: {port}: provided port is not in the valid "
                               f"range. The range of valid ports is {self.first}-{self.last}")
            try:
                await self.store.create(self._key(port), owner.encode())
            except KeyExistsError:
                raise _invalid(owner, field, f"Invalid value: {port}: provided port is already allocated"
                               ) from None
            return port
        # Random probing like Kubernetes' allocator: cheap while the range is sparse.
        size = self.last - self.first + 1
        start = random.randrange(size)
        for i in range(size):
            candidate = self.first + (start + i) % size
            try:
                await self.store.create(self._key(candidate), owner.encode())
            except KeyExistsError:
                continue
            return candidate
        raise errors.ApiError(500, "InternalError", "Internal error occurred: range of node ports is full")

    async def release(self, port: int) -> None:
        try:
            await self.store.delete(self._key(port))
        except KeyNotFoundError:
            pass
