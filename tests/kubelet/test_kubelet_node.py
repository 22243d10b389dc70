"""The kubelet on a real node: API server, docker-registry with the demo images, the runtime daemon (runc,
CNI bridge on a private pod CIDR) and ``minikube-py kubelet``, all on this machine, all cleaned up.

Back-offs start at 1 s here (``--backoff-initial 1s``) so that a growing crash-loop back-off shows in
seconds; everything else runs with the kubelet's real behaviour.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from minikube_py.client import APIClient
from minikube_py.runtime.client import RuntimeClient
from tests.apiserver.conftest import LocalAPIServer, start_apiserver, stop_apiserver
from tests.runtime.registry_harness import LocalRegistry, registry_available
from tests.runtime.runtime_fixtures import missing_requirements

from .node_harness import POD_CIDR, KubeletProcess, RegistryRuntime

NODE = "kubelet-test-node"
NS = "default"
pytestmark = pytest.mark.slow


def _why_not() -> str | None:
    why = missing_requirements()
    if why is None and not registry_available():
        why = "docker-registry is not installed (Debian package docker-registry)"
    if why is None and shutil.which("kubectl") is None:
        why = "kubectl is not installed"
    return why


@dataclass
class Node:
    api: LocalAPIServer
    runtime: RegistryRuntime
    kubelet: KubeletProcess
    registry: LocalRegistry

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        kubectl = shutil.which("kubectl")
        assert kubectl is not None
        return subprocess.run([kubectl, f"--kubeconfig={self.api.kubeconfig}", "-n", NS, *args], input=input,
                              capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    why = _why_not()
    if why:
        pytest.skip(why)
    from minikube_py.images import build_demo_images

    base = Path(tempfile.mkdtemp(prefix="mkpy-kubelet-"))
    api = registry = runtime = kubelet = None
    try:
        api = start_apiserver(base / "api")
        registry = LocalRegistry(base / "registry")
        registry.start()
        asyncio.run(build_demo_images(registry.address, output=base / "layout"))
        (base / "runtime").mkdir()
        runtime = RegistryRuntime(base / "runtime", registry=registry.address)
        runtime.start()
        (base / "node").mkdir()
        kubelet = KubeletProcess(base / "node", api.kubeconfig, runtime.socket, NODE,
                                 extra=["--backoff-initial", "1s", "--backoff-max", "8s"])
        kubelet.start()
        asyncio.run(_give_pod_cidr(api))
        yield Node(api, runtime, kubelet, registry)
    finally:
        if kubelet is not None:
            kubelet.stop()
        if runtime is not None:
            runtime.sweep()
        if registry is not None:
            registry.stop()
        if api is not None:
            stop_apiserver(api)
        shutil.rmtree(base, ignore_errors=True)


async def _give_pod_cidr(api: LocalAPIServer) -> None:
    """The node IPAM controller's job, done by hand: the kubelet hands the CIDR to the runtime."""
    async with APIClient.from_kubeconfig(api.kubeconfig) as client:
        await wait_for(lambda: client.get_or_none("nodes", NODE), 20, "the node to register")
        await client.patch("nodes", NODE, {"spec": {"podCIDR": POD_CIDR}})


async def wait_for(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {json.dumps(last, default=str)[:2000]}")


def pod_manifest(name: str, command: list[str] | None = None, *, image: str = "demo/busybox",
                 restart: str = "Always", grace: int = 5, **container: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"name": "c", "image": image, **container}
    if command is not None:
        c["command"] = command
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"nodeName": NODE, "restartPolicy": restart, "terminationGracePeriodSeconds": grace,
                     "containers": [c]}}


async def status_of(client: APIClient, name: str) -> dict[str, Any]:
    return (await client.get("pods", name, NS)).get("status") or {}


def state_of(status: dict[str, Any]) -> dict[str, Any]:
    return ((status.get("containerStatuses") or [{}])[0]).get("state") or {}


def condition(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or () if c.get("type") == ctype), {})


async def events_of(client: APIClient, name: str) -> list[tuple[str, str]]:
    items = (await client.list("events", NS)).get("items") or []
    return [(e.get("reason"), e.get("message")) for e in items if (e.get("involvedObject") or {}).get("name") == name]


