"""Pod status computation, probes, node conditions and host-gw routes, without a runtime."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from aiohttp import web

from minikube_py.cli.kubelet_cmd import parse_duration
from minikube_py.cni.routes import ROUTE_PROTOCOL, HostGwRoutes, desired_routes, usable_next_hop
from minikube_py.kubelet.node_status import (
    Machine,
    Pressure,
    allocatable,
    capacity,
    conditions_changed,
    desired_conditions,
    merge_conditions,
    parse_node_labels,
    runtime_not_ready,
)
from minikube_py.kubelet.pod_status import (
    EXITED,
    RUNNING,
    ContainerView,
    RuntimeContainer,
    container_status,
    pod_phase,
    pod_status,
    status_differs,
)
from minikube_py.kubelet.probes import (
    FAILURE,
    LIVENESS,
    READINESS,
    STARTUP,
    SUCCESS,
    UNKNOWN,
    ProbeOutcome,
    ProbeSpec,
    ProbeWorker,
    run_handler,
)
from minikube_py.runtime.client import ExecResult

S = 1_000_000_000
C = {"name": "app", "image": "demo/busybox"}


def rc(state: str, attempt: int = 0, code: int = 0, **kw: Any) -> RuntimeContainer:
    return RuntimeContainer(id=f"id{attempt}", name="app", attempt=attempt, state=state, started_at=100 * S,
                            finished_at=(110 * S if state == EXITED else 0), exit_code=code, image_ref="sha256:ab",
                            **kw)


def test_crash_loop_container_status() -> None:
    msg = "back-off 20s restarting failed container=app pod=p_ns(u)"
    view = ContainerView(C, rc(EXITED, 2, 1, reason="Error"), rc(EXITED, 1, 1), ("CrashLoopBackOff", msg))
    st = container_status(view)
    assert st["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": msg}}
    assert st["lastState"]["terminated"]["exitCode"] == 1
    assert st["lastState"]["terminated"]["containerID"] == "minikube-py://id2"
    assert st["restartCount"] == 2 and st["ready"] is False
    running = container_status(ContainerView(C, rc(RUNNING, 3), rc(EXITED, 2, 137), None, ready=True, started=True))
    assert running["state"] == {"running": {"startedAt": "1970-01-01T00:01:40Z"}}
    assert running["lastState"]["terminated"]["exitCode"] == 137 and running["ready"] is True
    cannot = container_status(ContainerView(C, rc(EXITED, 0, 128, reason="ContainerCannotRun",
                                                  message='exec: "nope": executable file not found in $PATH')))
    assert cannot["state"]["terminated"]["reason"] == "ContainerCannotRun"
    assert "executable file not found" in cannot["state"]["terminated"]["message"]
    assert container_status(ContainerView(C))["state"] == {"waiting": {"reason": "ContainerCreating"}}


@pytest.mark.parametrize(("policy", "states", "phase"), [
    ("Always", [None], "Pending"),
    ("Always", [(RUNNING, 0)], "Running"),
    ("Always", [(EXITED, 0)], "Running"),
    ("Never", [(EXITED, 0), (EXITED, 0)], "Succeeded"),
    ("Never", [(EXITED, 0), (EXITED, 1)], "Failed"),
    ("OnFailure", [(EXITED, 1)], "Running"),
    ("OnFailure", [(EXITED, 0)], "Succeeded"),
    ("Never", [(RUNNING, 0), (EXITED, 1)], "Running"),
])
def test_phase(policy: str, states: list[Any], phase: str) -> None:
    views = [ContainerView(C, None if s is None else rc(s[0], code=s[1])) for s in states]
    assert pod_phase({"restartPolicy": policy}, [], views) == phase


def test_init_containers_gate_the_phase() -> None:
    init = [ContainerView({"name": "init", "image": "x"}, rc(EXITED, 0, 1))]
    assert pod_phase({"restartPolicy": "Never"}, init, [ContainerView(C)]) == "Failed"
    assert pod_phase({"restartPolicy": "Always"}, init, [ContainerView(C)]) == "Pending"
    done = [ContainerView({"name": "init", "image": "x"}, rc(EXITED, 0, 0))]
    assert pod_phase({"restartPolicy": "Always"}, done, [ContainerView(C, rc(RUNNING))]) == "Running"


def test_pod_status_conditions_and_stable_transitions() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": {"containers": [C]},
           "status": {"phase": "Pending", "qosClass": "BestEffort",
                      "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "T0"}]}}
    unready = pod_status(pod, sandbox_ready=True, pod_ip="10.244.251.9", host_ip="127.0.0.1", inits=[],
                         containers=[ContainerView(C, rc(RUNNING), ready=False, started=True)])
    cond = {c["type"]: c for c in unready["conditions"]}
    assert unready["phase"] == "Running" and unready["podIP"] == "10.244.251.9" and unready["qosClass"] == "BestEffort"
    assert cond["Ready"]["status"] == "False" and cond["Ready"]["reason"] == "ContainersNotReady"
    assert cond["Ready"]["message"] == "containers with unready status: [app]"
    assert cond["Initialized"]["status"] == "True" and cond["PodScheduled"]["lastTransitionTime"] == "T0"
    assert cond["PodReadyToStartContainers"]["status"] == "True"
    again = pod_status({**pod, "status": unready}, sandbox_ready=True, pod_ip="10.244.251.9", host_ip="127.0.0.1",
                       inits=[], containers=[ContainerView(C, rc(RUNNING), ready=False, started=True)])
    assert not status_differs(unready, again)      # nothing new: the kubelet does not write
    ready = pod_status({**pod, "status": unready}, sandbox_ready=True, pod_ip="10.244.251.9", host_ip="127.0.0.1",
                       inits=[], containers=[ContainerView(C, rc(RUNNING), ready=True, started=True)])
    assert status_differs(unready, ready)
    assert {c["type"]: c["status"] for c in ready["conditions"]}["Ready"] == "True"


class FakeExec:
    def __init__(self, code: int) -> None:
        self.code = code
        self.calls: list[list[str]] = []

    async def exec_sync(self, container_id: str, cmd: list[str], timeout: float = 0) -> ExecResult:
        self.calls.append(cmd)
        return ExecResult(b"out", b"", self.code)


async def test_probe_handlers() -> None:
    async def ok_handler(request: web.Request) -> web.Response:
        return web.Response(text="fine")

    async def bad_handler(request: web.Request) -> web.Response:
        return web.Response(status=500)

    app = web.Application()
    app.router.add_get("/ok", ok_handler)
    app.router.add_get("/bad", bad_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    container = {"ports": [{"name": "http", "containerPort": port}]}
    try:
        ok = await run_handler({"httpGet": {"path": "/ok", "port": "http"}}, container=container, container_id="c",
                               pod_ip="127.0.0.1", runtime=FakeExec(0), timeout=2)
        bad = await run_handler({"httpGet": {"path": "/bad", "port": port}}, container=container, container_id="c",
                                pod_ip="127.0.0.1", runtime=FakeExec(0), timeout=2)
        tcp = await run_handler({"tcpSocket": {"port": port}}, container=container, container_id="c",
                                pod_ip="127.0.0.1", runtime=FakeExec(0), timeout=2)
    finally:
        await runner.cleanup()
    assert ok == ProbeOutcome(True, "fine")
    assert bad == ProbeOutcome(False, "HTTP probe failed with statuscode: 500")
    assert tcp.success
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    refused = await run_handler({"tcpSocket": {"port": closed}}, container={}, container_id="c", pod_ip="127.0.0.1",
                                runtime=FakeExec(0), timeout=2)
    assert refused == ProbeOutcome(False, f"dial tcp 127.0.0.1:{closed}: connect: connection refused")
    fake = FakeExec(3)
    failed = await run_handler({"exec": {"command": ["cat", "/tmp/healthy"]}}, container={}, container_id="c",
                               pod_ip="", runtime=fake, timeout=1)
    assert failed == ProbeOutcome(False, "out") and fake.calls == [["cat", "/tmp/healthy"]]
    assert not (await run_handler({"httpGet": {"port": "nope"}}, container={}, container_id="c", pod_ip="1.2.3.4",
                                  runtime=fake, timeout=1)).success


def test_probe_thresholds() -> None:
    changes: list[str] = []
    failures: list[str] = []
    spec = ProbeSpec.from_api({"exec": {"command": ["x"]}, "failureThreshold": 2, "successThreshold": 2})
    assert (spec.period, spec.timeout, spec.initial_delay) == (10, 1, 0)

    def worker(kind: str) -> ProbeWorker:
        return ProbeWorker(kind, spec, lambda: None,  # type: ignore[arg-type,return-value]
                           on_change=lambda w: changes.append(f"{w.kind}:{w.result}"),
                           on_failure=lambda w, o: failures.append(o.output))

    readiness = worker(READINESS)
    assert readiness.result == FAILURE
    readiness.record(ProbeOutcome(True))
    assert readiness.result == FAILURE            # one success is not enough with successThreshold 2
    readiness.record(ProbeOutcome(True))
    assert readiness.result == SUCCESS
    readiness.record(ProbeOutcome(False, "boom"))
    assert readiness.result == SUCCESS
    readiness.record(ProbeOutcome(False, "boom"))
    assert readiness.result == FAILURE and failures == ["boom", "boom"]
    assert changes == [f"{READINESS}:{SUCCESS}", f"{READINESS}:{FAILURE}"]
    assert worker(LIVENESS).result == SUCCESS and worker(STARTUP).result == UNKNOWN


def test_node_conditions_from_runtime_status() -> None:
    status = {"conditions": [{"type": "RuntimeReady", "status": True},
                             {"type": "NetworkReady", "status": False, "reason": "NetworkPluginNotReady",
                              "message": "cni config uninitialized"}]}
    reason = runtime_not_ready(status)
    assert reason == ("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
                      "message:cni config uninitialized")
    assert runtime_not_ready(None, "cannot reach the runtime").startswith("container runtime is down")
    assert runtime_not_ready({"conditions": [{"type": "RuntimeReady", "status": True},
                                             {"type": "NetworkReady", "status": True}]}) == ""
    wanted = desired_conditions(reason, Pressure())
    conds = merge_conditions([{"type": "Custom", "status": "True"}], wanted, "T1")
    by_type = {c["type"]: c for c in conds}
    assert by_type["Ready"]["status"] == "False" and by_type["Ready"]["reason"] == "KubeletNotReady"
    assert by_type["Custom"] == {"type": "Custom", "status": "True"}       # other agents' conditions kept
    assert not conditions_changed(conds, wanted)
    healthy = desired_conditions("", Pressure())
    assert conditions_changed(conds, healthy)
    later = {c["type"]: c for c in merge_conditions(conds, healthy, "T2")}
    assert later["Ready"]["lastTransitionTime"] == "T2" and later["MemoryPressure"]["lastTransitionTime"] == "T1"
    assert later["MemoryPressure"]["lastHeartbeatTime"] == "T2"


def test_capacity_and_labels() -> None:
    m = Machine(cpus=2, memory=4 * 1024**3, storage=100 * 1024**3, os_image="Debian", kernel="6.1", arch="amd64",
                machine_id="m", boot_id="b")
    assert capacity(m, 110) == {"cpu": "2", "memory": "4194304Ki", "ephemeral-storage": "104857600Ki", "pods": "110"}
    alloc = allocatable(m, 110)
    assert alloc["cpu"] == "1900m" and alloc["memory"] == f"{(4 * 1024**3 - 256 * 1024**2) // 1024}Ki"
    assert parse_node_labels("a=1, role=worker,") == {"a": "1", "role": "worker"}
    with pytest.raises(ValueError):
        parse_node_labels("novalue")
    assert parse_duration("10s") == 10 and parse_duration("1m30s") == 90 and parse_duration("500ms") == 0.5
    assert parse_duration("2") == 2
    for bad in ("", "10x", "-1", "0s"):
        with pytest.raises(Exception, match="duration"):
            parse_duration(bad)


def _node(name: str, cidr: str | None, ip: str | None) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"podCIDR": cidr} if cidr else {},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}] if ip else []}}


async def test_host_gw_routes() -> None:
    calls: list[list[str]] = []
    routes_now = "10.244.9.0/24 via 192.168.56.29 dev eth1 proto 77\n10.244.2.0/24 via 192.168.56.99 dev eth1 proto 77"

    async def fake_ip(args: list[str]) -> tuple[int, str]:
        calls.append(args)
        if args[:3] == ["-o", "addr", "show"]:
            return 0, ("1: lo    inet 127.0.0.1/8 scope host lo\n"
                       "2: eth1    inet 192.168.56.21/24 brd 192.168.56.255 scope global eth1\n"
                       "3: cni0    inet 10.244.1.1/24 scope global cni0\n")
        if args[:3] == ["-o", "route", "show"]:
            return 0, routes_now
        return 0, ""

    nodes = [_node("worker1", "10.244.1.0/24", "192.168.56.21"),      # ourselves
             _node("worker2", "10.244.2.0/24", "192.168.56.22"),      # a neighbour: routed (replacing .99)
             _node("worker3", "10.244.3.0/24", "10.0.0.5"),           # not on a connected network
             _node("worker4", "10.244.4.0/24", "127.0.0.2"),          # loopback is nobody's next hop
             _node("worker5", None, "192.168.56.25"),                 # no podCIDR yet
             _node("worker6", "10.244.1.128/25", "192.168.56.26")]    # overlaps our own pod network
    assert {str(k): str(v) for k, v in desired_routes("worker1", nodes).items()} == {
        "10.244.2.0/24": "192.168.56.22", "10.244.3.0/24": "10.0.0.5", "10.244.4.0/24": "127.0.0.2",
        "10.244.1.128/25": "192.168.56.26"}
    installed = await HostGwRoutes("worker1", runner=fake_ip).sync(nodes)
    assert {str(k): v for k, v in installed.items()} == {"10.244.2.0/24": "192.168.56.22"}
    changes = [c for c in calls if c[0] == "route"]
    assert changes == [
        ["route", "replace", "10.244.2.0/24", "via", "192.168.56.22", "proto", ROUTE_PROTOCOL],
        ["route", "del", "10.244.9.0/24", "via", "192.168.56.29", "proto", ROUTE_PROTOCOL],   # its node is gone
    ]
    import ipaddress

    local = [ipaddress.ip_interface("192.168.56.21/24")]
    assert usable_next_hop(ipaddress.ip_address("192.168.56.21"), local) == "192.168.56.21 is an address of this node"
    assert usable_next_hop(ipaddress.ip_address("192.168.56.30"), local) == ""


async def test_kubelet_api_serves_https_with_a_self_signed_certificate() -> None:
    import aiohttp

    from minikube_py.kubelet.server import serving_ssl_context, start_server

    ctx = serving_ssl_context("node-x", "127.0.0.1", None, None)
    runner, port = await start_server(None, "127.0.0.1", 0, ctx)  # type: ignore[arg-type]
    try:
        async with aiohttp.ClientSession() as session, \
                session.get(f"https://127.0.0.1:{port}/healthz", ssl=False) as resp:
            assert resp.status == 200 and await resp.text() == "ok"
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):
                await session.get(f"http://127.0.0.1:{port}/healthz")
    finally:
        await runner.cleanup()
