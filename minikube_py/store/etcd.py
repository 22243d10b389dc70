"""The store on a real etcd cluster (v3 API over gRPC).

Keys are the store's key strings (UTF-8), values the bytes given; revisions, create/mod revisions and
versions are etcd's own. The client is gRPC straight on the stubs that ship with ``aetcd``
(``aetcd.rpc``) rather than aetcd's ``Client``: that client talks to one endpoint, has no
``prev_kv`` on deletes inside a transaction and hides the watch's ``compact_revision``; the raw
stubs give every field of the v3 API at the same speed (the fastest Python client measured here).

Retries and why they are safe. A call that fails with "unavailable"/"deadline exceeded" may or may
not have been applied by the cluster (the member died after committing, before answering). Every
write is therefore a transaction guarded by a compare that only the first application can pass:

* ``create``  compares ``create_revision == 0``; a second application fails the compare.
* ``update``  compares ``mod_revision == expected``; the first application changes ``mod_revision``.
* ``delete``  compares the key exists (and ``mod_revision`` when guarded).
* ``grant_lease`` picks the lease id on the client, so a re-sent grant finds its own lease.

A retried write thus never applies twice (no duplicate revision, no double version bump) and a
write is acknowledged only from a success answer, i.e. after etcd committed it to a quorum. When a
retry fails its compare, the failure branch reads the key: if an earlier try of this very call may
have landed (``Attempts.retried``) and the key now holds exactly our bytes and lease (``create``:
with ``version == 1``; ``update``: with a newer ``mod_revision``), the call reports success with
that key. The only thing this cannot tell apart is another writer having written the identical
bytes in the same instant, which leaves the store in the state the caller asked for anyway. The
other ambiguous outcomes are reported as errors, never as false successes: a retried ``create``
whose key was changed again afterwards raises :class:`KeyExistsError`, a retried ``delete`` whose
first try landed raises :class:`KeyNotFoundError` (the key is gone either way).

Fail-over (``etcd_endpoints.py``). Calls go to one member; on "unavailable" (connection refused,
no leader, leader changed, timed out) the next endpoint is tried, pausing briefly after each full
round, until ``timeout`` (default 5 s) has passed: then :class:`StoreUnavailableError`. Every call
carries etcd's "require leader" flag, so a member cut off from the quorum refuses at once instead of
queueing. After a failure, tries are capped at 1 s (doubling), because a follower whose leader just
died sits on proposals for seconds. A member is asked for its cluster id before first use and after
each failure, so a dead member's address taken over by another etcd is never written to.

Watches (``etcd_watch.py``) are etcd watches with ``prev_kv``; a lost stream is re-created on the
next member from the revision after the last buffered event. ``from_revision=0`` starts after the
newest revision this client has seen in any answer, so writes it makes after ``watch()`` returns
are always delivered however late the stream is set up.

TLS (``https://`` endpoints, :class:`EtcdTLS`) changes only how channels are made; a handshake
refused for a certificate reason ends a call at once with the endpoint and the cause named.

Compaction. etcd does not say how far it has compacted except inside errors, and range errors
carry no number at all. :meth:`EtcdStore.compacted_revision` therefore asks: a read at revision
``r`` fails exactly when ``r`` is below the compacted revision, so a binary search between what this
client already knows and the current revision finds it in about log2(revision) small reads. The one
case it cannot see is a compaction at revision 1 made by another client (reads at 1 then still
succeed); this client's own compactions are always remembered.
"""

from __future__ import annotations

import secrets
import weakref
from typing import Any

import grpc
from aetcd import rpc

from .etcd_endpoints import (
    ERR_COMPACTED,
    ERR_FUTURE_REV,
    ERR_LEASE_EXISTS,
    ERR_LEASE_NOT_FOUND,
    PROBE_KEY,
    REQUIRE_LEADER,
    Attempts,
    EndpointPool,
    Member,
    error_details,
    translate_rpc_error,
)
from .etcd_tls import EtcdTLS
from .etcd_watch import EtcdWatch, kv_from_pb
from .interface import (
    CompactedError,
    ConflictError,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    LeaseNotFoundError,
    RangeResult,
    Store,
    StoreClosedError,
    StoreError,
    Watch,
    check_key,
    check_limit,
    check_prefix,
    check_revision,
    check_value,
)

