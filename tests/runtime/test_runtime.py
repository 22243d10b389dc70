"""The runtime daemon end to end on this machine: real runc, CNI plugins, network namespaces, overlay
mounts and cgroups (root only). Every test removes its pods; the module's daemon fixture sweeps
whatever a failing test left (netns, veths, bridge, iptables rules, mounts, runc state, cgroups).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType

from minikube_py.runtime import (
    DeadlineExceededError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from minikube_py.runtime.client import RuntimeClient
from minikube_py.runtime.cni import node_conflist
from minikube_py.runtime.containers import merge_env, process_args, resolve_user
from minikube_py.runtime.shim import CriLog, rfc3339nano
from tests.runtime.runtime_fixtures import POD_CIDR, REPO, RuntimeDaemon, _busybox_layer, missing_requirements

CRI_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z) (stdout|stderr) (F|P) (.*)$")
needs_root = pytest.mark.skipif(missing_requirements() is not None, reason=str(missing_requirements()))


# ---- pure functions (no root needed) ------------------------------------------------------------------

def test_process_args_follow_kubernetes_rules() -> None:
    image = {"Entrypoint": ["/ep"], "Cmd": ["c1", "c2"]}
    assert process_args(image, [], []) == ["/ep", "c1", "c2"]
    assert process_args(image, ["/cmd"], []) == ["/cmd"]  # a command drops the image's Cmd too
    assert process_args(image, [], ["a1"]) == ["/ep", "a1"]
    assert process_args(image, ["/cmd"], ["a1"]) == ["/cmd", "a1"]
    assert process_args({}, [], []) == []


def test_env_merges_image_defaults_and_overrides() -> None:
    env = merge_env(["A=image", "PATH=/bin"], [{"key": "A", "value": "given"}, {"key": "B", "value": "x=y"}],
                    {"HOSTNAME": "pod"})
    assert env == ["A=given", "PATH=/bin", "HOSTNAME=pod", "B=x=y"]
    assert any(e.startswith("PATH=/usr/local/sbin") for e in merge_env([], [], {}))


def test_user_resolution_from_the_rootfs(tmp_path: Path) -> None:
    _busybox_layer(tmp_path)
    assert resolve_user("", tmp_path) == (0, 0, [])
    assert resolve_user("app", tmp_path) == (1000, 1000, [2000])
    assert resolve_user("1000", tmp_path) == (1000, 1000, [2000])
    assert resolve_user("4242", tmp_path) == (4242, 0, [])  # unknown uid: gid 0, as Docker does
    assert resolve_user("app:extra", tmp_path)[:2] == (1000, 2000)
    assert resolve_user("5:7", tmp_path)[:2] == (5, 7)
    with pytest.raises(InvalidArgumentError, match="unable to find user ghost"):
        resolve_user("ghost", tmp_path)


def test_cri_log_lines_and_partials(tmp_path: Path) -> None:
    import os

    log = CriLog(str(tmp_path / "c.log"))
    r, w = os.pipe()
    os.write(w, b"one\ntwo\r\n" + b"x" * (16 * 1024 + 5) + b"\nlast-without-newline")
    os.close(w)
    log.copy(r, "stderr")
    log.close()
    lines = (tmp_path / "c.log").read_bytes().decode().splitlines()
    parsed = [CRI_LINE.match(line).groups()[2:] for line in lines]  # type: ignore[union-attr]
    assert parsed == [("stderr", "F", "one"), ("stderr", "F", "two"), ("stderr", "P", "x" * 16384),
                      ("stderr", "F", "xxxxx"), ("stderr", "F", "last-without-newline")]
    assert rfc3339nano(1_700_000_000_120_000_000) == "2023-11-14T22:13:20.12Z"
    assert rfc3339nano(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"


def test_conflist_for_a_node(tmp_path: Path) -> None:
    conf = node_conflist("10.244.7.0/24", bridge="br7", network_name="net", ipam_data_dir=tmp_path)
    bridge, portmap, loopback = conf["plugins"]
    assert (bridge["type"], bridge["bridge"], bridge["isGateway"], bridge["ipMasq"], bridge["hairpinMode"]) == \
        ("bridge", "br7", True, True, True)
    assert bridge["ipam"]["type"] == "host-local"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.7.0/24"}]]
    assert portmap["type"] == "portmap" and portmap["capabilities"] == {"portMappings": True}
    assert loopback["type"] == "loopback"
    for bad in ("10.244.7.1/24", "nonsense", "10.0.0.0/31"):
        with pytest.raises(InvalidArgumentError):
            node_conflist(bad, bridge="br7", network_name="net", ipam_data_dir=tmp_path)
    with pytest.raises(InvalidArgumentError):
        node_conflist("10.244.7.0/24", bridge="a-name-far-too-long", network_name="net", ipam_data_dir=tmp_path)


# ---- the daemon ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeDaemon]:
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    d = RuntimeDaemon(tmp_path_factory.mktemp("runtime"))
    d.start()
    try:
        async def configure() -> None:
            async with RuntimeClient(d.socket) as rt:
                await rt.update_runtime_config(POD_CIDR)

        asyncio.run(configure())
        yield d
    finally:
        d.sweep()


@pytest.fixture
async def rt(daemon: RuntimeDaemon) -> AsyncIterator[RuntimeClient]:
    async with RuntimeClient(daemon.socket) as client:
        yield client


class Pod:
    """A sandbox and its containers, removed at the end of the test whatever happens."""

    def __init__(self, rt: RuntimeClient, daemon: RuntimeDaemon, name: str) -> None:
        self.rt, self.daemon, self.name = rt, daemon, name
        self.id = ""

    async def run(self, **config: Any) -> Pod:
        self.id = await self.rt.run_pod_sandbox({"metadata": {"name": self.name, "namespace": "rt-test",
                                                              "uid": f"uid-{self.name}"}, **config})
        return self

    async def container(self, name: str, command: list[str] | None = None, *, image: str = "test/busybox",
                        start: bool = True, **config: Any) -> str:
        body: dict[str, Any] = {"metadata": {"name": name}, "image": {"image": image},
                                "logPath": str(self.log_path(name)), **config}
        if command is not None:
            body["command"] = command
        cid = await self.rt.create_container(self.id, body)
        if start:
            await self.rt.start_container(cid)
        return cid

    def log_path(self, name: str) -> Path:
        return self.daemon.base / "logs" / self.name / f"{name}.log"

    async def remove(self) -> None:
        if self.id:
            await self.rt.remove_pod_sandbox(self.id)


@pytest.fixture
async def pods(rt: RuntimeClient, daemon: RuntimeDaemon) -> AsyncIterator[list[Pod]]:
    made: list[Pod] = []
    try:
        yield made
    finally:
        async with RuntimeClient(daemon.socket) as fresh:  # the test may have restarted the daemon
            for p in made:
                p.rt = fresh
                await p.remove()


async def new_pod(pods: list[Pod], rt: RuntimeClient, daemon: RuntimeDaemon, name: str, **config: Any) -> Pod:
    pod = Pod(rt, daemon, name)
    pods.append(pod)
    return await pod.run(**config)


async def wait_state(rt: RuntimeClient, cid: str, state: str, within: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        status = await rt.container_status(cid)
        if status["state"] == state or time.monotonic() > deadline:
            assert status["state"] == state, status
            return status
        await asyncio.sleep(0.05)


def log_entries(path: Path) -> list[tuple[str, str, str]]:
    out = []
    for line in path.read_text().splitlines():
        m = CRI_LINE.match(line)
        assert m is not None, f"not a CRI log line: {line!r}"
        out.append((m.group(3), m.group(4), m.group(5)))
    return out


@needs_root
async def test_status_and_missing_binaries(tmp_path: Path, daemon: RuntimeDaemon, rt: RuntimeClient) -> None:
    conditions = {c["type"]: c for c in (await rt.status())["conditions"]}
    assert conditions["RuntimeReady"]["status"] is True
    assert conditions["NetworkReady"]["status"] is True
    assert (await rt.version())["runtimeName"] == "minikube-py"
    conf = json.loads((daemon.conf_dir / "10-minikube-py.conflist").read_text())
    assert conf["plugins"][0]["bridge"] == daemon.bridge
    assert conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"] == POD_CIDR

    # A second node with no CNI config yet and a runc that is not there: reported, never a crash.
    broken = RuntimeDaemon(tmp_path / "broken", runc="/nonexistent/runc")
    broken.start()
    try:
        async with RuntimeClient(broken.socket) as b:
            cond = {c["type"]: c for c in (await b.status())["conditions"]}
            assert cond["RuntimeReady"]["status"] is False
            assert "/nonexistent/runc" in cond["RuntimeReady"]["message"]
            assert cond["NetworkReady"]["status"] is False
            assert cond["NetworkReady"]["message"] == "NetworkPluginNotReady: cni config uninitialized"
            with pytest.raises(UnavailableError, match="cni config uninitialized"):
                await b.run_pod_sandbox({"metadata": {"name": "x"}})
            # Config present but a plugin binary missing: named in the message.
            conflist = node_conflist("10.244.249.0/24", bridge=broken.bridge, network_name="n",
                                     ipam_data_dir=tmp_path / "ipam")
            conflist["plugins"].append({"type": "no-such-plugin"})
            broken.conf_dir.mkdir()
            (broken.conf_dir / "10-x.conflist").write_text(json.dumps(conflist))
            cond = {c["type"]: c for c in (await b.status())["conditions"]}
            assert "no-such-plugin" in cond["NetworkReady"]["message"]
            (broken.conf_dir / "10-x.conflist").unlink()
            await b.update_runtime_config("10.244.249.0/24")
            sid = await b.run_pod_sandbox({"metadata": {"name": "x"}})
            try:
                cid = await b.create_container(sid, {"metadata": {"name": "c"}, "image": {"image": "test/busybox"},
                                                     "command": ["true"]})
                with pytest.raises(UnavailableError, match="runc binary not found"):
                    await b.start_container(cid)
            finally:
                await b.remove_pod_sandbox(sid)
            assert broken.bridge_ports() == []
    finally:
        broken.sweep()
    assert broken.proc is None


@needs_root
async def test_two_pods_reach_each_other(daemon: RuntimeDaemon, rt: RuntimeClient, pods: list[Pod]) -> None:
    a = await new_pod(pods, rt, daemon, "ping-a", hostname="alpha",
                      dnsConfig={"servers": ["10.96.0.10"], "searches": ["rt-test.svc.cluster.local"],
                                 "options": ["ndots:5"]})
    b = await new_pod(pods, rt, daemon, "ping-b")
    ips = []
    for pod in (a, b):
        st = await rt.pod_sandbox_status(pod.id)
        assert st["state"] == "SANDBOX_READY"
        assert st["metadata"]["name"] == pod.name
        ips.append(st["network"]["ip"])
    assert ips[0] != ips[1]
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(POD_CIDR) for ip in ips)
    ca = await a.container("main", ["sleep", "3600"])
    cb = await b.container("main", ["sleep", "3600"])
    ping = await rt.exec_sync(ca, ["ping", "-c", "1", "-W", "5", ips[1]], timeout=20)
    assert ping.exit_code == 0, ping
    assert b"1 packets received" in ping.stdout
    ping = await rt.exec_sync(cb, ["ping", "-c", "1", "-W", "5", ips[0]], timeout=20)
    assert ping.exit_code == 0, ping
    files = await rt.exec_sync(ca, ["sh", "-c", "hostname; cat /etc/resolv.conf; grep alpha /etc/hosts"])
    assert files.stdout.decode().splitlines() == [
        "alpha", "nameserver 10.96.0.10", "search rt-test.svc.cluster.local", "options ndots:5", f"{ips[0]}\talpha"]
    ready = await rt.list_pod_sandbox(state="SANDBOX_READY")
    assert {a.id, b.id} <= {s["id"] for s in ready}
    assert [c["id"] for c in await rt.list_containers(pod_sandbox_id=a.id)] == [ca]


@needs_root
async def test_output_lands_in_the_cri_log(daemon: RuntimeDaemon, rt: RuntimeClient, pods: list[Pod]) -> None:
    pod = await new_pod(pods, rt, daemon, "logs")
    cid = await pod.container("c", ["sh", "-c", "echo out1; echo err1 >&2; echo out2; printf tail"])
    st = await wait_state(rt, cid, "CONTAINER_EXITED")
    assert (st["exitCode"], st["reason"]) == (0, "Completed")
    assert st["logPath"] == str(pod.log_path("c"))
    entries = log_entries(pod.log_path("c"))
    assert sorted(entries) == sorted([("stdout", "F", "out1"), ("stderr", "F", "err1"), ("stdout", "F", "out2"),
                                      ("stdout", "F", "tail")])
    assert [e for e in entries if e[0] == "stdout"] == [("stdout", "F", "out1"), ("stdout", "F", "out2"),
                                                         ("stdout", "F", "tail")]


@needs_root
async def test_exit_codes_reasons_and_image_config(daemon: RuntimeDaemon, rt: RuntimeClient,
                                                   pods: list[Pod]) -> None:
    pod = await new_pod(pods, rt, daemon, "exits")
    failed = await pod.container("fail", ["sh", "-c", "exit 3"])
    st = await wait_state(rt, failed, "CONTAINER_EXITED")
    assert (st["exitCode"], st["reason"]) == (3, "Error")
    assert 0 < st["createdAt"] <= st["startedAt"] <= st["finishedAt"]
    assert st["imageRef"] == "sha256:" + "b" * 64

    # The image's Entrypoint + Cmd, its Env, User (by name) and WorkingDir; then args replacing Cmd.
    default = await pod.container("image-default", image="test/app")
    await wait_state(rt, default, "CONTAINER_EXITED")
    assert log_entries(pod.log_path("image-default")) == [("stdout", "F", "from-image-cmd")]
    script = 'echo "$(id -u):$(id -g):$(id -G) $(pwd) $FROM_IMAGE $GIVEN"; cat greeting'
    custom = await pod.container("image-args", image="test/app", args=[script],
                                 envs=[{"key": "GIVEN", "value": "given"}])
    st = await wait_state(rt, custom, "CONTAINER_EXITED")
    assert st["exitCode"] == 0, log_entries(pod.log_path("image-args"))
    assert [e[2] for e in log_entries(pod.log_path("image-args"))] == [
        "1000:1000:1000 2000 /home/app yes given", "hello from the app layer"]

    # A command that does not exist: the start fails, and the status says why in runc's words.
    with pytest.raises(Exception, match='exec: "nope": executable file not found in \\$PATH'):
        await pod.container("nope", ["nope"])
    nope = next(c for c in await rt.list_containers(pod_sandbox_id=pod.id) if c["metadata"]["name"] == "nope")
    st = await rt.container_status(nope["id"])
    assert st["state"] == "CONTAINER_EXITED"
    assert st["reason"] == "ContainerCannotRun"
    assert 'exec: "nope": executable file not found in $PATH' in st["message"]
    assert st["exitCode"] != 0
    exited = await rt.list_containers(pod_sandbox_id=pod.id, state="CONTAINER_EXITED")
    assert len(exited) == 4


@needs_root
async def test_stop_gives_grace_then_kills(daemon: RuntimeDaemon, rt: RuntimeClient, pods: list[Pod]) -> None:
    pod = await new_pod(pods, rt, daemon, "stops")
    polite = await pod.container("polite", ["sh", "-c", "trap 'echo bye; exit 42' TERM; while :; do sleep 0.1; done"])
    stubborn = await pod.container("stubborn", ["sh", "-c", "trap 'echo ignoring TERM' TERM; "
                                                            "echo ready; while :; do sleep 0.1; done"])
    await wait_state(rt, polite, "CONTAINER_RUNNING")
    await wait_state(rt, stubborn, "CONTAINER_RUNNING")
    await rt.stop_container(polite, timeout=30)
    st = await rt.container_status(polite)
    assert (st["state"], st["exitCode"], st["reason"]) == ("CONTAINER_EXITED", 42, "Error")
    assert ("stdout", "F", "bye") in log_entries(pod.log_path("polite"))

    started = time.monotonic()
    await rt.stop_container(stubborn, timeout=1)
    assert time.monotonic() - started >= 1.0  # the grace period was given before the SIGKILL
    st = await rt.container_status(stubborn)
    assert (st["state"], st["exitCode"]) == ("CONTAINER_EXITED", 137)
    assert ("stdout", "F", "ignoring TERM") in log_entries(pod.log_path("stubborn"))
    await rt.stop_container(stubborn, timeout=1)  # stopping an exited container is a no-op
    with pytest.raises(InvalidArgumentError, match="not created"):
        await rt.start_container(stubborn)


@needs_root
async def test_containers_survive_a_daemon_restart(daemon: RuntimeDaemon, rt: RuntimeClient,
                                                    pods: list[Pod]) -> None:
    pod = await new_pod(pods, rt, daemon, "restart")
    cid = await pod.container("ticker", ["sh", "-c", "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.1; done"])
    await wait_state(rt, cid, "CONTAINER_RUNNING")
    started_at = (await rt.container_status(cid))["startedAt"]
    await rt.close()
    await asyncio.to_thread(daemon.restart)
    async with RuntimeClient(daemon.socket) as again:
        listed = await again.list_containers(pod_sandbox_id=pod.id)
        assert [(c["id"], c["state"]) for c in listed] == [(cid, "CONTAINER_RUNNING")]
        assert (await again.container_status(cid))["startedAt"] == started_at
        assert (await again.pod_sandbox_status(pod.id))["state"] == "SANDBOX_READY"
        before = len(pod.log_path("ticker").read_text().splitlines())
        deadline = time.monotonic() + 10
        grown = False
        while not grown and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            grown = len(pod.log_path("ticker").read_text().splitlines()) > before + 2
        assert grown, "the container stopped logging across the restart"
        assert (await again.exec_sync(cid, ["echo", "alive"])).stdout == b"alive\n"
        await again.stop_container(cid, timeout=0)
        st = await again.container_status(cid)
        assert (st["state"], st["exitCode"]) == ("CONTAINER_EXITED", 137)


@needs_root
async def test_exec_sync_and_streaming(daemon: RuntimeDaemon, rt: RuntimeClient, pods: list[Pod]) -> None:
    pod = await new_pod(pods, rt, daemon, "exec")
    cid = await pod.container("main", ["sleep", "3600"])
    res = await rt.exec_sync(cid, ["sh", "-c", "echo hi; echo oops >&2; exit 5"])
    assert (res.stdout, res.stderr, res.exit_code) == (b"hi\n", b"oops\n", 5)
    with pytest.raises(DeadlineExceededError):
        await rt.exec_sync(cid, ["sleep", "30"], timeout=0.5)
    procs = await rt.exec_sync(cid, ["ps", "-o", "args"])
    assert b"sleep 30" not in procs.stdout  # the timed-out command was killed inside the container

    ws = await rt.exec_stream(cid, ["sh", "-c", "read line; echo got $line; echo to-stderr >&2; exit 7"], stdin=True)
    try:
        assert ws.protocol == "v5.channel.k8s.io"
        await ws.send_bytes(b"\x00hello\n")
        got: dict[int, bytes] = {}
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                break
            got[msg.data[0]] = got.get(msg.data[0], b"") + msg.data[1:]
    finally:
        await ws.close()
    assert got[1] == b"got hello\n"
    assert got[2] == b"to-stderr\n"
    status = orjson.loads(got[3])
    assert status["status"] == "Failure" and status["details"]["causes"][0]["message"] == "7"

    ws = await rt.exec_stream(cid, ["tty"], tty=True)
    try:
        out = b""
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                break
            if msg.data[0] == 1:
                out += msg.data[1:]
            elif msg.data[0] == 3:
                assert orjson.loads(msg.data[1:])["status"] == "Success"
    finally:
        await ws.close()
    assert out.strip().startswith(b"/dev/pts/")

    # A client that hangs up mid-command: the command inside the container is killed, not orphaned.
    ws = await rt.exec_stream(cid, ["sleep", "301"])
    await ws.close()
    deadline = time.monotonic() + 10
    while b"sleep 301" in (await rt.exec_sync(cid, ["ps", "-o", "args"])).stdout:
        assert time.monotonic() < deadline, "the exec'd command outlived its session"
        await asyncio.sleep(0.1)

    await rt.stop_container(cid, timeout=0)
    with pytest.raises(InvalidArgumentError, match="not running"):
        await rt.exec_sync(cid, ["true"])
    with pytest.raises(InvalidArgumentError, match="not running"):
        await rt.exec_stream(cid, ["true"])
    with pytest.raises(NotFoundError):
        await rt.exec_stream("no-such-container", ["true"])


@needs_root
async def test_resources_become_cgroup_limits(daemon: RuntimeDaemon, rt: RuntimeClient, pods: list[Pod]) -> None:
    pod = await new_pod(pods, rt, daemon, "limits")
    resources = {"memoryLimitInBytes": 64 * 1024 * 1024, "cpuShares": 512, "cpuQuota": 50000, "cpuPeriod": 100000}
    cid = await pod.container("main", ["sleep", "3600"], linux={"resources": resources})
    inside = await rt.exec_sync(cid, ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                      "/sys/fs/cgroup/cpu/cpu.shares", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"])
    assert inside.stdout.decode().split() == ["67108864", "512", "50000"], inside
    host = Path("/sys/fs/cgroup/memory") / daemon.cgroup_parent / cid / "memory.limit_in_bytes"
    assert host.read_text().strip() == "67108864"

    hog = await pod.container("hog", ["sh", "-c", "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived"],
                              linux={"resources": {"memoryLimitInBytes": 16 * 1024 * 1024}})
    st = await wait_state(rt, hog, "CONTAINER_EXITED", within=30)
    assert st["reason"] == "OOMKilled", st
    assert st["exitCode"] == 137


@needs_root
async def test_remove_sandbox_leaves_nothing_behind(daemon: RuntimeDaemon, rt: RuntimeClient,
                                                    pods: list[Pod]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        host_port = s.getsockname()[1]
    ports_before, chains_before = set(daemon.bridge_ports()), daemon.cni_chains()
    pod = await new_pod(pods, rt, daemon, "cleanup",
                        portMappings=[{"containerPort": 8080, "hostPort": host_port, "protocol": "TCP",
                                       "hostIp": "127.0.0.1"}])
    cid = await pod.container("main", ["sleep", "3600"])
    stopped = await pod.container("never-started", ["true"], start=False)
    assert (await rt.container_status(stopped))["state"] == "CONTAINER_CREATED"

    assert pod.id in daemon.netns_names()
    pod_ports = set(daemon.bridge_ports()) - ports_before
    assert pod_ports, "the pod has no veth on the bridge"
    assert daemon.iptables_rules(pod.id), "portmap added no rule for the hostPort"
    assert len(daemon.cni_chains() - chains_before) >= 2, "no per-pod chains (masquerade, hostport DNAT)"
    assert any(cid in m for m in daemon.mounts())
    assert cid in daemon.runc_containers()

    await rt.stop_pod_sandbox(pod.id)
    st = await rt.pod_sandbox_status(pod.id)
    assert st["state"] == "SANDBOX_NOTREADY"
    assert (await rt.container_status(cid))["state"] == "CONTAINER_EXITED"
    assert daemon.iptables_rules(pod.id) == []
    await rt.remove_pod_sandbox(pod.id)

    assert daemon.cni_chains() == chains_before, "a per-pod iptables chain is left"
    assert pod.id not in daemon.netns_names()
    assert not set(daemon.bridge_ports()) & pod_ports, "the pod's veth is left on the bridge"
    assert daemon.iptables_rules(pod.id) == []
    assert [m for m in daemon.mounts() if cid in m or stopped in m] == []
    assert cid not in daemon.runc_containers()
    assert not (daemon.root_dir / "sandboxes" / pod.id).exists()
    assert not (daemon.root_dir / "containers" / cid).exists()
    assert not (daemon.state_dir / "containers" / cid).exists()
    assert not (Path("/sys/fs/cgroup/memory") / daemon.cgroup_parent / cid).exists()
    with pytest.raises(NotFoundError):
        await rt.pod_sandbox_status(pod.id)
    with pytest.raises(NotFoundError):
        await rt.container_status(cid)
    await rt.remove_pod_sandbox(pod.id)  # idempotent
    await rt.stop_pod_sandbox(pod.id)
    await rt.remove_container(cid)


@needs_root
async def test_bad_requests_get_clear_errors(daemon: RuntimeDaemon, rt: RuntimeClient, pods: list[Pod]) -> None:
    with pytest.raises(NotFoundError, match="not found"):
        await rt.pod_sandbox_status("nope")
    with pytest.raises(InvalidArgumentError, match=r"metadata\.name"):
        await rt.run_pod_sandbox({"hostname": "x"})
    with pytest.raises(InvalidArgumentError, match="portMappings"):
        await rt.run_pod_sandbox({"metadata": {"name": "x"}, "portMappings": [{"containerPort": 70000}]})
    with pytest.raises(NotFoundError):
        await rt.create_container("nope", {"metadata": {"name": "c"}, "image": {"image": "test/busybox"}})
    pod = await new_pod(pods, rt, daemon, "bad")
    with pytest.raises(NotFoundError, match="pull it first"):
        await pod.container("c", ["true"], image="not/pulled")
    with pytest.raises(InvalidArgumentError, match="must be absolute"):
        await pod.container("c", ["true"], logPath="relative/c.log")
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        await pod.container("c", ["true"], mounts=[{"containerPath": "/data", "hostPath": "/no/such/dir"}])
    with pytest.raises(InvalidArgumentError, match="no command"):
        await pod.container("c", None, image="test/empty", start=False)
    await pod.container("dup", ["true"], start=False)
    with pytest.raises(InvalidArgumentError, match="already in use"):
        await pod.container("dup", ["true"], start=False)
    with pytest.raises(NotFoundError, match="unknown method"):
        await rt.call("NoSuchMethod")
    with pytest.raises(InvalidArgumentError, match="podCIDR"):
        await rt.update_runtime_config("10.0.0.0/33")
    await rt.remove_container("no-such-container")  # idempotent
    await rt.stop_pod_sandbox("no-such-sandbox")
    assert (await rt.list_pod_sandbox(id=pod.id))[0]["state"] == "SANDBOX_READY"

    # Raw HTTP: a body that is not JSON.
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(daemon.socket))) as http:
        async with http.post("http://runtime/v1/Version", data=b"{nope") as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "InvalidArgument"



@needs_root
async def test_cli_daemon_pulls_from_a_registry_and_runs(tmp_path: Path) -> None:
    """``minikube-py runtime`` as deployed: the real ImageStore pulling demo/busybox from a registry."""
    from minikube_py.runtime.image_build import build_image, push_image
    from tests.runtime.registry_harness import LocalRegistry, registry_available

    if not registry_available():
        pytest.skip("docker-registry is not installed (Debian package docker-registry)")
    registry = LocalRegistry(tmp_path / "registry")
    await asyncio.to_thread(registry.start)
    node = RuntimeDaemon(tmp_path / "node", default_registry=registry.address)
    try:
        recipe = REPO / "minikube_py" / "images" / "busybox"
        await asyncio.to_thread(build_image, recipe, ["demo/busybox:latest"], output=tmp_path / "layout")
        await push_image("demo/busybox:latest", registry=registry.address, output=tmp_path / "layout")
        await asyncio.to_thread(node.start)
        async with RuntimeClient(node.socket) as rt:
            await rt.update_runtime_config("10.244.248.0/24")
            with pytest.raises(InternalError, match="demo/missing"):
                await rt.pull_image("demo/missing")
            ref = await rt.pull_image("demo/busybox")
            assert ref.startswith("sha256:")
            assert (await rt.image_status("demo/busybox"))["repoTags"] == [f"{registry.address}/demo/busybox:latest"]
            sid = await rt.run_pod_sandbox({"metadata": {"name": "pulled", "namespace": "rt-test"}})
            try:
                log_path = tmp_path / "logs" / "c.log"
                cid = await rt.create_container(sid, {"metadata": {"name": "c"}, "image": {"image": "demo/busybox"},
                                                      "args": ["-c", "echo from a pulled image"],
                                                      "command": ["sh"], "logPath": str(log_path)})
                await rt.start_container(cid)
                st = await wait_state(rt, cid, "CONTAINER_EXITED")
                assert (st["exitCode"], st["imageRef"]) == (0, ref)
                assert log_entries(log_path) == [("stdout", "F", "from a pulled image")]
                with pytest.raises(InvalidArgumentError, match="in use"):
                    await rt.remove_image("demo/busybox")
            finally:
                await rt.remove_pod_sandbox(sid)
            await rt.remove_image("demo/busybox")
            assert await rt.list_images() == []
    finally:
        await asyncio.to_thread(node.sweep)
        await asyncio.to_thread(registry.stop)
