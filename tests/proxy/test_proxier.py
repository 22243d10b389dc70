"""The sync loop against an in-memory iptables: when it syncs, what it writes, how it reports health."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from minikube_py.client import MetricsRegistry
from minikube_py.proxy.healthz import HealthzServer
from minikube_py.proxy.iptables import IPTablesError, parse_save
from minikube_py.proxy.proxier import HealthState, NodeWatch, Proxier
from minikube_py.proxy.rules import RulesConfig, service_chain
from minikube_py.proxy.services import ServicePort


class FakeIPTables:
    """iptables-restore --noflush semantics on an in-memory model: declaring a chain creates or flushes
    it, -A/-I/-D edit it, -X deletes it (refused while a rule still jumps to it)."""

    BUILTIN = {"filter": ("INPUT", "FORWARD", "OUTPUT"),
               "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")}

    def __init__(self) -> None:
        self.restores: list[str] = []
        self.fail = False
        self.tables: dict[str, dict[str, list[str]]] = {
            t: {c: [] for c in cs} for t, cs in self.BUILTIN.items()}

    async def save(self) -> dict[str, Any]:
        lines = []
        for table, chains in self.tables.items():
            lines += [f"*{table}", *(f":{c} - [0:0]" for c in chains)]
            lines += [f"-A {c} {r}" for c, rules in chains.items() for r in rules]
            lines.append("COMMIT")
        return parse_save("\n".join(lines))

    async def restore(self, text: str) -> None:
        if self.fail:
            raise IPTablesError("iptables-restore failed (1): line 3 failed")
        tables = {t: {c: list(r) for c, r in chains.items()} for t, chains in self.tables.items()}
        chains: dict[str, list[str]] = {}
        for line in text.splitlines():
            op, _, rest = line.partition(" ")
            if line.startswith("*"):
                chains = tables.setdefault(line[1:], {})
            elif line.startswith(":"):
                chains[line[1:].split()[0]] = []
            elif op in ("-A", "-I", "-D", "-X"):
                chain, _, spec = rest.partition(" ")
                if chain not in chains:
                    raise IPTablesError(f"no chain {chain}: {line}")
                if op == "-A":
                    chains[chain].append(spec)
                elif op == "-I":
                    chains[chain].insert(0, spec.removeprefix("1 "))
                elif op == "-D":
                    chains[chain].remove(spec)
                elif any(r.endswith(f"-j {chain}") for rules in chains.values() for r in rules):
                    raise IPTablesError(f"chain {chain} is still referenced")
                else:
                    del chains[chain]
        self.tables = tables
        self.restores.append(text)


class FakeSource:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.synced = asyncio.Event()

    async def wait_synced(self, timeout: float | None = None) -> bool:
        await self.synced.wait()
        return True

    def list(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return list(self.items)


SERVICE = {"metadata": {"name": "web", "namespace": "default"},
           "spec": {"clusterIP": "10.96.0.5", "ports": [{"name": "http", "port": 80}]}}
WEB = ServicePort("default", "web", "http", "TCP", "10.96.0.5", 80)


def endpoint_slice(*ips: str) -> dict[str, Any]:
    return {"metadata": {"name": "web-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": [ip]} for ip in ips]}


async def until(pred: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(proxier: Proxier) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(proxier.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def make(sync_period: float = 60.0, min_sync_period: float = 0.0, **kw: Any
         ) -> tuple[Proxier, FakeIPTables, FakeSource, FakeSource]:
    ipt, services, slices = FakeIPTables(), FakeSource([SERVICE]), FakeSource([endpoint_slice("10.244.1.2")])
    proxier = Proxier(ipt, RulesConfig(cluster_cidr="10.244.0.0/16"), services=services,  # type: ignore[arg-type]
                      slices=slices, sync_period=sync_period, min_sync_period=min_sync_period, **kw)
    return proxier, ipt, services, slices


async def test_one_sync_writes_the_services_rules_and_metrics() -> None:
    metrics = MetricsRegistry()
    proxier, ipt, _, _ = make(metrics=metrics)
    assert await proxier.sync()
    [text] = ipt.restores
    assert f"-j {service_chain(WEB)}" in text and "--to-destination 10.244.1.2:8080" in text
    rendered = metrics.render()
    assert "kubeproxy_sync_proxy_rules_duration_seconds_count 1" in rendered
    assert 'kubeproxy_sync_proxy_rules_iptables_total{table="nat"}' in rendered
    assert "kubeproxy_sync_proxy_rules_last_timestamp_seconds" in rendered


async def test_nothing_is_written_before_the_caches_sync_then_changes_follow() -> None:
    proxier, ipt, services, slices = make()
    async with running(proxier):
        services.synced.set()
        await asyncio.sleep(0.1)
        # An empty cache would wipe every rule traffic flows through: wait for both.
        assert ipt.restores == []
        slices.synced.set()
        await until(lambda: len(ipt.restores) == 1)
        slices.items = [endpoint_slice("10.244.1.2", "10.244.1.3")]
        proxier.endpoints_changed()
        await until(lambda: len(ipt.restores) == 2)
        assert "--to-destination 10.244.1.3:8080" in ipt.restores[-1]
        services.items = []
        proxier.service_changed()
        await until(lambda: len(ipt.restores) == 3)
        last, chain = ipt.restores[-1], service_chain(WEB)
        # Nothing jumps to its chain any more, and the chain itself is deleted.
        assert f"-j {chain}" not in last and f"-A {chain} " not in last and f"-X {chain}" in last
        assert chain not in ipt.tables["nat"] and "KUBE-SERVICES" in ipt.tables["nat"]


async def test_a_burst_of_changes_is_one_sync() -> None:
    proxier, ipt, services, slices = make(min_sync_period=0.2)
    services.synced.set()
    slices.synced.set()
    async with running(proxier):
        await until(lambda: len(ipt.restores) == 1)
        for _ in range(20):
            proxier.endpoints_changed()
        await until(lambda: len(ipt.restores) == 2)
        await asyncio.sleep(0.5)
        assert len(ipt.restores) == 2


async def test_periodic_resync_without_changes() -> None:
    proxier, ipt, services, slices = make(sync_period=0.05)
    services.synced.set()
    slices.synced.set()
    async with running(proxier):
        await until(lambda: len(ipt.restores) >= 4)
    assert len(set(ipt.restores[1:])) == 1  # the same rules re-applied (the jumps were added once)


async def test_failures_are_counted_retried_and_turn_health_red() -> None:
    metrics = MetricsRegistry()
    proxier, ipt, services, slices = make(sync_period=0.05, health_timeout=0.3, metrics=metrics)
    assert proxier.health().healthy  # just started: within the grace period
    ipt.fail = True
    services.synced.set()
    slices.synced.set()
    async with running(proxier):
        await until(lambda: proxier.failures >= 2)
        assert "kubeproxy_sync_proxy_rules_iptables_restore_failures_total" in metrics.render()
        await until(lambda: not proxier.health().healthy)
        assert not proxier.live() and proxier.health().last_updated is None
        ipt.fail = False
        await until(lambda: proxier.health().healthy)
        assert proxier.health().last_updated is not None


async def test_a_node_being_deleted_is_unhealthy_but_live() -> None:
    proxier, _, _, _ = make(node_eligible=lambda: False)
    assert await proxier.sync()
    state = proxier.health()
    assert (state.healthy, state.node_eligible, proxier.live()) == (False, False, True)


def test_bad_periods_are_refused() -> None:
    with pytest.raises(ValueError):
        make(sync_period=0)
    with pytest.raises(ValueError):
        make(min_sync_period=-1)


@pytest.mark.parametrize("healthy,code", [(True, 200), (False, 503)])
async def test_healthz_answers_like_kube_proxy(healthy: bool, code: int) -> None:
    state = HealthState(healthy, 1700000000.5, True)
    server = HealthzServer(lambda: state, lambda: True, bind_address="127.0.0.1", port=0)
    await server.start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{server.port}/healthz") as resp:
                assert resp.status == code
                assert resp.content_type == "application/json"
                body = await resp.json()
            async with s.get(f"http://127.0.0.1:{server.port}/livez") as resp:
                assert resp.status == 200
    finally:
        await server.stop()
    assert body["lastUpdated"] == "2023-11-14T22:13:20.500Z"
    assert body["nodeEligible"] is True and body["currentTime"].endswith("Z")


class FakeNodeInformer:
    def __init__(self) -> None:
        self.node: dict[str, Any] | None = None
        self.handlers: list[Any] = []

    def add_handlers(self, on_add: Any, on_update: Any, on_delete: Any) -> None:
        self.handlers = [on_add, on_update]

    def get(self, key: str) -> dict[str, Any] | None:
        return self.node if key == "node1" else None


def test_node_watch_eligibility_and_addresses() -> None:
    informer = FakeNodeInformer()
    watch = NodeWatch(informer, "node1")  # type: ignore[arg-type]
    assert watch.eligible()  # not registered yet: the kubelet will
    informer.node = {"metadata": {"name": "node1"},
                     "status": {"addresses": [{"type": "InternalIP", "address": "192.168.56.21"},
                                              {"type": "Hostname", "address": "node1"}]}}
    informer.handlers[0](informer.node)
    assert watch.ips == ["192.168.56.21"] and watch.eligible()
    informer.node["metadata"] = {"name": "node1", "deletionTimestamp": "2024-01-01T00:00:00Z"}
    assert not watch.eligible()
