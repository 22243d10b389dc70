"""``minikube-py up --local`` itself: what it starts, how it stops, what it does when a child dies, and
that an idle cluster does not burn CPU."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from minikube_py.client import APIClient
from tests.integration.conftest import UpCluster, condition, eventually, pid_alive, start_up, stop_up

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of /proc/<pid>/stat; the split above starts at field 3.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def test_up_runs_the_control_plane_and_fake_nodes(local_cluster: UpCluster, api: APIClient) -> None:
    pids = local_cluster.pids()
    assert set(pids) == {"apiserver", "scheduler", "controller-manager", "fake-nodes"}
    assert all(pid_alive(p) for p in pids.values())
    for name in pids:
        assert (local_cluster.data_dir / "logs" / f"{name}.log").exists()
    out = local_cluster.out_path.read_text()
    assert str(local_cluster.kubeconfig) in out and "kubectl --kubeconfig" in out

    async def nodes_ready() -> list[dict] | None:
        nodes, _ = await api.list_all("nodes", label_selector="type=fake")
        ok = len(nodes) == 3 and all(condition(n, "Ready") == "True" and n["spec"].get("podCIDR") for n in nodes)
        return nodes if ok else None

    nodes = await eventually(nodes_ready, "3 Ready fake nodes with pod CIDRs", timeout=30)
    assert len({n["spec"]["podCIDR"] for n in nodes}) == 3
    for lease in ("kube-scheduler", "kube-controller-manager"):
        got = await api.get("leases.coordination.k8s.io", lease, "kube-system")
        assert got["spec"]["holderIdentity"]


def test_an_idle_cluster_does_not_busy_loop(local_cluster: UpCluster) -> None:
    pids = local_cluster.pids()
    time.sleep(1)  # let the previous test's work settle
    before = {n: cpu_seconds(p) for n, p in pids.items()}
    time.sleep(10)
    used = {n: cpu_seconds(p) - before[n] for n, p in pids.items()}
    # Idle work is heartbeats (a lease every 0.75 s per node with the 3 s grace period) and their
    # watch events: a few hundredths of a CPU-second per second. A busy loop costs a whole one.
    assert sum(used.values()) < 3.0, f"CPU-seconds over 10 s of idling: {used}"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_every_child(tmp_path: Path, sig: int) -> None:
    cluster = start_up(tmp_path / "c", fake_nodes=1)
    pids = cluster.pids()
    code = stop_up(cluster, sig)
    assert code == 0, cluster.err_path.read_text()
    assert not any(pid_alive(p) for p in pids.values()), "children left running"
    assert not (cluster.data_dir / "cluster.json").exists()
    assert "stopped" in cluster.out_path.read_text()


def test_a_child_that_dies_stops_the_cluster_and_is_named(tmp_path: Path) -> None:
    cluster = start_up(tmp_path / "c", fake_nodes=0)
    try:
        pids = cluster.pids()
        os.kill(pids["scheduler"], signal.SIGKILL)
        code = cluster.proc.wait(40)
        err = cluster.err_path.read_text()
        assert code != 0
        assert "scheduler" in err and str(pids["scheduler"]) in err and "exited unexpectedly" in err
        assert not any(pid_alive(p) for p in pids.values()), "children left running"
    finally:
        stop_up(cluster)


def test_up_refuses_bad_input(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.integration.conftest import REPO

    res = subprocess.run([sys.executable, "-m", "minikube_py", "up", "--local", "--data-dir", str(tmp_path),
                          "--port", "70000"], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert res.returncode == 2 and "70000" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-m", "minikube_py", "up", "--local", "--data-dir", str(tmp_path),
                          "--node-monitor-grace-period", "soon"], capture_output=True, text=True, cwd=REPO,
                         timeout=30)
    assert res.returncode == 2 and "invalid duration" in res.stderr
