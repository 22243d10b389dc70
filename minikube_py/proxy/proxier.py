"""The sync loop: whenever Services or EndpointSlices change (at most once per min sync period) and
every sync period regardless, compute the whole rule set and apply it in one iptables-restore.

Like kube-proxy, nothing is written before both caches have synced — a proxy restarting with an
empty cache must not wipe the rules traffic is flowing through — and nothing is removed on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from minikube_py.client import APIClient, Informer, MetricsRegistry

from .iptables import IPTables, IPTablesError
from .rules import TABLES, RulesConfig, RuleSet, generate, restore_input
from .services import Endpoint, ServicePort, endpoints_for, service_ports, slice_service_key

log = logging.getLogger(__name__)

# kube-proxy's sync duration buckets: 1 ms doubling to about 16 s.
DURATION_BUCKETS = tuple(0.001 * 2**i for i in range(15))


class ObjectSource(Protocol):
    """What the proxier reads a resource from: an Informer, or anything listing objects the same way."""

    async def wait_synced(self, timeout: float | None = None) -> bool: ...

    def list(self, namespace: str | None = None) -> list[dict[str, Any]]: ...


@dataclass
class HealthState:
    healthy: bool
    last_updated: float | None  # wall-clock time of the last successful sync
    node_eligible: bool


class Proxier:
    """Keeps the kernel's KUBE-* chains equal to what the Services and EndpointSlices say."""

    def __init__(self, iptables: IPTables, config: RulesConfig, *, services: ObjectSource,
                 slices: ObjectSource, sync_period: float = 30.0, min_sync_period: float = 1.0,
                 health_timeout: float | None = None, metrics: MetricsRegistry | None = None,
                 node_eligible: Callable[[], bool] = lambda: True) -> None:
        if sync_period <= 0 or min_sync_period < 0:
            raise ValueError("sync_period must be positive and min_sync_period not negative")
        self.iptables = iptables
        self.config = config
        self.services = services
        self.slices = slices
        self.sync_period = sync_period
        self.min_sync_period = min_sync_period
        # kube-proxy's healthz timeout: two sync periods without a successful sync is unhealthy.
        self.health_timeout = health_timeout if health_timeout is not None else 2 * sync_period
        self.retry_period = min(sync_period, max(min_sync_period, 1.0))
        self.node_eligible = node_eligible
        self.last_ruleset: RuleSet | None = None
        self.syncs = 0
        self.failures = 0
        self._changed = asyncio.Event()
        self._started = time.monotonic()
        self._last_attempt = float("-inf")
        self._last_success: float | None = None  # monotonic
        self._last_success_wall: float | None = None
        m = metrics or MetricsRegistry()
        self._m_duration = m.histogram("kubeproxy_sync_proxy_rules_duration_seconds",
                                       "SyncProxyRules latency in seconds", buckets=DURATION_BUCKETS)
        self._m_last = m.gauge("kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                               "The last time proxy rules were successfully synced")
        self._m_queued = m.gauge("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
                                 "The last time a sync of proxy rules was queued")
        self._m_failures = m.counter("kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
                                     "Cumulative proxy iptables restore failures")
        self._m_rules = m.gauge("kubeproxy_sync_proxy_rules_iptables_total",
                                "Number of proxy iptables rules programmed", ["table"])
        self._m_service_changes = m.counter("kubeproxy_sync_proxy_rules_service_changes_total",
                                            "Cumulative proxy rules Service changes")
        self._m_endpoint_changes = m.counter("kubeproxy_sync_proxy_rules_endpoint_changes_total",
                                             "Cumulative proxy rules EndpointSlice changes")

    # ---- events ----------------------------------------------------------------------------------

    def request_sync(self) -> None:
        self._m_queued.set(time.time())
        self._changed.set()

    def service_changed(self, *_: Any) -> None:
        self._m_service_changes.inc()
        self.request_sync()

    def endpoints_changed(self, *_: Any) -> None:
        self._m_endpoint_changes.inc()
        self.request_sync()

    # ---- state -----------------------------------------------------------------------------------

    def desired(self) -> list[tuple[ServicePort, list[Endpoint]]]:
        """Every proxied service port with the endpoints its traffic goes to."""
        by_service: dict[str, list[dict[str, Any]]] = {}
        for eps in self.slices.list():
            key = slice_service_key(eps)
            if key is not None:
                by_service.setdefault(key, []).append(eps)
        out = []
        for svc in self.services.list():
            for sp in service_ports(svc):
                out.append((sp, endpoints_for(sp, by_service.get(sp.service_key, []))))
        return out

    def health(self) -> HealthState:
        ref = self._last_success if self._last_success is not None else self._started
        fresh = time.monotonic() - ref < self.health_timeout
        eligible = bool(self.node_eligible())
        return HealthState(fresh and eligible, self._last_success_wall, eligible)

    def live(self) -> bool:
        ref = self._last_success if self._last_success is not None else self._started
        return time.monotonic() - ref < self.health_timeout

    # ---- syncing ---------------------------------------------------------------------------------

    async def sync(self) -> bool:
        """One full sync; False (logged, counted) when iptables refused it."""
        start = time.monotonic()
        try:
            rs = generate(self.desired(), self.config)
            saved = await self.iptables.save()
            await self.iptables.restore(restore_input(rs, saved))
        except IPTablesError as e:
            self.failures += 1
            self._m_failures.inc()
            log.error("syncing proxy rules failed: %s", e)
            return False
        elapsed = time.monotonic() - start
        self.syncs += 1
        self.last_ruleset = rs
        self._last_success = time.monotonic()
        self._last_success_wall = time.time()
        self._m_duration.observe(elapsed)
        self._m_last.set(self._last_success_wall)
        for table in TABLES:
            self._m_rules.labels(table).set(rs.rule_count(table))
        log.info("synced proxy rules in %.1f ms (%d nat, %d filter rules)", elapsed * 1000,
                 rs.rule_count("nat"), rs.rule_count("filter"))
        return True

    async def wait_sources_synced(self) -> None:
        await self.services.wait_synced()
        await self.slices.wait_synced()

    async def run(self) -> None:
        """Sync on changes and periodically until cancelled (the rules stay in place)."""
        await self.wait_sources_synced()
        while True:
            wait = self._last_attempt + self.min_sync_period - time.monotonic()
            if wait > 0:
                # Rate limit: a burst of endpoint changes becomes one restore.
                await asyncio.sleep(wait)
            self._changed.clear()
            self._last_attempt = time.monotonic()
            try:
                ok = await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug in rule generation must not kill the loop: the periodic sync retries.
                log.exception("syncing proxy rules failed")
                ok = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.sync_period if ok else self.retry_period)


