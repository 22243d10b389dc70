"""Pod start-up latency on real nodes: create -> Running as a watch sees it, beside a bare ``runc run``.

    sudo .venv/bin/python bench/pod_startup.py [--pods 100] [--rate 2] [--quick] [--data-dir DIR] [--json]

In one run:

1. ``minikube-py up --local --nodes 2`` starts as a subprocess (root: network namespaces, runc,
   iptables) in a temporary data dir (or ``--data-dir``);
2. warm-up: one demo/busybox pod per node, so the image is present on both (the measurement is of
   start-up, not of pulls), then deleted;
3. ``--pods`` pods (demo/busybox ``sleep 3600``, placed by the scheduler) are created at ``--rate`` per
   second while a watch records when each is first seen Running with its container running; latency is
   from just before the create request to that event;
4. the floor: the same image run directly ``--pods`` times, each time an overlay rootfs over the image's
   layers plus ``runc run -d`` (what any runtime has to do at the least), timed to runc's return.

It prints p50/p99/max of both, the ratio pod/floor, where the pods ran, and whether the goal (pod p99
<= 1 s) was met. ``--quick`` is 10 pods. The full run takes about two minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _util import fmt, percentile, positive_float, print_table, ratio

from minikube_py.client import APIClient

REPO = Path(__file__).resolve().parent.parent
IMAGE = "demo/busybox"
NAMESPACE = "bench"
GOAL_P99 = 1.0


def pod(name: str, node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"terminationGracePeriodSeconds": 0, "containers": [
        {"name": "main", "image": IMAGE, "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"bench": "startup"}},
            "spec": spec}


def is_running(p: dict[str, Any]) -> bool:
    status = p.get("status") or {}
    containers = status.get("containerStatuses") or []
    return status.get("phase") == "Running" and bool(containers) and all(
        "running" in (c.get("state") or {}) for c in containers)


# ---- the cluster ------------------------------------------------------------------------------------

def start_cluster(data_dir: Path, timeout: float = 240.0) -> subprocess.Popen[bytes]:
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    out = data_dir.parent / f"{data_dir.name}-up.out"
    with out.open("wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "minikube_py", "up", "--local", "--data-dir", str(data_dir),
                                 "--port", "0", "--nodes", "2"], stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=REPO)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = out.read_text(errors="replace")
        if "Stop with Ctrl-C." in text:
            return proc
        if proc.poll() is not None:
            raise SystemExit(f"minikube-py up failed:\n{text[-3000:]}")
        time.sleep(0.2)
    stop_cluster(proc)
    raise SystemExit(f"minikube-py up did not start within {timeout:g}s; see {out}")


def stop_cluster(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_running(client: APIClient, names: set[str], timeout: float,
                       bound: dict[str, float] | None = None) -> dict[str, float]:
    """Watch the bench pods until every one of ``names`` is Running; returns name -> monotonic time seen.
    ``bound`` collects when each was first seen with a node (the scheduler's part)."""
    seen: dict[str, float] = {}
    bound = {} if bound is None else bound
    listing = await client.list("pods", NAMESPACE, label_selector="bench=startup")
    for p in listing["items"]:
        if p["metadata"]["name"] in names and is_running(p):
            seen[p["metadata"]["name"]] = time.monotonic()

    async def follow() -> None:
        rv = listing["metadata"]["resourceVersion"]
        async for kind, obj in client.watch("pods", NAMESPACE, resource_version=rv, label_selector="bench=startup"):
            if kind == "BOOKMARK":
                continue
            name = obj["metadata"]["name"]
            if name in names and name not in bound and obj["spec"].get("nodeName"):
                bound[name] = time.monotonic()
            if kind in ("ADDED", "MODIFIED") and name in names and name not in seen and is_running(obj):
                seen[name] = time.monotonic()
                if len(seen) == len(names):
                    return

    if len(seen) < len(names):
        await asyncio.wait_for(follow(), timeout)
    return seen


async def measure_pods(kubeconfig: Path, count: int, rate: float
                       ) -> tuple[list[float], list[float], Counter[str]]:
    """(create -> Running, create -> bound to a node, pods per node)."""
    async with APIClient.from_kubeconfig(kubeconfig, user_agent="bench-pod-startup") as client:
        await client.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        # Warm-up: the image pulled on both nodes, every component's first-request costs paid.
        warm = {"warm-node1", "warm-node2"}
        for name in sorted(warm):
            await client.create("pods", pod(name, name.removeprefix("warm-")), NAMESPACE)
        await wait_running(client, warm, 120)
        for name in warm:
            await client.delete("pods", name, NAMESPACE, grace_period_seconds=0)

        names = [f"p{i:04d}" for i in range(count)]
        created: dict[str, float] = {}
        bound: dict[str, float] = {}
        watcher = asyncio.create_task(wait_running(client, set(names), 120 + 3 * count / rate, bound))
        await asyncio.sleep(0.5)  # the watch is established before the first create
        start = time.monotonic()
        for i, name in enumerate(names):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            created[name] = time.monotonic()
            await client.create("pods", pod(name), NAMESPACE)
        seen = await watcher
        latencies = [seen[n] - created[n] for n in names]
        scheduled = [bound.get(n, seen[n]) - created[n] for n in names]
        listing = await client.list("pods", NAMESPACE, label_selector="bench=startup")
        placement = Counter(p["spec"].get("nodeName", "?") for p in listing["items"])
        return latencies, scheduled, placement


# ---- the floor: bare runc ---------------------------------------------------------------------------

def bundle_config(tmpl: dict[str, Any]) -> dict[str, Any]:
    cfg = dict(tmpl)
    cfg["process"] = {**cfg["process"], "terminal": False, "args": ["sleep", "3600"]}
    cfg["root"] = {"path": "rootfs", "readonly": False}
    return cfg


def measure_runc(data_dir: Path, count: int) -> list[float]:
    from minikube_py.runtime.containers import mount_overlay, unmount
    from minikube_py.runtime.images import ImageStore

    state = json.loads((data_dir / "cluster.json").read_text())
    node_dir = Path(state["nodes"]["nodes"]["node1"]["dir"])
    store = ImageStore(node_dir / "runtime" / "images", default_registry=state["nodes"]["registry"])
    info = store.get(IMAGE)
    if info is None:
        raise SystemExit(f"{IMAGE} is not in node1's image store after the warm-up")
    layers = [str(d) for d in store.layer_dirs(info)]
    work = Path(tempfile.mkdtemp(prefix="runc-floor-", dir=data_dir))
    root = work / "runc-root"
    spec_dir = work / "spec"
    spec_dir.mkdir()
    subprocess.run(["runc", "spec"], cwd=spec_dir, check=True)
    config = bundle_config(json.loads((spec_dir / "config.json").read_text()))
    latencies: list[float] = []
    try:
        for i in range(count):
            bundle = work / f"c{i}"
            bundle.mkdir()
            (bundle / "config.json").write_text(json.dumps(config))
            cid = f"bench-floor-{os.getpid()}-{i}"
            # The detached container inherits runc's stdio: a pipe would never see EOF, so a file it is.
            with (bundle / "runc.err").open("wb") as err:
                t0 = time.monotonic()
                mount_overlay(layers, bundle / "upper", bundle / "work", bundle / "rootfs")
                rc = subprocess.run(["runc", "--root", str(root), "run", "-d", "--bundle", str(bundle), cid],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err).returncode
                latencies.append(time.monotonic() - t0)
            if rc != 0:
                raise SystemExit(f"runc run failed: {(bundle / 'runc.err').read_text()[-2000:]}")
            subprocess.run(["runc", "--root", str(root), "delete", "--force", cid], check=False,
                           capture_output=True)
            unmount(bundle / "rootfs")
    finally:
        listing = subprocess.run(["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True)
        for cid in listing.stdout.split():
            subprocess.run(["runc", "--root", str(root), "delete", "--force", cid], capture_output=True)
        for rootfs in work.glob("c*/rootfs"):
            unmount(rootfs)
        shutil.rmtree(work, ignore_errors=True)
    return latencies


# ---- main -------------------------------------------------------------------------------------------

def summary(samples: list[float]) -> dict[str, float]:
    return {"p50": percentile(samples, 50), "p99": percentile(samples, 99), "max": max(samples),
            "mean": sum(samples) / len(samples)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=100, help="pods to start (100)")
    ap.add_argument("--rate", type=positive_float, default=2.0, help="pod creates per second (2)")
    ap.add_argument("--quick", action="store_true", help="10 pods")
    ap.add_argument("--data-dir", type=Path, default=None, help="cluster data dir (default: a temporary one)")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/pod_startup.py needs root (network namespaces, runc, iptables)", file=sys.stderr)
        return 2
    count = 10 if args.quick else args.pods
    if count < 1:
        ap.error("--pods must be at least 1")
    tmp = None if args.data_dir else tempfile.mkdtemp(prefix="mkpy-bench-")
    data_dir = (args.data_dir or Path(tmp) / "d").resolve()  # type: ignore[arg-type]
    proc = start_cluster(data_dir)
    try:
        latencies, scheduled, placement = asyncio.run(measure_pods(data_dir / "admin.kubeconfig", count, args.rate))
        floor = measure_runc(data_dir, count)
    finally:
        stop_cluster(proc)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    pods, bare, sched = summary(latencies), summary(floor), summary(scheduled)
    rows = [["pod create -> Running (watch)", *(fmt(pods[k] * 1000) for k in ("p50", "p99", "max", "mean"))],
            ["  of which create -> bound", *(fmt(sched[k] * 1000) for k in ("p50", "p99", "max", "mean"))],
            ["bare overlay + runc run -d", *(fmt(bare[k] * 1000) for k in ("p50", "p99", "max", "mean"))],
            ["ratio pod / runc", *(ratio(pods[k], bare[k]) for k in ("p50", "p99", "max", "mean"))]]
    print_table(f"Pod start-up, {count} pods at {args.rate:g}/s on 2 nodes (ms)",
                ["", "p50", "p99", "max", "mean"], rows)
    print(f"placement: {dict(sorted(placement.items()))}")
    verdict = "met" if pods["p99"] <= GOAL_P99 else "MISSED"
    print(f"goal pod p99 <= {GOAL_P99:g} s: {verdict} (p99 {pods['p99']:.3f} s)")
    if args.json:
        print(json.dumps({"pods": count, "rate": args.rate, "pod": pods, "bound": sched, "runc": bare,
                          "placement": dict(placement)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
