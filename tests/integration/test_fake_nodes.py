"""Fake nodes on their own, against a real API server process (no scheduler or controllers): node
registration and leases, pods to Running with IPs from the node's podCIDR, graceful deletion, the
stop-heartbeat annotation, readiness gates, and a restart that keeps addresses unique."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from minikube_py.cli.durations import parse_duration
from minikube_py.client import APIClient
from minikube_py.kubelet.fake_nodes import (
    STOP_HEARTBEAT_ANNOTATION,
    FakeNodeConfig,
    FakeNodes,
    FakeNodesError,
    PodIPAllocator,
)
from tests.apiserver.conftest import LocalAPIServer, running_apiserver
from tests.integration.conftest import REPO, condition, eventually


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAPIServer]:
    with running_apiserver(tmp_path_factory.mktemp("fake-nodes") / "data") as srv:
        yield srv


@pytest.fixture
async def api(server: LocalAPIServer) -> AsyncIterator[APIClient]:
    async with APIClient.from_kubeconfig(server.kubeconfig) as client:
        yield client


@contextlib.asynccontextmanager
async def running(api: APIClient, **config: Any) -> AsyncIterator[FakeNodes]:
    fake = FakeNodes(api, FakeNodeConfig(**config))
    task = asyncio.create_task(fake.run())
    ready = asyncio.create_task(fake.ready.wait())
    try:
        done, _ = await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        assert fake.ready.is_set(), "fake nodes did not get ready"
        yield fake
    finally:
        for t in (task, ready):
            t.cancel()
        await asyncio.gather(task, ready, return_exceptions=True)


def prefix() -> str:
    return f"fn-{uuid.uuid4().hex[:6]}-"


def pod(name: str, node: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "demo/web:v1"}], **spec}}


async def set_cidr(api: APIClient, node: str, cidr: str) -> None:
    await api.patch("nodes", node, {"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})


async def test_nodes_register_and_renew_their_leases(api: APIClient) -> None:
    p = prefix()
    async with running(api, count=2, prefix=p, heartbeat=0.2, cpu="8", memory="32Gi", pods=50):
        node = await api.get("nodes", f"{p}1")
        labels = node["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == f"{p}1"
        assert labels["kubernetes.io/os"] == "linux" and labels["type"] == "fake"
        st = node["status"]
        assert st["capacity"]["cpu"] == "8" and st["allocatable"]["memory"] == "32Gi"
        assert st["allocatable"]["pods"] == "50"
        assert st["nodeInfo"]["kubeletVersion"] == "v1.33.0-fake"
        assert condition(node, "Ready") == "True" and condition(node, "MemoryPressure") == "False"
        ips = [a["address"] for a in st["addresses"] if a["type"] == "InternalIP"]
        assert len(ips) == 1 and ipaddress.ip_address(ips[0]).is_loopback
        lease = await api.get("leases.coordination.k8s.io", f"{p}1", "kube-node-lease")
        assert lease["spec"]["holderIdentity"] == f"{p}1"
        assert lease["spec"]["leaseDurationSeconds"] == 40
        assert lease["metadata"]["ownerReferences"][0]["uid"] == node["metadata"]["uid"]
        first = lease["spec"]["renewTime"]

        async def renewed() -> bool:
            now = await api.get("leases.coordination.k8s.io", f"{p}1", "kube-node-lease")
            return now["spec"]["renewTime"] != first

        await eventually(renewed, "the lease to be renewed", timeout=10)


async def test_pods_wait_for_the_pod_cidr_then_run_with_sequential_ips(api: APIClient) -> None:
    p = prefix()
    ns = "default"
    async with running(api, count=1, prefix=p, heartbeat=1.0):
        node = f"{p}0"
        for i in range(3):
            await api.create("pods", pod(f"{p}pod{i}", node, initContainers=[{"name": "i", "image": "busybox"}]), ns)
        await asyncio.sleep(0.5)
        waiting = await api.get("pods", f"{p}pod0", ns)
        assert waiting["status"]["phase"] == "Pending" and "podIP" not in waiting["status"]

        await set_cidr(api, node, "10.244.7.0/24")

        async def all_running() -> list[dict[str, Any]] | None:
            pods = [await api.get("pods", f"{p}pod{i}", ns) for i in range(3)]
            return pods if all(x["status"]["phase"] == "Running" for x in pods) else None

        pods = await eventually(all_running, "pods to run", timeout=20)
        assert sorted(x["status"]["podIP"] for x in pods) == ["10.244.7.2", "10.244.7.3", "10.244.7.4"]
        st = pods[0]["status"]
        for ctype in ("PodScheduled", "Initialized", "ContainersReady", "Ready"):
            assert condition(pods[0], ctype) == "True", ctype
        assert st["hostIP"] == st["hostIPs"][0]["ip"] and st["podIPs"] == [{"ip": st["podIP"]}]
        assert st["startTime"]
        (cs,) = st["containerStatuses"]
        assert cs["ready"] and cs["started"] and cs["restartCount"] == 0 and "running" in cs["state"]
        assert cs["containerID"].startswith("fake://") and cs["image"] == "demo/web:v1" and cs["imageID"]
        assert st["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"

        # Graceful deletion: the pod is marked, the fake kubelet finishes it with grace period 0.
        await api.delete("pods", f"{p}pod1", ns)

        async def gone() -> bool:
            return await api.get_or_none("pods", f"{p}pod1", ns) is None

        await eventually(gone, "the deleted pod to go", timeout=20)
        # A freed address is not handed out again before the range wraps (host-local's behaviour).
        await api.create("pods", pod(f"{p}pod3", node), ns)

        async def fourth() -> str | None:
            return ((await api.get("pods", f"{p}pod3", ns)).get("status") or {}).get("podIP")

        assert await eventually(fourth, "the new pod's IP", timeout=20) == "10.244.7.5"
        for i in (0, 2, 3):
            await api.delete("pods", f"{p}pod{i}", ns, grace_period_seconds=0)


async def test_pods_of_other_nodes_are_left_alone(api: APIClient) -> None:
    p = prefix()
    async with running(api, count=1, prefix=p, heartbeat=1.0) as fake:
        await set_cidr(api, f"{p}0", "10.244.8.0/24")
        await api.create("pods", pod(f"{p}other", "some-real-node"), "default")
        await api.create("pods", pod(f"{p}mine", f"{p}0"), "default")

        async def mine_runs() -> bool:
            return (await api.get("pods", f"{p}mine", "default"))["status"]["phase"] == "Running"

        await eventually(mine_runs, "our pod to run", timeout=20)
        other = await api.get("pods", f"{p}other", "default")
        assert other["status"]["phase"] == "Pending"
        assert fake.pods_started == 1
        for name in ("other", "mine"):
            await api.delete("pods", f"{p}{name}", "default", grace_period_seconds=0)


async def test_stop_heartbeat_annotation_stops_and_resumes_the_lease(api: APIClient) -> None:
    p = prefix()
    async with running(api, count=2, prefix=p, heartbeat=0.2):
        await api.patch("nodes", f"{p}0", {"metadata": {"annotations": {STOP_HEARTBEAT_ANNOTATION: "true"}}})

        async def renew_times() -> tuple[str, str]:
            a = await api.get("leases.coordination.k8s.io", f"{p}0", "kube-node-lease")
            b = await api.get("leases.coordination.k8s.io", f"{p}1", "kube-node-lease")
            return a["spec"]["renewTime"], b["spec"]["renewTime"]

        await asyncio.sleep(0.5)  # a renewal already under way may still land
        stopped_at, other_at = await renew_times()
        await asyncio.sleep(1.0)  # five heartbeats
        stopped_now, other_now = await renew_times()
        assert stopped_now == stopped_at, "the annotated node kept renewing its lease"
        assert other_now != other_at, "the other node stopped renewing too"

        # The node lifecycle controller would mark it Unknown: a live fake kubelet would correct that,
        # a stopped one must not.
        node = await api.get("nodes", f"{p}0")
        for c in node["status"]["conditions"]:
            if c["type"] == "Ready":
                c.update(status="Unknown", reason="NodeStatusUnknown")
        await api.update_status("nodes", node)
        await asyncio.sleep(0.6)
        assert condition(await api.get("nodes", f"{p}0"), "Ready") == "Unknown"

        await api.patch("nodes", f"{p}0", {"metadata": {"annotations": {STOP_HEARTBEAT_ANNOTATION: None}}})

        async def resumed() -> bool:
            node = await api.get("nodes", f"{p}0")
            return (await renew_times())[0] != stopped_now and condition(node, "Ready") == "True"

        await eventually(resumed, "heartbeats and Ready=True to come back", timeout=10)


async def test_readiness_gates_hold_ready_until_their_condition_is_true(api: APIClient) -> None:
    p = prefix()
    gate = "example.com/gate"
    async with running(api, count=1, prefix=p, heartbeat=1.0):
        await set_cidr(api, f"{p}0", "10.244.9.0/24")
        await api.create("pods", pod(f"{p}gated", f"{p}0", readinessGates=[{"conditionType": gate}]), "default")

        async def running_unready() -> dict[str, Any] | None:
            x = await api.get("pods", f"{p}gated", "default")
            return x if x["status"]["phase"] == "Running" else None

        x = await eventually(running_unready, "the gated pod to run", timeout=20)
        assert condition(x, "Ready") == "False" and condition(x, "ContainersReady") == "True"
        assert x["status"]["podIP"]
        x["status"]["conditions"].append({"type": gate, "status": "True"})
        await api.update_status("pods", x)

        async def ready() -> bool:
            return condition(await api.get("pods", f"{p}gated", "default"), "Ready") == "True"

        await eventually(ready, "Ready once the gate is True", timeout=20)
        # Someone marks it not Ready (the node lifecycle controller does on an unreachable node): the
        # live fake kubelet reports the truth again.
        x = await api.get("pods", f"{p}gated", "default")
        for c in x["status"]["conditions"]:
            if c["type"] == "Ready":
                c["status"] = "False"
        await api.update_status("pods", x)
        await eventually(ready, "Ready to be restored", timeout=20)
        await api.delete("pods", f"{p}gated", "default", grace_period_seconds=0)


async def test_a_restarted_process_keeps_addresses_unique(api: APIClient) -> None:
    p = prefix()
    async with running(api, count=1, prefix=p, heartbeat=1.0):
        await set_cidr(api, f"{p}0", "10.244.10.0/24")
        for i in range(2):
            await api.create("pods", pod(f"{p}a{i}", f"{p}0"), "default")

        async def ips(names: list[str]) -> list[str] | None:
            got = [((await api.get("pods", n, "default")).get("status") or {}).get("podIP") for n in names]
            return got if all(got) else None

        before = await eventually(lambda: ips([f"{p}a0", f"{p}a1"]), "first pods' IPs", timeout=20)
    async with running(api, count=1, prefix=p, heartbeat=1.0):
        await api.create("pods", pod(f"{p}b0", f"{p}0"), "default")
        (after,) = await eventually(lambda: ips([f"{p}b0"]), "the new pod's IP", timeout=20)
    assert after not in before
    for n in (f"{p}a0", f"{p}a1", f"{p}b0"):
        await api.delete("pods", n, "default", grace_period_seconds=0)


# ---- pure parts and bad input ----------------------------------------------------------------------------

def test_allocator_is_sequential_skips_used_and_wraps() -> None:
    a = PodIPAllocator()
    a.set_cidr("n", "10.0.5.0/29")  # hosts .2 - .6 for pods
    a.record("n", "old", "10.0.5.3")
    got = [a.allocate("n", f"u{i}") for i in range(4)]
    assert got == ["10.0.5.2", "10.0.5.4", "10.0.5.5", "10.0.5.6"]
    assert a.allocate("n", "u0") == "10.0.5.2"  # the same pod keeps its address
    with pytest.raises(RuntimeError, match="full"):
        a.allocate("n", "u9")
    a.release("u1")
    assert a.allocate("n", "u9") == "10.0.5.4"


@pytest.mark.parametrize("text,seconds", [("10s", 10), ("500ms", 0.5), ("1.5s", 1.5), ("5m", 300),
                                          ("40", 40), ("1m30s", 90)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "10x", "-1s", "1m30", "ten"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize("config,message", [
    ({"count": -1}, "count"), ({"count": 1, "cpu": "lots"}, "cpu"), ({"count": 1, "memory": "0"}, "memory"),
    ({"count": 1, "heartbeat": 0}, "heartbeat"), ({"count": 300, "address_range": "10.1.1.0/24"}, "too few"),
    ({"count": 1, "address_range": "nonsense"}, "address range"),
])
def test_config_rejects_bad_values(config: dict[str, Any], message: str) -> None:
    with pytest.raises(FakeNodesError, match=message):
        FakeNodeConfig(**config).validate()


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "minikube_py", "fake-nodes", "--kubeconfig", str(tmp_path / "kc"),
                          "--count", "2", "--memory", "lots"], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert res.returncode == 2
    assert "memory" in res.stderr and "Traceback" not in res.stderr