@pytest.fixture
async def client(node: Node) -> Any:
    async with APIClient.from_kubeconfig(node.api.kubeconfig) as c:
        yield c


# ---- the node ---------------------------------------------------------------------------------------------

async def test_node_registers_ready_with_lease(client: APIClient) -> None:
    node = await wait_for(lambda: _ready_node(client), 20, "the node to be Ready")
    status = node["status"]
    assert status["nodeInfo"]["kubeletVersion"] == "v1.33.0-minikube-py"
    assert status["nodeInfo"]["containerRuntimeVersion"].startswith("minikube-py://")
    assert {"type": "InternalIP", "address": "127.0.0.1"} in status["addresses"]
    assert int(status["capacity"]["cpu"]) == os.cpu_count()
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == NODE
    assert {c["type"] for c in status["conditions"]} >= {"Ready", "MemoryPressure", "DiskPressure", "PIDPressure"}
    lease = await client.get("leases.coordination.k8s.io", NODE, "kube-node-lease")
    assert lease["spec"]["holderIdentity"] == NODE
    # Before the pod CIDR arrived the runtime's network was not ready: the kubelet said so in an Event.
    # Events are written after the status they describe: wait for it rather than race it.

    async def node_ready_event() -> bool:
        return "NodeReady" in {r for r, _ in await events_of(client, NODE)}

    assert await wait_for(node_ready_event, 20, "the NodeReady event")


async def test_missing_runtime_makes_the_node_not_ready_without_crashing(node: Node, client: APIClient) -> None:
    lonely = KubeletProcess(node.kubelet.base / "lonely", node.api.kubeconfig, node.kubelet.base / "no-runtime.sock",
                            "kubelet-no-runtime")
    lonely.base.mkdir(exist_ok=True)
    await asyncio.to_thread(lonely.start)
    try:
        async def not_ready() -> dict[str, Any] | None:
            n = await client.get_or_none("nodes", "kubelet-no-runtime")
            ready = next((c for c in ((n or {}).get("status") or {}).get("conditions") or ()
                          if c["type"] == "Ready"), {})
            return ready if ready.get("status") == "False" else None

        ready = await wait_for(not_ready, 20, "the node to be registered NotReady")
        assert ready["reason"] == "KubeletNotReady"
        assert ready["message"].startswith("container runtime is down: cannot reach the runtime at")
        await asyncio.sleep(1.5)
        assert lonely.proc is not None and lonely.proc.poll() is None     # still serving, no crash loop
        async def not_ready_event() -> bool:
            return "NodeNotReady" in {r for r, _ in await events_of(client, "kubelet-no-runtime")}

        assert await wait_for(not_ready_event, 20, "the NodeNotReady event")
    finally:
        await asyncio.to_thread(lonely.stop)
        await client.delete("nodes", "kubelet-no-runtime")


async def _ready_node(client: APIClient) -> dict[str, Any] | None:
    node = await client.get("nodes", NODE)
    ready = next((c for c in node["status"].get("conditions") or () if c["type"] == "Ready"), {})
    return node if ready.get("status") == "True" else None


# ---- running, logs, exec ------------------------------------------------------------------------------------

