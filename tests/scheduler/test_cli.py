"""``minikube-py scheduler`` as a process: leader election, health and metrics, a clean SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from .conftest import REPO, Cluster
from .objects import node, pod


@pytest.fixture
def scheduler_process(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    # The in-process scheduler of the fixture would compete for the same pods: stop it first.
    cluster.scheduler.queue.close()
    log = open(tmp_path / "scheduler.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "minikube_py", "scheduler", "--kubeconfig", str(cluster.server.kubeconfig),
         "--secure-port", "0", "--scheduler-name", "cli-scheduler", "--leader-elect-lease-duration", "4",
         "--leader-elect-renew-deadline", "3", "--leader-elect-retry-period", "0.5"],
        stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"serving health and metrics on port (\d+)", line)
        assert match, f"unexpected first line {line!r}; log: {(tmp_path / 'scheduler.log').read_text()}"
        yield proc, int(match.group(1))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


async def test_leader_elected_scheduler_binds_serves_health_and_stops_on_sigterm(
        cluster: Cluster, scheduler_process: tuple[subprocess.Popen[str], int]) -> None:
    proc, port = scheduler_process
    await cluster.add_node(node("cli-node"))
    await cluster.add_pod(pod("cli-pod", schedulerName="cli-scheduler"))
    assert (await cluster.bound("cli-pod"))["cli-pod"] == "cli-node"
    lease = await cluster.client.get("leases", "kube-scheduler", "kube-system")
    assert lease["spec"]["holderIdentity"]
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE  # kube-scheduler's self-signed serving certificate
    async with aiohttp.ClientSession() as http:
        async with http.get(f"https://127.0.0.1:{port}/healthz", ssl=insecure) as resp:
            assert resp.status == 200 and await resp.text() == "ok"
        async with http.get(f"https://127.0.0.1:{port}/metrics", ssl=insecure) as resp:
            assert resp.status == 401  # /metrics needs credentials the API server accepts
        async with http.get(f"https://127.0.0.1:{port}/metrics", ssl=insecure,
                            headers=cluster.server.headers()) as resp:
            text = await resp.text()
    attempts = r'scheduler_schedule_attempts_total\{result="scheduled",profile="cli-scheduler"\} 1'
    assert re.search(attempts, text)
    assert "scheduler_pending_pods" in text and "scheduler_e2e_scheduling_duration_seconds_bucket" in text
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 20) == 0


def test_bad_flags_are_one_line_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.conf"
    res = subprocess.run([sys.executable, "-m", "minikube_py", "scheduler", "--kubeconfig", str(missing)],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip() == f"minikube-py scheduler: --kubeconfig {missing}: no such file"
    res = subprocess.run([sys.executable, "-m", "minikube_py", "scheduler", "--kubeconfig", "x",
                          "--leader-elect=maybe"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode == 2 and "expected true or false" in res.stderr
