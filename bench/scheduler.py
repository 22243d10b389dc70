"""Scheduler benchmark: how fast pending pods get bound, next to what the API server can write.

    .venv/bin/python bench/scheduler.py [--nodes 500] [--pods 5000] [--concurrency 32] [--quick] [--json]

In one run, against a real ``minikube-py apiserver --local`` subprocess (HTTPS, bearer token):

1. ``--nodes`` Ready nodes are created directly (POST, then PUT status with allocatable and the
   Ready condition), as fake nodes would register;
2. the write ceiling at ``--concurrency`` (the scheduler's own limit of bindings in flight):
   ``--pods`` ConfigMap creates (the lightest write), as many pod creates (the pods to schedule,
   2 KiB of JSON each, made while no scheduler runs), then one status PATCH per pod (a binding is
   such a read-modify-write of a pod, so this is the ceiling the ratio is taken against);
3. a real ``minikube-py scheduler`` subprocess starts (no leader election); a watch on the pods
   records when each one is seen bound. Throughput is bound pods per second from the first binding
   to the last (the steady rate; the scheduler's start-up list is printed apart).

It prints both rates and the ratio scheduling/ceiling against the goals (>= 500 pods/s and
>= 0.5 of the ceiling), the CPU each process used, and how evenly the pods spread over the nodes.
``--quick`` (50 nodes, 300 pods) is a smoke test. The full run takes about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _util import fmt, pod_manifest, print_table, process_cpu, run_load, server_process

from minikube_py.client import APIClient

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = "bench"
GOAL_PODS_PER_SECOND = 500.0
GOAL_RATIO = 0.5


@dataclass
class Report:
    nodes: int
    pods: int
    concurrency: int
    configmap_writes_per_s: float = 0.0
    pod_creates_per_s: float = 0.0
    pod_status_patches_per_s: float = 0.0
    scheduled_per_s: float = 0.0
    scheduled_incl_startup_per_s: float = 0.0
    startup_s: float = 0.0
    ratio: float = 0.0                  # scheduled / pod status patches (the write a binding is)
    ratio_configmaps: float = 0.0       # scheduled / ConfigMap creates (the lightest write)
    apiserver_cpu_share: float | None = None
    scheduler_cpu_share: float | None = None
    # CPU per scheduled pod: unlike the rates, independent of what else the (shared) machine runs.
    apiserver_cpu_ms_per_pod: float | None = None
    scheduler_cpu_ms_per_pod: float | None = None
    pods_per_node_min: int = 0
    pods_per_node_max: int = 0


def node_manifest(name: str) -> dict:
    resources = {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                              "kubernetes.io/arch": "amd64"}},
        "status": {"capacity": resources, "allocatable": resources,
                   "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                   "message": "kubelet is posting ready status"}]},
    }


async def make_nodes(client: APIClient, count: int, concurrency: int) -> None:
    async def one(w: int, i: int) -> None:
        name = f"node-{w:02d}-{i:04d}"
        manifest = node_manifest(name)
        created = await client.create("nodes", manifest)
        created["status"] = manifest["status"]  # a POST does not keep status: set it as the kubelet does
        await client.update_status("nodes", created)

    result = await run_load(one, concurrency=concurrency, seconds=600, max_ops=count)
    if result.ops != count:
        raise RuntimeError(f"created {result.ops} nodes, wanted {count}")


async def watch_bound(client: APIClient, rv: str, total: int, times: list[float], nodes: Counter[str],
                      ready: asyncio.Event) -> None:
    """Record when each pod is first seen with spec.nodeName, until all ``total`` are."""
    seen: set[str] = set()
    while len(seen) < total:
        ready.set()
        async for kind, obj in client.watch("pods", NAMESPACE, resource_version=rv, timeout_seconds=600):
            rv = obj.get("metadata", {}).get("resourceVersion") or rv
            if kind not in ("ADDED", "MODIFIED"):
                continue
            node = (obj.get("spec") or {}).get("nodeName")
            name = obj["metadata"]["name"]
            if node and name not in seen:
                seen.add(name)
                times.append(time.perf_counter())
                nodes[node] += 1
                if len(seen) >= total:
                    return


async def run(args: argparse.Namespace) -> Report:
    report = Report(args.nodes, args.pods, args.concurrency)
    with tempfile.TemporaryDirectory(prefix="bench-scheduler-") as tmp:
        data = Path(tmp) / "apiserver"
        # No controller-manager makes `default` ServiceAccounts here: pods skip that admission.
        cmd = [sys.executable, "-m", "minikube_py", "apiserver", "--local", "--data-dir", str(data),
               "--port", "0", "--disable-admission-plugins", "ServiceAccount"]
        with server_process(cmd, r"serving on port (\d+)", cwd=str(REPO),
                            log_path=str(Path(tmp) / "apiserver.log")) as (api_proc, _):
            client = APIClient.from_kubeconfig(data / "admin.kubeconfig")
            try:
                await client.create("namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": NAMESPACE}})
                t0 = time.perf_counter()
                await make_nodes(client, args.nodes, args.concurrency)
                print(f"  {args.nodes} nodes registered in {time.perf_counter() - t0:.1f} s", flush=True)

                # The ceiling: plain writes at the scheduler's concurrency.
                def configmap(w: int, i: int) -> dict:
                    return {"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": f"cm-{w:02d}-{i:05d}", "namespace": NAMESPACE},
                            "data": {"key": "value"}}

                writes = await run_load(lambda w, i: client.create("configmaps", configmap(w, i), NAMESPACE),
                                        concurrency=args.concurrency, seconds=600, max_ops=args.pods,
                                        server_pid=api_proc.pid)
                report.configmap_writes_per_s = writes.per_second

                def pending_pod(w: int, i: int) -> dict:
                    return pod_manifest(f"web-{w:02d}-{i:05d}", NAMESPACE)

                creates = await run_load(lambda w, i: client.create("pods", pending_pod(w, i), NAMESPACE),
                                         concurrency=args.concurrency, seconds=600, max_ops=args.pods,
                                         server_pid=api_proc.pid)
                report.pod_creates_per_s = creates.per_second

                # A binding is a read-modify-write of a pod: the closest plain write is a pod status patch.
                made, _ = await client.list_all("pods", NAMESPACE)
                names = iter([p["metadata"]["name"] for p in made])
                body = {"status": {"conditions": [{"type": "example.com/BenchCeiling", "status": "True"}]}}

                def status_patch(w: int, i: int) -> Any:
                    return client.patch("pods", next(names), body, NAMESPACE, patch_type="strategic",
                                        subresource="status")

                patches = await run_load(status_patch, concurrency=args.concurrency, seconds=600,
                                         max_ops=args.pods, server_pid=api_proc.pid)
                report.pod_status_patches_per_s = patches.per_second
                listed = await client.list("pods", NAMESPACE, limit=1)
                rv = listed["metadata"]["resourceVersion"]

                times: list[float] = []
                spread: Counter[str] = Counter()
                ready = asyncio.Event()
                watcher = asyncio.create_task(watch_bound(client, rv, args.pods, times, spread, ready))
                await ready.wait()
                sched_cmd = [sys.executable, "-m", "minikube_py", "scheduler", "--kubeconfig",
                             str(data / "admin.kubeconfig"), "--leader-elect=false", "--secure-port", "0"]
                if args.profile:
                    # cProfile writes its stats when the scheduler exits cleanly on SIGTERM.
                    sched_cmd = [sys.executable, "-m", "cProfile", "-o", str(args.profile), *sched_cmd[1:]]
                started = time.perf_counter()
                with server_process(sched_cmd, r"serving health and metrics on port (\d+)", cwd=str(REPO),
                                    log_path=str(Path(tmp) / "scheduler.log")) as (sched_proc, _):
                    api_cpu0, sched_cpu0 = process_cpu(api_proc.pid), process_cpu(sched_proc.pid)
                    try:
                        await asyncio.wait_for(watcher, timeout=max(120.0, args.pods / 20))
                    except TimeoutError:
                        raise RuntimeError(f"only {len(times)} of {args.pods} pods were bound in time; "
                                           f"see {tmp}/scheduler.log") from None
                    api_cpu1, sched_cpu1 = process_cpu(api_proc.pid), process_cpu(sched_proc.pid)
                first, last = times[0], times[-1]
                window = max(last - first, 1e-9)
                report.scheduled_per_s = (len(times) - 1) / window
                report.scheduled_incl_startup_per_s = len(times) / (last - started)
                report.startup_s = first - started
                report.ratio = report.scheduled_per_s / report.pod_status_patches_per_s
                report.ratio_configmaps = report.scheduled_per_s / report.configmap_writes_per_s
                whole = last - started
                if api_cpu0 is not None and api_cpu1 is not None:
                    report.apiserver_cpu_share = (api_cpu1 - api_cpu0) / whole
                    report.apiserver_cpu_ms_per_pod = (api_cpu1 - api_cpu0) * 1000 / len(times)
                if sched_cpu0 is not None and sched_cpu1 is not None:
                    report.scheduler_cpu_share = (sched_cpu1 - sched_cpu0) / whole
                    report.scheduler_cpu_ms_per_pod = (sched_cpu1 - sched_cpu0) * 1000 / len(times)
                counts = list(spread.values()) + [0] * (args.nodes - len(spread))
                report.pods_per_node_min, report.pods_per_node_max = min(counts), max(counts)
            finally:
                await client.close()
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=500)
    p.add_argument("--pods", type=int, default=5000)
    p.add_argument("--concurrency", type=int, default=32, help="client concurrency for the ceiling (32 = "
                   "the scheduler's bindings in flight)")
    p.add_argument("--quick", action="store_true", help="smoke test: 50 nodes, 300 pods")
    p.add_argument("--json", action="store_true", help="print the report as JSON too")
    p.add_argument("--profile", type=Path, metavar="FILE",
                   help="profile the scheduler with cProfile into FILE (pstats)")
    args = p.parse_args(argv)
    if args.quick:
        args.nodes, args.pods = 50, 300
    if args.nodes < 1 or args.pods < 2 or args.concurrency < 1:
        p.error("--nodes >= 1, --pods >= 2 and --concurrency >= 1")
    print(f"scheduler benchmark: {args.nodes} nodes, {args.pods} pods, concurrency {args.concurrency}")
    r = asyncio.run(run(args))
    print_table("", ["measure", "value"], [
        ["API write ceiling: ConfigMap creates/s", fmt(r.configmap_writes_per_s)],
        ["API write ceiling: pod status PATCHes/s", fmt(r.pod_status_patches_per_s)],
        ["pod creates/s (the pods to schedule)", fmt(r.pod_creates_per_s)],
        ["scheduled pods/s (first to last binding)", fmt(r.scheduled_per_s)],
        ["scheduled pods/s incl. scheduler start-up", fmt(r.scheduled_incl_startup_per_s)],
        ["scheduler start-up until first binding (s)", fmt(r.startup_s, 2)],
        ["ratio scheduled / pod status PATCHes", f"{r.ratio:.2f}"],
        ["ratio scheduled / ConfigMap creates", f"{r.ratio_configmaps:.2f}"],
        ["apiserver CPU (cores) while scheduling", fmt(r.apiserver_cpu_share, 2)],
        ["scheduler CPU (cores) while scheduling", fmt(r.scheduler_cpu_share, 2)],
        ["apiserver CPU ms per scheduled pod", fmt(r.apiserver_cpu_ms_per_pod, 2)],
        ["scheduler CPU ms per scheduled pod (incl. start-up)", fmt(r.scheduler_cpu_ms_per_pod, 2)],
        ["pods per node (min / max)", f"{r.pods_per_node_min} / {r.pods_per_node_max}"],
    ])
    ok_rate = r.scheduled_per_s >= GOAL_PODS_PER_SECOND
    ok_ratio = r.ratio >= GOAL_RATIO
    print(f"goal >= {GOAL_PODS_PER_SECOND:.0f} pods/s: {'met' if ok_rate else 'NOT met'}; "
          f"goal ratio >= {GOAL_RATIO}: {'met' if ok_ratio else 'NOT met'}")
    if args.json:
        print(json.dumps(asdict(r), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