async def test_busybox_pod_runs_with_logs_and_exec(node: Node, client: APIClient) -> None:
    await client.create("pods", pod_manifest(
        "sleeper", ["sh", "-c", 'for i in 1 2 3; do echo "line $i"; done; echo "$GREETING $POD"; '
                                "while true; do sleep 0.3; echo tick; done"],
        env=[{"name": "GREETING", "value": "hello"},
             {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]))
    status = await wait_for(lambda: _phase(client, "sleeper", "Running"), 30, "sleeper to run")
    assert ipaddress.ip_address(status["podIP"]) in ipaddress.ip_network(POD_CIDR)
    assert status["hostIP"] == "127.0.0.1"
    cs = status["containerStatuses"][0]
    assert cs["containerID"].startswith("minikube-py://") and cs["imageID"].startswith("sha256:")
    assert cs["ready"] is True and cs["started"] is True and "running" in cs["state"]
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "PodReadyToStartContainers")["status"] == "True"
    reasons = [r for r, _ in await wait_for(lambda: _events_with(client, "sleeper", "Started"), 10, "events")]
    assert {"Pulling", "Pulled", "Created", "Started"} <= set(reasons)

    await wait_for(lambda: asyncio.to_thread(lambda: "tick" in node.kubectl("logs", "sleeper").stdout), 10, "logs")
    logs = node.kubectl("logs", "sleeper")
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.startswith("line 1\nline 2\nline 3\nhello sleeper\n")
    tail = node.kubectl("logs", "sleeper", "--tail=1")
    assert tail.stdout.count("\n") == 1 and tail.stdout.strip() == "tick"
    stamped = node.kubectl("logs", "sleeper", "--timestamps", "--tail=1").stdout
    assert stamped.split(" ", 1)[0].endswith("Z")
    proc = await asyncio.create_subprocess_exec(
        shutil.which("kubectl") or "kubectl", f"--kubeconfig={node.api.kubeconfig}", "-n", NS, "logs", "-f",
        "--tail=0", "sleeper", stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 15) == b"tick\n"
        assert await asyncio.wait_for(proc.stdout.readline(), 15) == b"tick\n"
    finally:
        proc.kill()
        await proc.wait()

    one_shot = node.kubectl("exec", "sleeper", "--", "sh", "-c", "echo $GREETING from $(hostname); exit 3")
    assert one_shot.stdout == "hello from sleeper\n" and one_shot.returncode == 3
    interactive = node.kubectl("exec", "-i", "sleeper", "--", "sh", "-c", "tr a-z A-Z; ip -4 -o addr show eth0",
                               input="through stdin\n")
    assert interactive.returncode == 0, interactive.stderr
    assert interactive.stdout.startswith("THROUGH STDIN\n")
    assert status["podIP"] in interactive.stdout
    missing = node.kubectl("exec", "sleeper", "--", "nope-not-here")
    assert missing.returncode != 0 and "nope-not-here" in (missing.stderr + missing.stdout)


async def _phase(client: APIClient, name: str, phase: str) -> dict[str, Any] | None:
    status = await status_of(client, name)
    return status if status.get("phase") == phase else None


async def _events_with(client: APIClient, name: str, reason: str) -> list[tuple[str, str]] | None:
    events = await events_of(client, name)
    return events if any(r == reason for r, _ in events) else None


# ---- failures ---------------------------------------------------------------------------------------------

async def test_crash_loop_back_off_grows(client: APIClient) -> None:
    await client.create("pods", pod_manifest("crasher", ["sh", "-c", "echo crashing; exit 3"]))
    messages: list[str] = []

    async def seen_growth() -> bool:
        status = await status_of(client, "crasher")
        waiting = state_of(status).get("waiting") or {}
        if waiting.get("reason") == "CrashLoopBackOff" and waiting.get("message") not in messages:
            messages.append(waiting["message"])
        return len(messages) >= 3

    await wait_for(seen_growth, 40, "three growing back-offs")
    uid = (await client.get("pods", "crasher", NS))["metadata"]["uid"]
    delays = [m.split()[1] for m in messages]
    assert delays[:3] == ["1s", "2s", "4s"], messages
    assert messages[0] == f"back-off 1s restarting failed container=c pod=crasher_{NS}({uid})"
    status = await status_of(client, "crasher")
    cs = status["containerStatuses"][0]
    assert cs["restartCount"] >= 3 and cs["ready"] is False
    assert cs["lastState"]["terminated"]["exitCode"] == 3 and cs["lastState"]["terminated"]["reason"] == "Error"
    assert status["phase"] == "Running"          # restartPolicy Always: restarting, not failed
    assert "BackOff" in {r for r, _ in await events_of(client, "crasher")}
    await client.delete("pods", "crasher", NS)


