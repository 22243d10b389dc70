"""The cluster controllers against a real API server process: node IPAM, node lifecycle (heartbeats,
taints, eviction), Endpoints and EndpointSlices, the default ServiceAccount, namespace deletion, and
the controller-manager itself (flags, health port, leader fail-over between two processes)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from minikube_py.cli.durations import parse_duration
from minikube_py.cli.main import main as cli_main
from minikube_py.client.rest import APIClient, ApiStatusError
from minikube_py.controllers.endpoints import resolve_target_port
from minikube_py.controllers.manager import parse_controllers
from minikube_py.controllers.nodeipam import CIDRSet
from minikube_py.controllers.nodelifecycle import (
    TAINT_NOT_READY,
    TAINT_UNREACHABLE,
    eviction_delay,
    tolerates,
)
from tests.apiserver.conftest import LocalAPIServer, start_apiserver, stop_apiserver
from tests.controllers.cluster_fixtures import *  # noqa: F403
from tests.controllers.cluster_fixtures import (
    Heartbeat,
    ManagerFactory,
    eventually,
    make_namespace,
    make_node,
    make_pod,
    node_taints,
    now,
    post_node_status,
    set_pod_status,
    start_cm_process,
    stop_cm_process,
    uid,
)

UNREACHABLE_NOEXEC = (TAINT_UNREACHABLE, "NoExecute")
UNREACHABLE_NOSCHED = (TAINT_UNREACHABLE, "NoSchedule")
NOT_READY_NOSCHED = (TAINT_NOT_READY, "NoSchedule")


# ---- pure pieces ------------------------------------------------------------------------------------

def test_controllers_flag_and_durations() -> None:
    every = parse_controllers("*")
    assert "node-ipam-controller" in every and "garbage-collector-controller" in every
    assert parse_controllers("*,-nodeipam,-endpoint") == [
        n for n in every if n not in ("node-ipam-controller", "endpoints-controller")]
    assert parse_controllers("namespace,serviceaccount-controller") == ["namespace-controller",
                                                                         "serviceaccount-controller"]
    with pytest.raises(ValueError, match="unknown controller 'nope'"):
        parse_controllers("*,nope")
    assert parse_duration("40s") == 40 and parse_duration("5m") == 300 and parse_duration("300") == 300
    assert parse_duration("1m30s") == 90 and parse_duration("500ms") == 0.5
    for bad in ("", "abc", "5x", "-3s", "10s5"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_tolerations_and_eviction_delay() -> None:
    taint = {"key": TAINT_UNREACHABLE, "effect": "NoExecute"}
    assert tolerates({"operator": "Exists"}, taint)
    assert tolerates({"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}, taint)
    assert not tolerates({"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"}, taint)
    assert not tolerates({"key": "other", "operator": "Exists"}, taint)
    default = {"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute",
               "tolerationSeconds": 300}
    pod = {"spec": {"tolerations": [default]}}
    assert eviction_delay(pod, [taint]) == 300
    assert eviction_delay(pod, [taint], default_timeout=7) == 7  # the admission default follows the flag
    own = {**default, "tolerationSeconds": 60}
    assert eviction_delay({"spec": {"tolerations": [own]}}, [taint], default_timeout=7) == 60
    assert eviction_delay({"spec": {"tolerations": [{"operator": "Exists"}]}}, [taint]) is None
    # The first toleration that matches a taint is the one used (the API server appends its defaults).
    assert eviction_delay({"spec": {"tolerations": [{"operator": "Exists"}, default]}}, [taint]) is None
    assert eviction_delay({"spec": {"tolerations": [default, {"operator": "Exists"}]}}, [taint]) == 300
    other = {"key": "x", "effect": "NoExecute"}
    assert eviction_delay({"spec": {"tolerations": [default]}}, [taint, other]) == 0
    assert eviction_delay({"spec": {}}, [taint]) == 0


def test_cidr_set_and_target_ports() -> None:
    cidrs = CIDRSet("10.244.0.0/23", 24)
    assert cidrs.allocate("a") == "10.244.0.0/24" and cidrs.allocate("b") == "10.244.1.0/24"
    assert cidrs.allocate("c") is None
    cidrs.release("10.244.0.0/24", "a")
    assert cidrs.allocate("c") == "10.244.0.0/24"
    assert cidrs.occupy("10.244.1.0/24", "d") == "b"  # held by b already
    for bad in (("10.244.0.0/16", 8), ("10.244.0.1/16", 24), ("fd00::/64", 80), ("nonsense", 24)):
        with pytest.raises(ValueError):
            CIDRSet(*bad)
    pod = {"spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8080},
                                              {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]}}
    assert resolve_target_port({"port": 80, "targetPort": "http"}, pod) == 8080
    assert resolve_target_port({"port": 80, "targetPort": 9000}, pod) == 9000
    assert resolve_target_port({"port": 80}, pod) == 80
    assert resolve_target_port({"port": 53, "targetPort": "dns", "protocol": "UDP"}, pod) == 53
    assert resolve_target_port({"port": 53, "targetPort": "dns"}, pod) is None  # TCP: no such port
    assert resolve_target_port({"port": 80, "targetPort": "missing"}, pod) is None


def test_cli_rejects_bad_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kc = tmp_path / "kc"
    kc.write_text("apiVersion: v1\nkind: Config\n")
    cases = [
        (["--node-monitor-grace-period", "abc"], "--node-monitor-grace-period"),
        (["--controllers", "*,bogus"], "unknown controller 'bogus'"),
        (["--cluster-cidr", "10.0.0.0/33"], "--cluster-cidr"),
        (["--leader-elect-lease-duration", "1s", "--leader-elect-renew-deadline", "2s"], "lease-duration"),
        (["--secure-port", "70000"], "not a TCP port"),
    ]
    for args, message in cases:
        assert cli_main(["controller-manager", "--kubeconfig", str(kc), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert cli_main(["controller-manager", "--kubeconfig", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err


# ---- node IPAM ------------------------------------------------------------------------------------

async def test_nodes_get_stable_unique_pod_cidrs(cluster_client: APIClient,
                                                 make_managers: ManagerFactory) -> None:
    client = cluster_client
    mgr = await make_managers("nodeipam")
    tag = uid()
    # Names sort after the ones made while the manager is down: listed first, those are synced first.
    names = [f"ipam-{tag}-z{i}" for i in range(3)]
    for n in names:
        await make_node(client, n)

    async def cidrs_of(wanted: list[str]) -> dict[str, str] | None:
        out = {}
        for n in wanted:
            node = await client.get("nodes", n)
            spec = node.get("spec") or {}
            if not spec.get("podCIDR"):
                return None
            assert spec["podCIDRs"] == [spec["podCIDR"]]
            out[n] = spec["podCIDR"]
        return out

    first = await eventually(lambda: cidrs_of(names), what="podCIDRs")
    cluster = ipaddress.ip_network("10.244.0.0/16")
    for cidr in first.values():
        net = ipaddress.ip_network(cidr)
        assert net.prefixlen == 24 and net.subnet_of(cluster)
    assert len(set(first.values())) == 3

    # A restarted controller-manager rebuilds its map from the nodes before it allocates: no subnet
    # is handed out twice, even to nodes it happens to look at before the old ones.
    await make_managers.stop(mgr)  # type: ignore[attr-defined]
    await client.delete("nodes", names[0])
    more = [f"ipam-{tag}-a{i}" for i in range(3)]
    for n in more:
        await make_node(client, n)
    await make_managers("nodeipam")
    await eventually(lambda: cidrs_of(more), what="podCIDRs after restart")
    assert await cidrs_of(names[1:]) == {n: first[n] for n in names[1:]}  # stable
    every, _ = await client.list_all("nodes")
    allocated = [(n.get("spec") or {}).get("podCIDR") for n in every if (n.get("spec") or {}).get("podCIDR")]
    assert len(allocated) == len(set(allocated)), allocated


async def test_exhausted_cidrs_are_released_on_node_delete(tmp_path: Path) -> None:
    from minikube_py.controllers.manager import ControllerManager

    server = start_apiserver(tmp_path / "data")
    client = APIClient.from_kubeconfig(server.kubeconfig)
    mgr = ControllerManager(client, controllers="nodeipam", leader_elect=False, secure_port=None,
                            options={"cluster_cidr": "10.250.0.0/23"})
    task = asyncio.create_task(mgr.run())
    try:
        for n in ("a", "b", "c"):
            await make_node(client, n)

        async def cidr(name: str) -> str | None:
            return ((await client.get("nodes", name)).get("spec") or {}).get("podCIDR")

        await eventually(lambda: cidr("a"))
        await eventually(lambda: cidr("b"))
        assert {await cidr("a"), await cidr("b")} == {"10.250.0.0/24", "10.250.1.0/24"}
        await asyncio.sleep(0.5)
        assert await cidr("c") is None  # the pool is empty
        freed = await cidr("a")
        await client.delete("nodes", "a")
        assert await eventually(lambda: cidr("c"), what="a released subnet reused") == freed
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
        stop_apiserver(server)


# ---- node lifecycle -------------------------------------------------------------------------------

async def test_node_heartbeat_loss_taints_and_evicts(cluster_client: APIClient,
                                                     make_managers: ManagerFactory) -> None:
    client = cluster_client
    await make_managers("nodelifecycle", node_monitor_grace_period=2.0, node_monitor_period=0.5,
                        pod_eviction_timeout=1.0)
    node = f"nl-{uid()}"
    await make_node(client, node)

    async def taints() -> set[tuple[str, str]]:
        return node_taints(await client.get("nodes", node))

    # A node that never reported is kept from scheduling until it does.
    await eventually(lambda: _eq(taints(), {NOT_READY_NOSCHED}), what="not-ready:NoSchedule on a new node")
    beat = Heartbeat(client, node)
    await beat.start()
    try:
        await post_node_status(client, node, "True")
        await eventually(lambda: _eq(taints(), set()), what="taints removed once Ready")

        ns = await make_namespace(client, "nl")
        zero = [{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute",
                 "tolerationSeconds": 0}]
        await make_pod(client, ns, "zero", node=node, tolerations=zero)
        await make_pod(client, ns, "defaults", node=node)  # the API server's 300 s tolerations
        await make_pod(client, ns, "forever", node=node, tolerations=[{"operator": "Exists"}])
        for i, name in enumerate(("zero", "defaults", "forever")):
            await set_pod_status(client, ns, name, ip=f"10.9.0.{i + 1}", ready=True)
        await asyncio.sleep(1.0)
        for name in ("zero", "defaults", "forever"):  # a healthy node evicts nobody
            assert not (await client.get("pods", name, ns))["metadata"].get("deletionTimestamp")

        # The kubelet goes quiet: no lease renewals, no status.
        await beat.stop()

        async def unknown() -> bool:
            n = await client.get("nodes", node)
            ready = next(c for c in n["status"]["conditions"] if c["type"] == "Ready")
            if ready["status"] != "Unknown":
                return False
            assert ready["reason"] == "NodeStatusUnknown"
            assert ready["message"] == "Kubelet stopped posting node status."
            assert all(c["status"] == "Unknown" for c in n["status"]["conditions"])
            return True

        await eventually(unknown, timeout=20, what="Ready=Unknown")
        await eventually(lambda: _eq(taints(), {UNREACHABLE_NOEXEC, UNREACHABLE_NOSCHED}),
                         what="unreachable taints")

        async def deleting(name: str) -> bool:
            pod = await client.get_or_none("pods", name, ns)
            return pod is None or bool(pod["metadata"].get("deletionTimestamp"))

        await eventually(lambda: deleting("zero"), what="pod tolerating 0 s evicted")
        await eventually(lambda: deleting("defaults"), what="pod with default tolerations evicted")

        async def forever_not_ready() -> bool:
            pod = await client.get("pods", "forever", ns)
            assert not pod["metadata"].get("deletionTimestamp")
            return next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")["status"] == "False"

        await eventually(forever_not_ready, what="pods on the unreachable node marked not Ready")

        # The kubelet is back: heartbeats and Ready=True clear the taints.
        await beat.start()
        await post_node_status(client, node, "True")
        await eventually(lambda: _eq(taints(), set()), what="taints removed after recovery")

        # A NoExecute taint nobody tolerates (an operator's drain) evicts at once, and survives the
        # controller's own taint bookkeeping.
        await make_pod(client, ns, "late", node=node)
        await set_pod_status(client, ns, "late", ip="10.9.0.9", ready=True)
        n = await client.get("nodes", node)
        n["spec"]["taints"] = [{"key": "example.com/drain", "effect": "NoExecute"}]
        await client.update("nodes", n)
        await eventually(lambda: deleting("late"), what="non-tolerating pod evicted")
        assert not (await client.get("pods", "forever", ns))["metadata"].get("deletionTimestamp")
        assert ("example.com/drain", "NoExecute") in await taints()
    finally:
        await beat.stop()


async def _eq(value: Any, expected: Any) -> bool:
    got = await value
    assert got == expected, f"{got!r} != {expected!r}"
    return True


# ---- endpoints and endpoint slices ---------------------------------------------------------------

async def test_endpoints_and_slices_follow_ready_pods(cluster_client: APIClient,
                                                      make_managers: ManagerFactory) -> None:
    client = cluster_client
    await make_managers("endpoints,endpointslice")
    ns = await make_namespace(client, "ep")
    svc = await client.create("services", {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": ns, "labels": {"t": "1"}},
        "spec": {"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": "http"},
            {"name": "metrics", "port": 9090, "targetPort": 9100}]}}, ns)
    http = [{"name": "http", "containerPort": 8080}]
    for name in ("a", "b", "c", "noip"):
        await make_pod(client, ns, name, labels={"app": "web"}, ports=http,
                       node="n1" if name == "a" else None)
    await make_pod(client, ns, "other", labels={"app": "db"}, ports=http)
    await set_pod_status(client, ns, "a", ip="10.1.0.1", ready=True)
    await set_pod_status(client, ns, "b", ip="10.1.0.2", ready=True)
    await set_pod_status(client, ns, "c", ip="10.1.0.3", ready=False)
    await set_pod_status(client, ns, "noip", ip=None, ready=False)
    await set_pod_status(client, ns, "other", ip="10.1.0.9", ready=True)

    async def endpoints(ready: list[str], not_ready: list[str]) -> bool:
        ep = await client.get_or_none("endpoints", "web", ns)
        assert ep is not None, "no Endpoints yet"
        subsets = ep.get("subsets") or []
        assert len(subsets) == 1, subsets
        s = subsets[0]
        assert [a["ip"] for a in s.get("addresses") or []] == ready
        assert [a["ip"] for a in s.get("notReadyAddresses") or []] == not_ready
        assert sorted((p["name"], p["port"]) for p in s["ports"]) == [("http", 8080), ("metrics", 9100)]
        return True

    async def slice_conditions() -> dict[str, dict[str, bool]]:
        slices = (await client.list("endpointslices.discovery.k8s.io", ns,
                                    label_selector="kubernetes.io/service-name=web"))["items"]
        assert len(slices) == 1, slices
        s = slices[0]
        assert s["addressType"] == "IPv4"
        labels = s["metadata"]["labels"]
        assert labels["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
        assert s["metadata"]["labels"]["t"] == "1"
        ref = s["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
            "Service", "web", svc["metadata"]["uid"], True)
        assert sorted((p["name"], p["port"]) for p in s["ports"]) == [("http", 8080), ("metrics", 9100)]
        for e in s["endpoints"]:
            assert e["targetRef"]["kind"] == "Pod" and e["targetRef"]["namespace"] == ns
        return {e["addresses"][0]: e["conditions"] for e in s["endpoints"]}

    async def slice_is(expected: dict[str, dict[str, bool]]) -> bool:
        got = await slice_conditions()
        assert got == expected, got
        return True

    ok = {"ready": True, "serving": True, "terminating": False}
    unready = {"ready": False, "serving": False, "terminating": False}
    await eventually(lambda: endpoints(["10.1.0.1", "10.1.0.2"], ["10.1.0.3"]), what="initial endpoints")
    await eventually(lambda: slice_is({"10.1.0.1": ok, "10.1.0.2": ok, "10.1.0.3": unready}),
                     what="initial slice")
    ep = await client.get("endpoints", "web", ns)
    first = ep["subsets"][0]["addresses"][0]
    assert first["nodeName"] == "n1" and first["targetRef"]["name"] == "a"

    # b turns unready, c turns ready: they swap sides.
    await set_pod_status(client, ns, "b", ip="10.1.0.2", ready=False)
    await set_pod_status(client, ns, "c", ip="10.1.0.3", ready=True)
    await eventually(lambda: endpoints(["10.1.0.1", "10.1.0.3"], ["10.1.0.2"]), what="endpoints after flip")
    await eventually(lambda: slice_is({"10.1.0.1": ok, "10.1.0.2": unready, "10.1.0.3": ok}),
                     what="slice after flip")

    # A deleted pod leaves both; a relabelled one too.
    await client.delete("pods", "c", ns, grace_period_seconds=0)
    pod = await client.get("pods", "b", ns)
    pod["metadata"]["labels"] = {"app": "gone"}
    await client.update("pods", pod)
    await eventually(lambda: endpoints(["10.1.0.1"], []), what="endpoints after delete")
    await eventually(lambda: slice_is({"10.1.0.1": ok}), what="slice after delete")

    # Someone deletes the Endpoints by hand: they come back.
    await client.delete("endpoints", "web", ns)
    await eventually(lambda: endpoints(["10.1.0.1"], []), what="endpoints recreated")

    # The API server's own service is left alone.
    kube = await client.get("endpoints", "kubernetes", "default")
    assert kube["subsets"][0]["addresses"], kube
    kube_slices = (await client.list("endpointslices.discovery.k8s.io", "default",
                                     label_selector="kubernetes.io/service-name=kubernetes"))["items"]
    assert all("endpointslice.kubernetes.io/managed-by" not in s["metadata"]["labels"] for s in kube_slices)

    # The service goes: so do its Endpoints and slices.
    await client.delete("services", "web", ns)

    async def all_gone() -> bool:
        slices = (await client.list("endpointslices.discovery.k8s.io", ns))["items"]
        return await client.get_or_none("endpoints", "web", ns) is None and not slices

    await eventually(all_gone, what="endpoints and slices deleted with the service")


# ---- service accounts and namespaces --------------------------------------------------------------

async def test_default_service_account_and_namespace_deletion(cluster_client: APIClient,
                                                              make_managers: ManagerFactory) -> None:
    client = cluster_client
    await make_managers("namespace,serviceaccount")
    ns = await make_namespace(client, "nsd")

    async def has_default() -> bool:
        return await client.get_or_none("serviceaccounts", "default", ns) is not None

    await eventually(has_default, what="default ServiceAccount")
    old_uid = (await client.get("serviceaccounts", "default", ns))["metadata"]["uid"]
    await client.delete("serviceaccounts", "default", ns)

    async def recreated() -> bool:
        sa = await client.get_or_none("serviceaccounts", "default", ns)
        return sa is not None and sa["metadata"]["uid"] != old_uid

    await eventually(recreated, what="default ServiceAccount recreated")

    # Content of many kinds, one object held by a finalizer.
    await client.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                       "metadata": {"name": "cm", "namespace": ns}, "data": {"a": "b"}}, ns)
    await client.create("configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "held", "namespace": ns, "finalizers": ["test/hold"]}}, ns)
    await client.create("secrets", {"apiVersion": "v1", "kind": "Secret",
                                    "metadata": {"name": "s", "namespace": ns}, "stringData": {"k": "v"}}, ns)
    await client.create("services", {"apiVersion": "v1", "kind": "Service",
                                     "metadata": {"name": "svc", "namespace": ns},
                                     "spec": {"ports": [{"port": 80}]}}, ns)
    await make_pod(client, ns, "p")
    await client.create("leases", {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                   "metadata": {"name": "l", "namespace": ns}, "spec": {}}, ns)
    await client.delete("namespaces", ns)

    async def waiting_on_finalizer() -> bool:
        n = await client.get("namespaces", ns)
        assert n["status"]["phase"] == "Terminating"
        conds = {c["type"]: c for c in n["status"].get("conditions") or []}
        if conds.get("NamespaceFinalizersRemaining", {}).get("status") != "True":
            return False
        assert "test/hold in 1 resource instances" in conds["NamespaceFinalizersRemaining"]["message"]
        assert conds["NamespaceContentRemaining"]["status"] == "True"
        assert "configmaps has 1 resource instances" in conds["NamespaceContentRemaining"]["message"]
        return True

    await eventually(waiting_on_finalizer, what="namespace waiting on a finalizer")
    for res, name in (("configmaps", "cm"), ("secrets", "s"), ("services", "svc"), ("pods", "p"),
                      ("leases", "l"), ("serviceaccounts", "default")):
        assert await client.get_or_none(res, name, ns) is None, (res, name)
    # The ServiceAccount controller does not bring the account back into a terminating namespace.
    held = await client.get("configmaps", "held", ns)
    held["metadata"]["finalizers"] = []
    await client.update("configmaps", held)

    async def namespace_gone() -> bool:
        return await client.get_or_none("namespaces", ns) is None

    await eventually(namespace_gone, what="namespace removed")


# ---- the manager: health port and leader fail-over between processes ------------------------------

async def test_health_and_metrics_port(cluster_client: APIClient, make_managers: ManagerFactory) -> None:
    mgr = await make_managers("*")  # every controller, the workload ones included
    assert mgr.server is not None
    assert mgr.missing == [] and list(mgr.controllers) == parse_controllers("*")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{mgr.server.url}/healthz?verbose", ssl=ctx) as r:
            body = await r.text()
            assert r.status == 200 and "[+]controllers ok" in body, body

        async def metrics() -> bool:
            async with http.get(f"{mgr.server.url}/metrics", ssl=ctx) as r:
                text = await r.text()
            return 'workqueue_depth{name="serviceaccount"}' in text \
                and 'controller_manager_controller_running{controller="serviceaccount-controller"} 1' in text

        await eventually(metrics, what="metrics")


async def test_leader_failover_between_processes(cluster_api: LocalAPIServer, cluster_client: APIClient,
                                                 tmp_path: Path) -> None:
    client = cluster_client
    lease = f"kcm-{uid()}"
    flags = ["--leader-elect-lease-duration", "3s", "--leader-elect-renew-deadline", "2s",
             "--leader-elect-retry-period", "0.5s", "--leader-elect-resource-name", lease,
             "--controllers", "nodeipam,serviceaccount"]
    procs = [start_cm_process(cluster_api.kubeconfig, tmp_path / f"cm{i}.log", *flags) for i in range(2)]
    try:
        async def holder() -> str:
            obj = await client.get_or_none("leases", lease, "kube-system")
            return str(((obj or {}).get("spec") or {}).get("holderIdentity") or "")

        first = await eventually(holder, what="a leader")
        by_identity = {p.identity: p for p in procs}
        assert first in by_identity
        leader = by_identity[first]
        standby = next(p for p in procs if p is not leader)

        async def cidr(name: str) -> str | None:
            return ((await client.get("nodes", name)).get("spec") or {}).get("podCIDR")

        node1 = f"fo-{uid()}"
        await make_node(client, node1)
        await eventually(lambda: cidr(node1), what="podCIDR from the first leader")

        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait(10)
        killed = time.monotonic()
        node2 = f"fo-{uid()}"
        await make_node(client, node2)
        await eventually(lambda: cidr(node2), timeout=30, what="podCIDR from the new leader")
        takeover = time.monotonic() - killed
        assert await holder() == standby.identity
        transitions = (await client.get("leases", lease, "kube-system"))["spec"]["leaseTransitions"]
        assert transitions >= 1
        assert await cidr(node1) != await cidr(node2)
        print(f"fail-over: podCIDR assigned by the standby {takeover:.2f}s after kill -9 (lease 3s)")

        # SIGTERM: a clean exit that hands the lease back.
        assert await asyncio.to_thread(stop_cm_process, standby.proc) == 0
        assert await holder() == ""
    finally:
        for p in procs:
            await asyncio.to_thread(stop_cm_process, p.proc, signal.SIGKILL)


async def test_manager_exits_when_its_lease_is_taken(cluster_client: APIClient) -> None:
    from minikube_py.controllers.manager import ControllerManager

    client = cluster_client
    lease = f"kcm-{uid()}"
    mgr = ControllerManager(client, controllers="serviceaccount", secure_port=None, lease_name=lease,
                            lease_duration=3.0, renew_deadline=1.5, retry_period=0.3)
    task = asyncio.create_task(mgr.run())
    try:
        await eventually(lambda: _true(mgr.leading.is_set()), what="leading")

        async def steal() -> None:  # another candidate that ignores the rules and keeps the lease
            while True:
                obj = await client.get("leases", lease, "kube-system")
                obj["spec"].update(holderIdentity="thief", renewTime=now(micro=True))
                with contextlib.suppress(ApiStatusError):
                    await client.update("leases", obj)
                await asyncio.sleep(0.1)

        thief = asyncio.create_task(steal())
        try:
            done, _ = await asyncio.wait([task], timeout=15)
        finally:
            thief.cancel()
            await asyncio.gather(thief, return_exceptions=True)
        assert task in done, "the manager kept running without its lease"
        assert task.result() == 1
        assert not mgr.leading.is_set() and not mgr.controllers
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _true(value: bool) -> bool:
    return value


def test_cli_reports_a_busy_health_port(cluster_api: LocalAPIServer, tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    from tests.apiserver.conftest import REPO

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = subprocess.run([sys.executable, "-m", "minikube_py", "controller-manager", "--kubeconfig",
                              str(cluster_api.kubeconfig), "--secure-port", str(port)],
                             capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 2, res
    assert f"cannot listen on 127.0.0.1:{port}" in res.stderr and res.stderr.count("\n") == 1, res.stderr