class NodeWatch:
    """This node's object: its addresses (logged) and whether it is being deleted."""

    def __init__(self, informer: Informer, node_name: str) -> None:
        self.informer = informer
        self.node_name = node_name
        self._ips: list[str] = []
        informer.add_handlers(self._seen, lambda _old, new: self._seen(new), None)

    def _seen(self, node: dict[str, Any]) -> None:
        ips = [a.get("address", "") for a in (node.get("status") or {}).get("addresses") or ()
               if isinstance(a, dict) and a.get("type") in ("InternalIP", "ExternalIP")]
        if ips != self._ips:
            self._ips = ips
            log.info("node %s has addresses %s", self.node_name, ", ".join(ips) or "(none)")

    @property
    def ips(self) -> list[str]:
        return list(self._ips)

    def eligible(self) -> bool:
        """kube-proxy reports unhealthy while its node is being deleted, so load balancers drain it;
        a node not registered yet is fine (the kubelet registers it)."""
        node = self.informer.get(self.node_name)
        return node is None or not (node.get("metadata") or {}).get("deletionTimestamp")


def make_informers(client: APIClient, node_name: str) -> tuple[Informer, Informer, Informer]:
    """Informers for every Service, every EndpointSlice and this node."""
    return (Informer(client, "services"), Informer(client, "endpointslices.discovery.k8s.io"),
            Informer(client, "nodes", field_selector=f"metadata.name={node_name}"))


def wire(proxier: Proxier, services: Informer, slices: Informer) -> None:
    services.add_handlers(proxier.service_changed, proxier.service_changed, proxier.service_changed)
    slices.add_handlers(proxier.endpoints_changed, proxier.endpoints_changed, proxier.endpoints_changed)