async def test_failing_liveness_probe_restarts_the_container(client: APIClient) -> None:
    await client.create("pods", pod_manifest(
        "unhealthy", ["sh", "-c", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 600"],
        livenessProbe={"exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 1, "failureThreshold": 2}))

    async def restarted() -> dict[str, Any] | None:
        status = await status_of(client, "unhealthy")
        cs = (status.get("containerStatuses") or [{}])[0]
        return status if cs.get("restartCount", 0) >= 1 and "running" in cs.get("state", {}) else None

    status = await wait_for(restarted, 30, "a liveness restart")
    assert status["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 137
    events = await wait_for(lambda: _events_with(client, "unhealthy", "Killing"), 10, "the Killing event")
    assert ("Killing", "Container c failed liveness probe, will be restarted") in events
    assert any(r == "Unhealthy" and m.startswith("Liveness probe failed") for r, m in events)
    await client.delete("pods", "unhealthy", NS)


async def test_readiness_gates_the_ready_condition(client: APIClient) -> None:
    await client.create("pods", pod_manifest("web-ready", image="demo/web", readinessProbe={
        "httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1}))
    await client.create("pods", pod_manifest("web-unready", image="demo/web", readinessProbe={
        "httpGet": {"path": "/nope", "port": 8080}, "periodSeconds": 1}))
    await wait_for(lambda: _ready(client, "web-ready", "True"), 30, "web-ready to be Ready")
    status = await wait_for(lambda: _phase(client, "web-unready", "Running"), 30, "web-unready to run")
    await asyncio.sleep(2.5)   # several failed probes
    status = await status_of(client, "web-unready")
    ready = condition(status, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ContainersNotReady"
    assert ready["message"] == "containers with unready status: [c]"
    assert status["containerStatuses"][0]["ready"] is False and "running" in state_of(status)
    events = await events_of(client, "web-unready")
    assert any(r == "Unhealthy" and "HTTP probe failed with statuscode: 404" in m for r, m in events), events
    for name in ("web-ready", "web-unready"):
        await client.delete("pods", name, NS)


async def _ready(client: APIClient, name: str, want: str) -> dict[str, Any] | None:
    status = await status_of(client, name)
    return status if condition(status, "Ready").get("status") == want else None


async def test_missing_image_backs_off_with_the_registry_message(client: APIClient) -> None:
    await client.create("pods", pod_manifest("no-image", ["sh"], image="demo/nope:1.0"))
    seen: dict[str, str] = {}

    async def both() -> bool:
        waiting = state_of(await status_of(client, "no-image")).get("waiting") or {}
        if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff"):
            seen.setdefault(waiting["reason"], waiting.get("message", ""))
        return len(seen) == 2

    await wait_for(both, 30, "ErrImagePull then ImagePullBackOff")
    assert 'failed to pull image "demo/nope:1.0"' in seen["ErrImagePull"]
    assert "manifest unknown" in seen["ErrImagePull"]
    assert seen["ImagePullBackOff"].startswith('Back-off pulling image "demo/nope:1.0"')
    assert "manifest unknown" in seen["ImagePullBackOff"]
    await client.delete("pods", "no-image", NS)


async def test_unrunnable_command_terminates_with_runcs_error(client: APIClient) -> None:
    await client.create("pods", pod_manifest("cannot-run", ["nope-no-such-binary"], restart="Never"))
    status = await wait_for(lambda: _phase(client, "cannot-run", "Failed"), 30, "the pod to fail")
    term = state_of(status)["terminated"]
    assert 'exec: "nope-no-such-binary": executable file not found in $PATH' in term["message"]
    assert term["exitCode"] != 0
    await client.delete("pods", "cannot-run", NS)


# ---- termination ------------------------------------------------------------------------------------------

async def test_delete_stops_within_grace_and_leaves_nothing(node: Node, client: APIClient) -> None:
    await client.create("pods", pod_manifest(
        "graceful", ["sh", "-c", "trap 'echo got-term; exit 0' TERM; while true; do sleep 0.2; done"], grace=20))
    await client.create("pods", pod_manifest(
        "stubborn", ["sh", "-c", "trap '' TERM; while true; do sleep 0.2; done"], grace=2))
    await wait_for(lambda: _phase(client, "graceful", "Running"), 30, "graceful to run")
    await wait_for(lambda: _phase(client, "stubborn", "Running"), 30, "stubborn to run")
    stubborn_started = time.monotonic()
    await client.delete("pods", "stubborn", NS)
    uid = (await client.get("pods", "graceful", NS))["metadata"]["uid"]
    async with RuntimeClient(node.runtime.socket) as rt:
        sandboxes = await rt.list_pod_sandbox(label_selector={"io.kubernetes.pod.uid": uid})
        containers = await rt.list_containers(label_selector={"io.kubernetes.pod.uid": uid})
    assert len(sandboxes) == 1 and containers
    veths_before = len(node.runtime.bridge_ports())
    started = time.monotonic()
    await client.delete("pods", "graceful", NS)
    await wait_for(lambda: _gone(client, "graceful"), 25, "the pod to be deleted")
    # The container honoured SIGTERM: gone well before the 20 s grace period would force it.
    assert time.monotonic() - started < 15
    sandbox_id = sandboxes[0]["id"]
    netns = (await asyncio.to_thread(subprocess.run, ["ip", "netns", "list"], capture_output=True, text=True,
                                     check=True)).stdout
    assert sandbox_id not in netns
    assert sandbox_id not in node.runtime.sandbox_ids()
    assert not any(c["id"] in " ".join(node.runtime.runc_containers()) for c in containers)
    assert not any(c["id"] in m for c in containers for m in node.runtime.mounts())
    assert len(node.runtime.bridge_ports()) == veths_before - 1
    assert not list(node.kubelet.log_dir.glob(f"*_{uid}"))
    assert not (node.kubelet.root_dir / "pods" / uid).exists()
    # A container ignoring SIGTERM is killed once its grace period is over, not before.
    await wait_for(lambda: _gone(client, "stubborn"), 25, "stubborn to be deleted")
    assert time.monotonic() - stubborn_started >= 2


async def test_restarted_kubelet_keeps_pods_and_removes_orphans(node: Node, client: APIClient) -> None:
    await client.create("pods", pod_manifest("survivor", ["sh", "-c", "while true; do sleep 0.3; done"], grace=1))
    await client.create("pods", pod_manifest("orphan", ["sh", "-c", "while true; do sleep 0.3; done"], grace=1))
    before = await wait_for(lambda: _phase(client, "survivor", "Running"), 30, "survivor to run")
    await wait_for(lambda: _phase(client, "orphan", "Running"), 30, "orphan to run")
    orphan_uid = (await client.get("pods", "orphan", NS))["metadata"]["uid"]
    await asyncio.to_thread(node.kubelet.stop)
    try:
        # Deleted while no kubelet watches: its sandbox is left for the next kubelet to find.
        await client.delete("pods", "orphan", NS, grace_period_seconds=0)
    finally:
        await asyncio.to_thread(node.kubelet.start)

    async def orphan_removed() -> bool:
        async with RuntimeClient(node.runtime.socket) as rt:
            return not await rt.list_pod_sandbox(label_selector={"io.kubernetes.pod.uid": orphan_uid})

    await wait_for(orphan_removed, 20, "the orphaned sandbox to be removed")
    after = await status_of(client, "survivor")
    assert after["phase"] == "Running"
    assert after["containerStatuses"][0]["containerID"] == before["containerStatuses"][0]["containerID"]
    assert after["containerStatuses"][0]["restartCount"] == 0
    await client.delete("pods", "survivor", NS)


async def _gone(client: APIClient, name: str) -> bool:
    return await client.get_or_none("pods", name, NS) is None


async def test_everything_is_gone_after_the_pods(node: Node, client: APIClient) -> None:
    """Last: once every pod is deleted the runtime holds no sandbox, container, netns or mount."""
    for pod in (await client.list("pods", NS)).get("items") or ():
        await client.delete("pods", pod["metadata"]["name"], NS, grace_period_seconds=1)

    async def empty() -> bool:
        pods = (await client.list("pods", NS)).get("items") or []
        return not pods and not node.runtime.sandbox_ids() and not node.runtime.runc_containers()

    await wait_for(empty, 30, "every pod and sandbox to be gone")
    assert node.runtime.mounts() == []
    assert node.runtime.bridge_ports() == []
