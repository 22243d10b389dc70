"""Killing the leading scheduler or controller-manager process hands its Lease to a standby process,
which carries on the work.

This runs on a cluster of its own (an API server process, fake nodes, and two schedulers and two
controller-managers started here with short lease flags) rather than on the ``up`` cluster: ``up``
treats a child that dies as fatal and stops the whole cluster, so killing its leader would leave no
API server for the standby to take over on."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from minikube_py.client import APIClient
from tests.apiserver.conftest import LocalAPIServer, running_apiserver
from tests.integration.conftest import REPO, condition, eventually, pid_alive

LEASE_DURATION = 3.0
LEASE_FLAGS = ("--leader-elect-lease-duration", "3", "--leader-elect-renew-deadline", "2",
               "--leader-elect-retry-period", "0.5")


class Processes:
    def __init__(self, server: LocalAPIServer, log_dir: Path) -> None:
        self.server, self.log_dir = server, log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "minikube_py", *args,
                                     "--kubeconfig", str(self.server.kubeconfig)],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def logs(self) -> str:
        return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-3000:]}"
                         for f in sorted(self.log_dir.glob("*.log")))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Processes]:
    logs = tmp_path / "logs"
    logs.mkdir()
    with running_apiserver(tmp_path / "data") as server:
        procs = Processes(server, logs)
        try:
            procs.start("fake-nodes", "fake-nodes", "--count", "1", "--prefix", "le-node-", "--heartbeat", "1s")
            yield procs
        finally:
            procs.stop_all()


@pytest.fixture
async def api(cluster: Processes) -> AsyncIterator[APIClient]:
    async with APIClient.from_kubeconfig(cluster.server.kubeconfig) as client:
        yield client


async def holder(api: APIClient, lease: str) -> tuple[str, int]:
    got = await api.get_or_none("leases.coordination.k8s.io", lease, "kube-system")
    spec = (got or {}).get("spec") or {}
    return str(spec.get("holderIdentity") or ""), int(spec.get("leaseTransitions") or 0)


async def check_handoff(api: APIClient, cluster: Processes, component: str, lease: str,
                        port_flag: tuple[str, ...]) -> str:
    """Start a leader, then a standby; kill the leader; the standby takes the lease. Returns its identity."""
    leader = cluster.start(f"{component}-a", component, *port_flag, *LEASE_FLAGS)

    async def led() -> str:
        return (await holder(api, lease))[0]

    first = await eventually(led, f"the first {component} to take the lease", timeout=30)
    standby = cluster.start(f"{component}-b", component, *port_flag, *LEASE_FLAGS)
    await asyncio.sleep(LEASE_DURATION)  # the standby is running and polling: it must not steal the lease
    assert (await holder(api, lease))[0] == first, "the standby took a lease that was being renewed"
    assert standby.poll() is None, cluster.logs()
    transitions = (await holder(api, lease))[1]

    leader.send_signal(signal.SIGKILL)
    leader.wait(10)

    async def taken_over() -> str | None:
        who, n = await holder(api, lease)
        return who if who and who != first and n > transitions else None

    # Within the lease duration after the last renewal, plus the standby's retry period and slack for
    # a busy machine.
    new = await eventually(taken_over, f"the standby {component} to take the lease", timeout=LEASE_DURATION * 5)
    assert pid_alive(standby.pid)
    return new


async def test_standbys_take_over_from_killed_leaders(api: APIClient, cluster: Processes) -> None:
    # Both components at once: their leases are independent, and the test takes half the time.
    await asyncio.gather(
        check_handoff(api, cluster, "scheduler", "kube-scheduler", ("--secure-port", "0")),
        check_handoff(api, cluster, "controller-manager", "kube-controller-manager", ("--secure-port", "0")))

    # Work continues. The new controller-manager's node IPAM gives a node registered now a pod CIDR...
    await api.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "late-node"}})

    async def has_cidr() -> str | None:
        return ((await api.get("nodes", "late-node")).get("spec") or {}).get("podCIDR")

    await eventually(has_cidr, "the new node to get a pod CIDR from the new controller-manager", timeout=30)

    # ... and the new scheduler binds a new pod (to the fake node, the only Ready one), which runs.
    await api.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "after"},
                              "spec": {"containers": [{"name": "c", "image": "demo/web:v1"}]}}, "default")

    async def running() -> bool:
        pod = await api.get("pods", "after", "default")
        return pod["spec"].get("nodeName") == "le-node-0" and condition(pod, "Ready") == "True"

    await eventually(running, "the pod to be scheduled by the new scheduler", timeout=30)