# etcd lease ids are int64 and 0 means "no lease".
MAX_LEASE_ID = 2**63 - 1


def _encode_key(key: str) -> bytes:
    try:
        return key.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as err:
        raise ValueError(f"store key {key!r} is not encodable as UTF-8") from err


def prefix_range_end(prefix: bytes) -> bytes:
    """etcd's range end for "every key starting with prefix" (clientv3.GetPrefixRangeEnd)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"  # no upper bound: every key from the start key on


def _check_lease_id(lease: object) -> int:
    if isinstance(lease, bool) or not isinstance(lease, int):
        raise TypeError(f"lease ids are int, not {type(lease).__name__}")
    if lease < 0 or lease > MAX_LEASE_ID:
        raise ValueError(f"lease id {lease} is out of range (0..2**63-1)")
    return lease


def _compare(key: bytes, target: str, result: str, value: int) -> rpc.Compare:
    fields: dict[str, Any] = {
        "key": key,
        "target": getattr(rpc.Compare, target),
        "result": getattr(rpc.Compare, result),
        {"CREATE": "create_revision", "MOD": "mod_revision", "VERSION": "version"}[target]: value,
    }
    return rpc.Compare(**fields)


def _failure_kv(resp: rpc.TxnResponse) -> KeyValue | None:
    kvs = resp.responses[0].response_range.kvs
    return kv_from_pb(kvs[0]) if kvs else None


class EtcdStore(Store):
    """:class:`Store` on an etcd v3 cluster; give every member's client endpoint for fail-over."""

    def __init__(self, pool: EndpointPool, watch_buffer: int) -> None:
        self._pool = pool
        self._watch_buffer = watch_buffer
        self._closed = False
        # The newest revision any answer carried: "watch from now" starts after it, so every write
        # this client finishes after watch() returns is delivered, however late the stream opens.
        self._seen_revision = 0
        # The highest compaction this client knows of (its own, or learnt from etcd).
        self._compacted = 0
        self._watches: weakref.WeakSet[EtcdWatch] = weakref.WeakSet()

    @classmethod
    async def open(
        cls,
        endpoints: list[str],
        *,
        watch_buffer: int = 1000,
        timeout: float = 5.0,
        tls: EtcdTLS | None = None,
    ) -> EtcdStore:
        """Connect to ``endpoints`` (``[http[s]://]host:port``, all with the same scheme; ``tls`` makes
        them https); :class:`StoreUnavailableError` if none answers within ``timeout`` seconds, which
        is also the limit of every later call. ValueError for endpoints or TLS files that cannot work."""
        if isinstance(watch_buffer, bool) or not isinstance(watch_buffer, int) or watch_buffer < 1:
            raise ValueError(f"watch_buffer must be a positive int, not {watch_buffer!r}")
        store = cls(EndpointPool(endpoints, timeout, tls), watch_buffer)
        try:
            await store.current_revision()
        except BaseException:
            await store.close()
            raise
        return store

    @property
    def endpoints(self) -> list[str]:
        return list(self._pool.endpoints)

    @property
    def secure(self) -> bool:
        """True when the members are reached over TLS."""
        return self._pool.tls is not None

    # -- plumbing --------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the etcd store is closed")

    def _observe(self, revision: int) -> None:
        if revision > self._seen_revision:
            self._seen_revision = revision

    async def _kv(self, method: str, request: Any, attempts: Attempts | None = None) -> Any:
        """One KV call with fail-over. etcd's refusals come out as :class:`grpc.aio.AioRpcError`;
        the callers translate them, knowing which revision was asked for."""

        async def once(member: Member, budget: float) -> Any:
            return await getattr(member.kv, method)(request, timeout=budget, metadata=REQUIRE_LEADER)

        resp = await self._pool.call(once, attempts)
        self._observe(resp.header.revision)
        return resp

    async def _read_error(self, err: grpc.aio.AioRpcError, revision: int) -> StoreError:
        details = error_details(err)
        if ERR_COMPACTED in details:
            return CompactedError(revision, await self._find_compacted())
        if ERR_FUTURE_REV in details:
            return FutureRevisionError(revision, await self.current_revision())
        return translate_rpc_error(err)

    async def _range(self, request: rpc.RangeRequest) -> rpc.RangeResponse:
        try:
            return await self._kv("Range", request)
        except grpc.aio.AioRpcError as err:
            raise await self._read_error(err, request.revision) from err

    async def _txn(self, request: rpc.TxnRequest, attempts: Attempts) -> rpc.TxnResponse:
        try:
            return await self._kv("Txn", request, attempts)
        except grpc.aio.AioRpcError as err:
            raise translate_rpc_error(err) from err

    # -- reads -----------------------------------------------------------------------------------

    async def get(self, key: str, revision: int | None = None) -> KeyValue | None:
        self._check_open()
        k = _encode_key(check_key(key))
        rev = check_revision(revision) or 0
        resp = await self._range(rpc.RangeRequest(key=k, revision=rev))
        return kv_from_pb(resp.kvs[0]) if resp.kvs else None

    async def range(
        self,
        prefix: str,
        limit: int = 0,
        start_after: str | None = None,
        revision: int | None = None,
    ) -> RangeResult:
        self._check_open()
        p = _encode_key(check_prefix(prefix))
        check_limit(limit)
        rev = check_revision(revision) or 0
        start = p if p else b"\x00"
        if start_after is not None:
            after = _encode_key(check_prefix(start_after, "start key")) + b"\x00"
            start = max(start, after)
        end = prefix_range_end(p)
        if end != b"\x00" and start >= end:
            # Past the prefix: nothing matches (etcd would read [start, end) as empty too, but
            # only by accident of its argument checks).
            resp = await self._range(rpc.RangeRequest(key=PROBE_KEY, revision=rev, count_only=True))
            return RangeResult(items=[], revision=rev or resp.header.revision, more=False, count=0)
        resp = await self._range(rpc.RangeRequest(key=start, range_end=end, limit=limit, revision=rev))
        return RangeResult(
            items=[kv_from_pb(kv) for kv in resp.kvs],
            revision=rev or resp.header.revision,
            more=bool(resp.more),
            count=int(resp.count),
        )

    async def current_revision(self) -> int:
        self._check_open()
        resp = await self._range(rpc.RangeRequest(key=PROBE_KEY, count_only=True))
        return int(resp.header.revision)

    # -- writes ----------------------------------------------------------------------------------

    async def create(self, key: str, value: bytes, lease: int = 0) -> KeyValue:
        self._check_open()
        key = check_key(key)
        value = check_value(value)
        lease = _check_lease_id(lease)
        k = _encode_key(key)
        attempts = Attempts()
        resp = await self._txn(
            rpc.TxnRequest(
                compare=[_compare(k, "CREATE", "EQUAL", 0)],
                success=[rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=value, lease=lease))],
                failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=k))],
            ),
            attempts,
        )
        if resp.succeeded:
            rev = int(resp.header.revision)
            return KeyValue(key, value, rev, rev, 1, lease)
        current = _failure_kv(resp)
        if (
            attempts.retried
            and current is not None
            and current.version == 1
            and current.value == value
            and current.lease == lease
        ):
            return current  # an earlier try of this call was applied (see the module docstring)
        raise KeyExistsError(key, current)

    async def update(self, key: str, value: bytes, expected_mod_revision: int, lease: int = 0) -> KeyValue:
        self._check_open()
        key = check_key(key)
        value = check_value(value)
        expected = check_revision(expected_mod_revision, allow_none=False)
        assert expected is not None
        lease = _check_lease_id(lease)
        k = _encode_key(key)
        attempts = Attempts()
        resp = await self._txn(
            rpc.TxnRequest(
                # etcd compares a missing key as all-zero revisions: "version > 0" keeps
                # expected_mod_revision=0 from creating the key.
                compare=[_compare(k, "MOD", "EQUAL", expected), _compare(k, "VERSION", "GREATER", 0)],
                success=[rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=value, lease=lease, prev_kv=True))],
                failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=k))],
            ),
            attempts,
        )
        if resp.succeeded:
            prev = resp.responses[0].response_put.prev_kv
            rev = int(resp.header.revision)
            return KeyValue(key, value, prev.create_revision, rev, prev.version + 1, lease)
        current = _failure_kv(resp)
        if current is None:
            raise KeyNotFoundError(key)
        if attempts.retried and current.mod_revision > expected and current.value == value and current.lease == lease:
            return current  # an earlier try of this call was applied (see the module docstring)
        raise ConflictError(key, expected, current)

    async def delete(self, key: str, expected_mod_revision: int | None = None) -> KeyValue:
        self._check_open()
        key = check_key(key)
        expected = check_revision(expected_mod_revision)
        k = _encode_key(key)
        compare = [_compare(k, "VERSION", "GREATER", 0)]
        if expected is not None:
            compare.append(_compare(k, "MOD", "EQUAL", expected))
        resp = await self._txn(
            rpc.TxnRequest(
                compare=compare,
                success=[rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k, prev_kv=True))],
                failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=k))],
            ),
            Attempts(),
        )
        if resp.succeeded:
            prev_kvs = resp.responses[0].response_delete_range.prev_kvs
            if not prev_kvs:  # cannot happen under the compare; never report a delete that wasn't
                raise KeyNotFoundError(key)
            return kv_from_pb(prev_kvs[0])
        current = _failure_kv(resp)
        if current is None:
            raise KeyNotFoundError(key)
        assert expected is not None  # only the mod_revision compare can fail on a present key
        raise ConflictError(key, expected, current)

    # -- watch -----------------------------------------------------------------------------------

    def watch(self, prefix: str, from_revision: int) -> Watch:
        self._check_open()
        p = _encode_key(check_prefix(prefix))
        rev = check_revision(from_revision, allow_none=False)
        assert rev is not None
        if 0 < rev < self._compacted:
            raise CompactedError(rev, self._compacted)  # known here; etcd would say so on the stream
        start_after = rev if rev > 0 else self._seen_revision
        w = EtcdWatch(
            self._pool,
            key=p if p else b"\x00",
            range_end=prefix_range_end(p),
            from_revision=start_after,
            buffer=self._watch_buffer,
            on_revision=self._observe,
            on_done=self._watches.discard,
        )
        self._watches.add(w)
        return w

    # -- compaction ------------------------------------------------------------------------------

    async def compact(self, revision: int) -> None:
        self._check_open()
        rev = check_revision(revision, allow_none=False)
        assert rev is not None
        if rev < self._compacted:
            raise CompactedError(rev, self._compacted)
        if rev == self._compacted:
            return  # compacting to where the store already is changes nothing
        attempts = Attempts()

        async def once(member: Member, budget: float) -> Any:
            return await member.kv.Compact(rpc.CompactionRequest(revision=rev), timeout=budget, metadata=REQUIRE_LEADER)

        try:
            resp = await self._pool.call(once, attempts)
            self._observe(resp.header.revision)
        except grpc.aio.AioRpcError as err:
            details = error_details(err)
            if ERR_FUTURE_REV in details:
                raise FutureRevisionError(rev, await self.current_revision()) from err
            if ERR_COMPACTED not in details:
                raise translate_rpc_error(err) from err
            # etcd refuses rev <= its compacted revision; only "below" is an error for the store.
            compacted = await self._find_compacted()
            if rev < compacted and not attempts.retried:
                raise CompactedError(rev, compacted) from err
        self._compacted = max(self._compacted, rev)

    async def compacted_revision(self) -> int:
        self._check_open()
        return await self._find_compacted()

    async def _find_compacted(self) -> int:
        """The smallest revision etcd still reads is its compacted revision (binary search)."""
        lo, hi = max(self._compacted, 1), await self.current_revision()
        while lo < hi:
            mid = (lo + hi) // 2
            try:
                await self._kv("Range", rpc.RangeRequest(key=PROBE_KEY, revision=mid, count_only=True))
                hi = mid
            except grpc.aio.AioRpcError as err:
                if ERR_COMPACTED not in error_details(err):
                    raise translate_rpc_error(err) from err
                lo = mid + 1
        if lo > 1:
            self._compacted = max(self._compacted, lo)
        return self._compacted

    # -- leases ----------------------------------------------------------------------------------

    async def grant_lease(self, ttl_seconds: int) -> int:
        self._check_open()
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int):
            raise TypeError(f"lease TTLs are int seconds, not {type(ttl_seconds).__name__}")
        if ttl_seconds < 1:
            raise ValueError(f"lease TTL {ttl_seconds} must be at least 1 second")
        # Chosen here, not by etcd, so a re-sent grant is recognised (see the module docstring).
        lease_id = secrets.randbelow(MAX_LEASE_ID) + 1
        attempts = Attempts()

        async def once(member: Member, budget: float) -> Any:
            return await member.lease.LeaseGrant(
                rpc.LeaseGrantRequest(TTL=ttl_seconds, ID=lease_id), timeout=budget, metadata=REQUIRE_LEADER
            )

        try:
            resp = await self._pool.call(once, attempts)
        except grpc.aio.AioRpcError as err:
            if ERR_LEASE_EXISTS in error_details(err) and attempts.retried:
                return lease_id
            raise translate_rpc_error(err) from err
        if resp.error:
            raise StoreError(f"etcd refused the lease: {resp.error}")
        self._observe(resp.header.revision)
        return int(resp.ID)

    async def keepalive_lease(self, lease_id: int) -> int:
        self._check_open()
        lease_id = _check_lease_id(lease_id)
        if lease_id == 0:
            raise LeaseNotFoundError("lease 0 means no lease")

        async def once(member: Member, budget: float) -> Any:
            # The keep-alive RPC is a stream; one request and its answer is one renewal.
            call = member.lease.LeaseKeepAlive(timeout=budget, metadata=REQUIRE_LEADER)
            try:
                await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
                return await call.read()
            finally:
                call.cancel()

        try:
            resp = await self._pool.call(once)
        except grpc.aio.AioRpcError as err:
            raise translate_rpc_error(err) from err
        if resp is grpc.aio.EOF:
            raise StoreError("etcd closed the keep-alive stream without an answer")
        if resp.TTL <= 0:
            raise LeaseNotFoundError(f"lease {lease_id} not found or expired")
        self._observe(resp.header.revision)
        return int(resp.TTL)

    async def revoke_lease(self, lease_id: int) -> None:
        self._check_open()
        lease_id = _check_lease_id(lease_id)
        if lease_id == 0:
            raise LeaseNotFoundError("lease 0 means no lease")
        attempts = Attempts()

        async def once(member: Member, budget: float) -> Any:
            return await member.lease.LeaseRevoke(
                rpc.LeaseRevokeRequest(ID=lease_id), timeout=budget, metadata=REQUIRE_LEADER
            )

        try:
            resp = await self._pool.call(once, attempts)
        except grpc.aio.AioRpcError as err:
            if ERR_LEASE_NOT_FOUND in error_details(err) and attempts.retried:
                return  # our earlier try revoked it
            raise translate_rpc_error(err) from err
        self._observe(resp.header.revision)

    # -- lifecycle -------------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for w in list(self._watches):
            w.fail(StoreClosedError("the etcd store was closed"))
        await self._pool.close()
