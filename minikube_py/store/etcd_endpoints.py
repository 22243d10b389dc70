"""gRPC channels to a list of etcd members, with fail-over between them.

etcd clients talk to one member at a time; when it stops answering (killed, partitioned, lost its
leader) the call is retried on the next member until one answers or the store's timeout runs out,
then :class:`StoreUnavailableError`. Which calls are safe to retry is the caller's business (see
``etcd.py``): this module only reports, via ``Attempts``, that an earlier try may have landed.

TLS. ``https://`` endpoints get TLS channels (:class:`EtcdTLS`: the CA that signed etcd's serving
certificates, and the client pair etcd's ``--client-cert-auth`` asks for); every endpoint of a store
uses the same scheme. A handshake that fails for a certificate reason does not get better by
waiting, so once every endpoint has failed that way in one call the call stops at once with an error
naming each endpoint and the cause, instead of retrying until the timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from aetcd import rpc

from .etcd_tls import EtcdTLS, tls_failure
from .interface import (
    LeaseNotFoundError,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
    ValueTooLargeError,
)

T = TypeVar("T")

# Codes etcd and gRPC use for "this member cannot serve you now": connection refused or reset,
# no leader, leader changed, request timed out, too many requests. Anything else is an answer.
RETRYABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)

CHANNEL_OPTIONS = [
    # A list of many 1.5 MiB objects is far beyond gRPC's 4 MiB default.
    ("grpc.max_receive_message_length", 512 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    # gRPC's default reconnect back-off grows to 120 s; a member that comes back should be usable
    # within a second.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Finds a member that hangs without closing the socket (SIGSTOP, partition). etcd's default
    # --grpc-keepalive-min-time is 5 s; pinging more often gets the connection closed.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]

# While some member failed recently, how long the first try of a call may take before the next
# member is asked (each further try gets twice as long). A member whose leader just died keeps
# forwarding proposals to it until it notices (one election timeout, 1 s by default), then lets
# them sit until etcd's own request timeout (5 s + 2 election timeouts): waiting for that answer
# stalled writes 3.3 s in the leader-kill test, against under 1 s with this. When nothing failed
# lately a try gets the whole budget instead: a loaded but healthy cluster (2,000 concurrent creates
# queue for over a second here) must not see every slow write re-sent, which only adds load.
FIRST_TRY_SECONDS = 1.0

# Ask members to refuse a request at once while they know they have no leader (etcd's
# rpctypes.MetadataRequireLeaderKey), instead of queueing it; for watches it also makes a member cut
# off from the quorum end the stream rather than keep it open and deliver nothing.
REQUIRE_LEADER = (("hasleader", "true"),)

# A key no store caller can write (check_key refuses NUL): reads of it cost etcd almost nothing.
PROBE_KEY = b"\x00minikube-py/probe"

# etcd's error texts (server/etcdserver/api/v3rpc/rpctypes); the status code alone is ambiguous.
ERR_COMPACTED = "required revision has been compacted"
ERR_FUTURE_REV = "required revision is a future revision"
ERR_LEASE_NOT_FOUND = "requested lease not found"
ERR_LEASE_EXISTS = "lease already exists"
ERR_TOO_LARGE = "request is too large"


class EtcdRequestError(StoreError):
    """etcd refused a request for a reason none of the store's own errors covers."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"etcd: {details} ({code.name})")
        self.code = code
        self.details = details


def error_details(err: grpc.aio.AioRpcError) -> str:
    return err.details() or ""


def is_retryable(err: grpc.aio.AioRpcError) -> bool:
    """True when another try, maybe on another member, could succeed."""
    # gRPC reports a message over its size limit as RESOURCE_EXHAUSTED too; that never gets better.
    return err.code() in RETRYABLE_CODES and "larger than max" not in error_details(err)


