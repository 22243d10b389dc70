"""Issue #5's acceptance on ``minikube-py up --local --nodes 2``: real pods on two real nodes.

Every pod of the module is created up front (the ``workload`` fixture), so that the slow things — back-off,
probes — run while the other tests do; each test then waits for its own pod's story.

Note: Debian's busybox-static (1.35) crashes on ``wget -T``; timeouts here come from ``timeout N wget``.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.nodes.conftest import NodesCluster

DOWNWARD_ENV = [
    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
]


def pod(name: str, node: str, *, image: str = "demo/busybox", command: list[str] | None = None,
        labels: dict[str, str] | None = None, restart: str = "Always", grace: int | None = None,
        **container: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"name": "main", "image": image, "imagePullPolicy": "IfNotPresent", **container}
    if command is not None:
        c["command"] = command
    spec: dict[str, Any] = {"nodeName": node, "restartPolicy": restart, "containers": [c]}
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {"test": name}},
            "spec": spec}


def service(name: str, selector: dict[str, str], *, node_port: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    if node_port:
        spec["type"] = "NodePort"
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


SLEEP = ["sleep", "3600"]
WORKLOAD = [
    pod("client-1", "node1", command=SLEEP),
    pod("client-2", "node2", command=SLEEP),
    pod("web-1", "node1", image="demo/web", labels={"app": "web"}, env=DOWNWARD_ENV),
    pod("web-2", "node2", image="demo/web", labels={"app": "web"}, env=DOWNWARD_ENV),
    service("web", {"app": "web"}, node_port=True),
    pod("crash", "node1", command=["sh", "-c", "echo crashing; exit 3"]),
    pod("liveness", "node2", command=["sh", "-c", "touch /tmp/healthy; sleep 4; rm /tmp/healthy; sleep 3600"], grace=1,
        livenessProbe={"exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 1, "failureThreshold": 2}),
    pod("ready", "node1", image="demo/web", labels={"app": "ready"}, env=DOWNWARD_ENV,
        readinessProbe={"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1, "failureThreshold": 1}),
    service("ready", {"app": "ready"}),
    pod("ticker", "node2", command=["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.3; done"]),
    pod("nope", "node2", image="demo/nope:404"),
    pod("bad", "node1", command=["no-such-binary"], restart="Never"),
]


@pytest.fixture(scope="module")
def workload(cluster: NodesCluster) -> NodesCluster:
    cluster.apply(*WORKLOAD)
    return cluster


def running(c: NodesCluster, name: str, timeout: float = 90.0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        p = c.pod(name)
        return p if p["status"].get("phase") == "Running" and p["status"].get("podIP") else None

    return c.wait_for(f"pod {name} Running", check, timeout)  # type: ignore[no-any-return]


def main_status(p: dict[str, Any]) -> dict[str, Any]:
    return next((s for s in p["status"].get("containerStatuses") or [] if s["name"] == "main"), {})


def exec_in(c: NodesCluster, name: str, *cmd: str, check: bool = True, timeout: float = 30.0) -> str:
    return c.kubectl("exec", name, "--", *cmd, check=check, timeout=timeout).stdout


def node_pod_cidrs(c: NodesCluster) -> dict[str, str]:
    return {n["metadata"]["name"]: n["spec"].get("podCIDR", "") for n in c.get("nodes")["items"]}


# ---- nodes and pod networking ----


def test_nodes_ready_with_pod_cidrs(workload: NodesCluster) -> None:
    c = workload
    nodes = {n["metadata"]["name"]: n for n in c.get("nodes")["items"]}
    assert set(nodes) == {"node1", "node2"}
    cidrs = node_pod_cidrs(c)
    assert cidrs["node1"] != cidrs["node2"]
    for name, node in nodes.items():
        ready = next(x for x in node["status"]["conditions"] if x["type"] == "Ready")
        assert ready["status"] == "True", ready
        assert ipaddress.ip_network(cidrs[name]).subnet_of(ipaddress.ip_network("10.244.0.0/16"))
        addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
        assert addresses["InternalIP"] == c.nodes[name]["ip"]


def test_busybox_pod_runs_with_ip_from_its_node_cidr(workload: NodesCluster) -> None:
    c = workload
    cidrs = node_pod_cidrs(c)
    for name, node in (("client-1", "node1"), ("client-2", "node2")):
        p = running(c, name)
        assert p["spec"]["nodeName"] == node
        assert ipaddress.ip_address(p["status"]["podIP"]) in ipaddress.ip_network(cidrs[node])
        assert p["status"]["hostIP"] == c.nodes[node]["ip"]
        st = main_status(p)
        assert st["ready"] is True and "running" in st["state"]
        assert st["containerID"].startswith("minikube-py://")


def test_pod_reaches_pod_on_other_node(workload: NodesCluster) -> None:
    c = workload
    running(c, "client-1")
    web2 = running(c, "web-2")
    ip = web2["status"]["podIP"]
    out = c.wait_for("web-2 answering client-1",
                     lambda: exec_in(c, "client-1", "timeout", "5", "wget", "-qO-", f"http://{ip}:8080/", check=False))
    assert "pod=web-2" in out and "node=node2" in out and f"ip={ip}" in out


def test_cluster_ip_balances_over_both_nodes(workload: NodesCluster) -> None:
    c = workload
    for name in ("client-2", "web-1", "web-2"):
        running(c, name)
    svc = c.get("service", "web")
    cluster_ip = svc["spec"]["clusterIP"]
    seen: set[str] = set()

    def both_seen() -> bool:
        out = exec_in(c, "client-2", "sh", "-c",
                      f"for i in 1 2 3 4 5 6 7 8; do timeout 5 wget -qO- http://{cluster_ip}/; done", check=False)
        seen.update(re.findall(r"pod=(web-\d)", out))
        return seen == {"web-1", "web-2"}

    c.wait_for(f"both web pods answering on {cluster_ip}", both_seen, timeout=60)


def test_node_port_answers_on_every_node(workload: NodesCluster) -> None:
    c = workload
    for name in ("web-1", "web-2"):
        running(c, name)
    port = c.get("service", "web")["spec"]["ports"][0]["nodePort"]
    for node, info in c.nodes.items():
        url = f"http://{info['ip']}:{port}/"

        def answer(url: str = url) -> str:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    return str(r.read().decode())
            except OSError as e:
                raise AssertionError(f"{url}: {e}") from None

        body = c.wait_for(f"NodePort {url} from the host", answer, timeout=30)
        assert body.startswith("demo/web 1.0: pod=web-"), (node, body)


# ---- container lifecycle: restarts, probes ----


def _backoff_seconds(message: str) -> float:
    m = re.search(r"back-off (\d+)(m?)(\d*)s? restarting failed container", message or "")
    if not m:
        return -1
    return int(m.group(1)) * 60 + int(m.group(3) or 0) if m.group(2) else int(m.group(1))


def test_crashing_container_goes_to_crash_loop_back_off_growing(workload: NodesCluster) -> None:
    c = workload
    seen: list[float] = []
    counts: list[int] = []

    def grown() -> bool:
        st = main_status(c.pod("crash"))
        waiting = st.get("state", {}).get("waiting") or {}
        if waiting.get("reason") == "CrashLoopBackOff":
            value = _backoff_seconds(waiting.get("message", ""))
            assert value > 0, f"unexpected back-off message {waiting.get('message')!r}"
            if not seen or seen[-1] != value:
                seen.append(value)
                counts.append(st.get("restartCount", 0))
        return len(seen) >= 2

    c.wait_for("two CrashLoopBackOff delays", grown, timeout=90)
    assert seen[1] > seen[0], seen
    assert counts[1] > counts[0], counts
    st = main_status(c.pod("crash"))
    last = st["lastState"]["terminated"]
    assert last["exitCode"] == 3 and last["reason"] == "Error"
    assert c.pod("crash")["status"]["phase"] == "Running"  # restarting, as kubectl shows it
    logs = c.kubectl("logs", "crash").stdout
    assert "crashing" in logs


def test_failing_liveness_probe_restarts_container(workload: NodesCluster) -> None:
    c = workload

    def restarted() -> dict[str, Any] | None:
        st = main_status(c.pod("liveness"))
        return st if st.get("restartCount", 0) >= 1 else None

    st = c.wait_for("the liveness pod to restart", restarted, timeout=90)
    assert "terminated" in st["lastState"], st
    events = c.get("events", "", "--field-selector", "involvedObject.name=liveness")["items"]
    reasons = {e["reason"] for e in events}
    assert "Unhealthy" in reasons, reasons
    unhealthy = next(e for e in events if e["reason"] == "Unhealthy")
    assert "Liveness probe failed" in unhealthy["message"]


def _endpoint_ips(c: NodesCluster, name: str) -> tuple[set[str], set[str]]:
    ep = c.get("endpoints", name)
    ready: set[str] = set()
    not_ready: set[str] = set()
    for subset in ep.get("subsets") or []:
        ready |= {a["ip"] for a in subset.get("addresses") or []}
        not_ready |= {a["ip"] for a in subset.get("notReadyAddresses") or []}
    return ready, not_ready


def test_readiness_probe_drives_endpoints(workload: NodesCluster) -> None:
    c = workload
    p = running(c, "ready")
    ip = p["status"]["podIP"]

    def ready_is(value: str) -> bool:
        conds = {x["type"]: x["status"] for x in c.pod("ready")["status"].get("conditions") or []}
        return conds.get("Ready") == value

    c.wait_for("ready pod NotReady (no /tmp/ready yet)", lambda: ready_is("False"))
    c.wait_for("not-ready address in Endpoints", lambda: _endpoint_ips(c, "ready") == (set(), {ip}))
    exec_in(c, "ready", "touch", "/tmp/ready")
    c.wait_for("ready pod Ready", lambda: ready_is("True"))
    c.wait_for("ready address in Endpoints", lambda: _endpoint_ips(c, "ready") == ({ip}, set()))
    exec_in(c, "ready", "rm", "/tmp/ready")
    c.wait_for("ready pod removed from Endpoints", lambda: _endpoint_ips(c, "ready") == (set(), {ip}))
    exec_in(c, "ready", "touch", "/tmp/ready")
    c.wait_for("ready pod back in Endpoints", lambda: _endpoint_ips(c, "ready") == ({ip}, set()))
    assert main_status(c.pod("ready"))["restartCount"] == 0  # readiness never restarts


# ---- logs and exec through the API server ----


def test_logs_tail_and_follow(workload: NodesCluster) -> None:
    c = workload
    running(c, "ticker")
    c.wait_for("a few ticks", lambda: len(c.kubectl("logs", "ticker").stdout.splitlines()) >= 4)
    tail = c.kubectl("logs", "ticker", "--tail=2").stdout.splitlines()
    assert len(tail) == 2 and all(line.startswith("tick ") for line in tail)
    n1, n2 = (int(line.split()[1]) for line in tail)
    assert n2 == n1 + 1
    proc = subprocess.Popen([c.kubectl_path, f"--kubeconfig={c.kubeconfig}", "logs", "-f", "--tail=1", "ticker"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # A stream that stalls must fail the test, not hang it.
    watchdog = threading.Timer(30, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == list(range(numbers[0], numbers[0] + 4)), lines
    assert numbers[0] >= n2  # -f keeps streaming lines written after it started


def test_exec_one_shot_and_interactive(workload: NodesCluster) -> None:
    c = workload
    running(c, "client-1")
    assert exec_in(c, "client-1", "sh", "-c", "echo $((6*7)); hostname").split() == ["42", "client-1"]
    failed = c.kubectl("exec", "client-1", "--", "sh", "-c", "echo oops >&2; exit 7", check=False)
    assert failed.returncode == 7 and "oops" in failed.stderr
    interactive = c.kubectl("exec", "-i", "client-1", "--", "sh", "-c", "read x; echo got-$x; cat; exit 3",
                            input="hello\nrest\n", check=False)
    assert interactive.returncode == 3, interactive.stderr
    assert interactive.stdout.split() == ["got-hello", "rest"]


# ---- images and commands that cannot run ----


def test_missing_image_err_image_pull_then_back_off(workload: NodesCluster) -> None:
    c = workload
    reasons: list[str] = []

    def backed_off() -> dict[str, Any] | None:
        waiting = main_status(c.pod("nope")).get("state", {}).get("waiting") or {}
        if waiting.get("reason") and (not reasons or reasons[-1] != waiting["reason"]):
            reasons.append(waiting["reason"])
        return waiting if waiting.get("reason") == "ImagePullBackOff" else None

    waiting = c.wait_for("ImagePullBackOff", backed_off, timeout=60, interval=0.2)
    assert "demo/nope:404" in waiting["message"]
    assert "manifest unknown" in waiting["message"].lower()  # the registry's own words
    events = c.get("events", "", "--field-selector", "involvedObject.name=nope")["items"]
    failed = [e["message"] for e in events if e["reason"] == "Failed"]
    assert any("ErrImagePull" in m or "manifest unknown" in m.lower() for m in failed), failed
    assert c.pod("nope")["status"]["phase"] == "Pending"


def test_unrunnable_command_terminates_with_runc_error(workload: NodesCluster) -> None:
    c = workload

    def terminated() -> dict[str, Any] | None:
        return main_status(c.pod("bad")).get("state", {}).get("terminated")

    t = c.wait_for("the bad pod's container terminated", terminated, timeout=60)
    assert t["exitCode"] != 0
    assert "no-such-binary" in t["message"] and "executable file not found" in t["message"], t
    assert c.pod("bad")["status"]["phase"] == "Failed"


# ---- deletion ----


def _sandbox_of(c: NodesCluster, node: str, pod_uid: str) -> dict[str, Any]:
    for path in c.data_dir.glob(f"nodes/{node}/runtime/sandboxes/*/sandbox.json"):
        rec = json.loads(path.read_text())
        if rec["metadata"].get("uid") == pod_uid and rec.get("state") == "SANDBOX_READY":
            return dict(rec)
    raise AssertionError(f"no ready sandbox for pod uid {pod_uid} on {node}")


def _in_node(c: NodesCluster, node: str, *argv: str) -> str:
    netns = c.nodes[node]["netns"]
    return subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "--", *argv], capture_output=True, text=True,
                          check=True, timeout=30).stdout


def test_delete_pod_stops_within_grace_and_leaves_nothing(workload: NodesCluster) -> None:
    c = workload
    grace = 30
    c.apply(pod("doomed", "node2", command=["sh", "-c", "trap 'echo TERM; exit 0' TERM; "
                                                        "while true; do sleep 0.2; done"],
                grace=grace, ports=[{"containerPort": 8080, "hostPort": 18080}]))
    p = running(c, "doomed")
    st = main_status(p)
    container_id = st["containerID"].removeprefix("minikube-py://")
    sb = _sandbox_of(c, "node2", p["metadata"]["uid"])
    veths = [i["name"] for i in (sb.get("cni_result") or {}).get("interfaces", []) if not i.get("sandbox")
             and i["name"].startswith("veth")]
    node_dir = Path(c.nodes["node2"]["dir"])
    runc_root = node_dir / "run" / "runc"
    rootfs = node_dir / "runtime" / "containers" / container_id / "rootfs"
    # Everything is there before the delete, or the checks after it would prove nothing.
    assert Path(sb["netns"]).exists()
    assert veths and all(v in _in_node(c, "node2", "ip", "-o", "link") for v in veths)
    assert sb["id"] in _in_node(c, "node2", "iptables-save", "-t", "nat")  # portmap's hostPort rules
    assert container_id in subprocess.run(["runc", "--root", str(runc_root), "list", "-q"], capture_output=True,
                                          text=True).stdout
    assert rootfs.is_mount()

    started = time.monotonic()
    c.kubectl("delete", "pod", "doomed", "--wait=true", timeout=grace + 60)
    took = time.monotonic() - started
    # The container exits on SIGTERM: a kubelet that only killed at the end of the grace period would take 30 s.
    assert took < grace, f"pod deletion took {took:.1f}s (grace period {grace}s)"
    c.wait_for("doomed's sandbox netns gone", lambda: not Path(sb["netns"]).exists(), timeout=30)
    assert not any(v in _in_node(c, "node2", "ip", "-o", "link") for v in veths)
    nat = _in_node(c, "node2", "iptables-save", "-t", "nat")
    assert sb["id"] not in nat and "18080" not in nat
    assert container_id not in subprocess.run(["runc", "--root", str(runc_root), "list", "-q"],
                                              capture_output=True, text=True).stdout
    assert not rootfs.exists() or not rootfs.is_mount()
    assert not any(container_id in line for line in Path("/proc/self/mountinfo").read_text().splitlines())
    assert not (node_dir / "runtime" / "sandboxes" / sb["id"]).exists()