def translate_rpc_error(err: grpc.aio.AioRpcError) -> StoreError:
    """The store error for an etcd answer that is not worth retrying elsewhere."""
    details = error_details(err)
    code = err.code()
    if ERR_LEASE_NOT_FOUND in details:
        return LeaseNotFoundError(details)
    if ERR_TOO_LARGE in details or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger" in details):
        return ValueTooLargeError(details)
    return EtcdRequestError(err.code(), details)


@dataclass
class Member:
    """One endpoint's channel and the stubs bound to it (stubs are cheap but not free to build)."""

    endpoint: str
    channel: grpc.aio.Channel
    # False until the member answered as part of our cluster, and again after each failure.
    verified: bool = False
    kv: rpc.KVStub = field(init=False)
    lease: rpc.LeaseStub = field(init=False)
    watch: rpc.WatchStub = field(init=False)

    def __post_init__(self) -> None:
        self.kv = rpc.KVStub(self.channel)
        self.lease = rpc.LeaseStub(self.channel)
        self.watch = rpc.WatchStub(self.channel)


@dataclass
class Attempts:
    """How many times a call was sent; more than one means an earlier try may have been applied."""

    count: int = 0

    @property
    def retried(self) -> bool:
        return self.count > 1


def split_endpoint(endpoint: object) -> tuple[str | None, str]:
    """(``"http"``, ``"https"`` or None when no scheme is written, ``host:port``)."""
    if not isinstance(endpoint, str):
        raise TypeError(f"etcd endpoints are str, not {type(endpoint).__name__}")
    target = endpoint.strip()
    scheme: str | None = None
    for prefix, name in (("http://", "http"), ("grpc://", "http"), ("https://", "https"), ("unixs://", "")):
        if target.startswith(prefix):
            if not name:
                raise ValueError(f"etcd endpoint {endpoint!r}: unix sockets are not supported")
            scheme, target = name, target.removeprefix(prefix)
    target = target.rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not host or "/" in target or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"etcd endpoint {endpoint!r} is not [http[s]://]host:port")
    return scheme, target


def normalize_endpoint(endpoint: object) -> str:
    return split_endpoint(endpoint)[1]


class EndpointPool:
    """Channels to every endpoint, opened lazily; calls go to the current one and move on failure."""

    def __init__(self, endpoints: list[str], timeout: float, tls: EtcdTLS | None = None) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        if not endpoints:
            raise ValueError("at least one etcd endpoint is required")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        split = [split_endpoint(e) for e in endpoints]
        self.endpoints = [target for _, target in split]
        schemes = {scheme for scheme, _ in split if scheme}
        if len(schemes) > 1:
            raise ValueError(f"etcd endpoints mix http:// and https:// ({', '.join(endpoints)}): "
                             "every member must be reached the same way")
        if "http" in schemes and tls is not None:
            raise ValueError(f"TLS files are given for etcd but the endpoints are http:// ({', '.join(endpoints)}); "
                             "use https:// endpoints")
        # A bare host:port is https when TLS files are given, as etcdctl does with --cacert.
        self.tls = tls if tls is not None else (EtcdTLS() if "https" in schemes else None)
        self.scheme = "https" if self.tls is not None else "http"
        self._credentials = self.tls.credentials() if self.tls is not None else None
        self.timeout = float(timeout)
        self.first_try = min(self.timeout, FIRST_TRY_SECONDS)
        self._last_failure = float("-inf")
        self._members: dict[int, Member] = {}
        self._current = 0
        # Learnt from the first answer; a member of another cluster is treated as unavailable.
        self.cluster_id: int | None = None
        self.closed = False

    def member(self, index: int) -> Member:
        if self.closed:
            raise StoreClosedError("the etcd store is closed")
        m = self._members.get(index)
        if m is None:
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(self.endpoints[index], options=CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.secure_channel(self.endpoints[index], self._credentials, options=CHANNEL_OPTIONS)
            m = self._members[index] = Member(self.endpoints[index], channel)
        return m

    def url(self, index: int) -> str:
        return f"{self.scheme}://{self.endpoints[index]}"

    @property
    def current(self) -> int:
        return self._current

    def failed(self, index: int) -> None:
        """``index`` did not answer: later calls start at the next endpoint (unless someone moved on)."""
        self._last_failure = asyncio.get_running_loop().time()
        m = self._members.get(index)
        if m is not None:
            m.verified = False
        if self._current == index:
            self._current = (index + 1) % len(self.endpoints)

    async def ready(self, index: int, budget: float) -> Member:
        """The member at ``index``, after checking it serves our cluster if that is not known.

        A member that went away can come back as something else: in tests its loopback port is
        free for any other etcd to take, in real life a host gets reinstalled. Writes sent there
        would land in the wrong cluster, so a member is asked for its cluster id (one tiny read)
        before its first use and after each failure. Raises :class:`grpc.aio.AioRpcError`.
        """
        m = self.member(index)
        if m.verified:
            return m
        resp = await m.kv.Range(
            rpc.RangeRequest(key=PROBE_KEY, count_only=True, serializable=True),
            timeout=budget,
            metadata=REQUIRE_LEADER,
        )
        cluster = int(resp.header.cluster_id)
        if self.cluster_id is None:
            self.cluster_id = cluster
        elif cluster != self.cluster_id:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                details=f"member {m.endpoint} belongs to cluster {cluster:x}, not {self.cluster_id:x}",
            )
        m.verified = True
        return m

    def degraded(self) -> bool:
        """True while a member failed within the last ``timeout`` seconds."""
        return asyncio.get_running_loop().time() - self._last_failure < self.timeout

    async def call(
        self,
        fn: Callable[[Member, float], Awaitable[T]],
        attempts: Attempts | None = None,
        first_try: float | None = None,
    ) -> T:
        """Run ``fn(member, per_try_timeout)`` on the current endpoint, moving on while it fails with
        a retryable code; :class:`StoreUnavailableError` once ``timeout`` has passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        attempts = attempts if attempts is not None else Attempts()
        last: grpc.aio.AioRpcError | None = None
        # None: no limit below the budget (all members looked healthy when the call started).
        per_try = first_try if first_try is not None else (self.first_try if self.degraded() else None)
        pause = 0.02
        tries = 0
        # endpoint index -> why its TLS handshake failed during this call
        tls_failed: dict[int, str] | None = None
        while True:
            if self.closed:
                raise StoreClosedError("the etcd store is closed")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise StoreUnavailableError(
                    f"no etcd endpoint answered within {self.timeout}s "
                    f"({', '.join(map(self.url, range(len(self.endpoints))))}): "
                    f"{self._describe(last) if last else 'no attempt'}"
                ) from last
            index = self._current
            budget = remaining if per_try is None else min(remaining, per_try)
            tries += 1
            try:
                member = await self.ready(index, budget)
                attempts.count += 1
                return await fn(member, budget)
            except grpc.aio.AioRpcError as err:
                if self.closed:
                    raise StoreClosedError("the etcd store is closed") from err
                if not is_retryable(err):
                    raise
                last = err
                self.failed(index)
                cause = tls_failure(err, self.tls)
                if cause is not None:
                    tls_failed = tls_failed or {}
                    tls_failed[index] = cause
                    if len(tls_failed) == len(self.endpoints):
                        raise StoreUnavailableError("; ".join(
                            f"etcd {self.url(i)}: {tls_failed[i]}" for i in sorted(tls_failed))) from err
                if per_try is None:
                    per_try = self.first_try
                elif err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    per_try *= 2
            # A full round without an answer: the cluster is electing or gone; do not spin.
            if tries % len(self.endpoints) == 0:
                await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
                pause = min(pause * 2, 0.5)

    def _describe(self, err: grpc.aio.AioRpcError) -> str:
        cause = tls_failure(err, self.tls)
        return error_details(err) if cause is None else f"{cause}; gRPC said: {error_details(err)}"

    async def close(self) -> None:
        self.closed = True
        members, self._members = list(self._members.values()), {}
        for m in members:
            await m.channel.close()
