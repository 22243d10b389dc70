"""Controllers benchmark: how long a big Deployment takes to be fully available on fake nodes, next to
what the API server alone needs for the same pods.

    .venv/bin/python bench/controllers.py [--replicas 1000] [--nodes 20] [--concurrency 16] [--quick] [--json]

In one run, on a whole local cluster (``minikube-py up --local --fake-nodes N`` as a subprocess: API
server, scheduler, controller-manager and fake nodes, each its own process):

1. references, at ``--concurrency`` client requests in flight:
   a. ``--replicas`` pod creates straight through the API (pods no scheduler picks up: they name a
      scheduler that does not exist) — the time the spec suggests comparing against;
   b. the pipeline floor: per pod the three writes a Deployment's pod needs at the least — create,
      binding, status to Running — done by this client with no controller in between (bound to a
      node no fake kubelet serves, so nobody else touches them);
2. a Deployment of ``--replicas`` pods is created; a watch on its pods records when each is first
   seen created, bound and Ready, and a watch on the Deployment when ``availableReplicas`` reaches
   the replica count. That time is the measure.

It prints the phases, the ratios (Deployment time / reference time; 1.0 would mean the controllers
add nothing over a client that writes the same pods), and the CPU each control-plane process used.
``--quick`` (5 nodes, 100 replicas) is a smoke test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _util import fmt, print_table, process_cpu, run_load, server_process

from minikube_py.client import APIClient

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = "bench"
REFERENCE_NAMESPACE = "bench-reference"


@dataclass
class Report:
    replicas: int
    nodes: int
    concurrency: int
    reference_creates_s: float = 0.0
    reference_pipeline_s: float = 0.0
    all_created_s: float = 0.0
    all_bound_s: float = 0.0
    all_ready_s: float = 0.0
    available_s: float = 0.0
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ratio_creates(self) -> float:
        return self.available_s / self.reference_creates_s if self.reference_creates_s else float("nan")

    @property
    def ratio_pipeline(self) -> float:
        return self.available_s / self.reference_pipeline_s if self.reference_pipeline_s else float("nan")


def pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "reference"}},
            "spec": {"containers": [{"name": "web", "image": "demo/web:v1",
                                     "ports": [{"containerPort": 8080}]}], **spec}}


def running_status(ip: str) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.1.255.254", "startTime": now,
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": now}
                           for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
            "containerStatuses": [{"name": "web", "ready": True, "started": True, "restartCount": 0,
                                   "image": "demo/web:v1", "imageID": "", "containerID": "fake://x",
                                   "state": {"running": {"startedAt": now}}}]}


async def references(client: APIClient, r: Report) -> None:
    await client.create("namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                       "metadata": {"name": REFERENCE_NAMESPACE}})

    async def create(w: int, i: int) -> None:
        await client.create("pods", pod(f"ref-{w:02d}-{i:05d}", schedulerName="nobody"), REFERENCE_NAMESPACE)

    res = await run_load(create, concurrency=r.concurrency, seconds=3600, max_ops=r.replicas)
    r.reference_creates_s = res.seconds

    async def pipeline(w: int, i: int) -> None:
        name = f"pipe-{w:02d}-{i:05d}"
        created = await client.create("pods", pod(name, schedulerName="nobody"), REFERENCE_NAMESPACE)
        await client.create("pods", {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                                     "target": {"apiVersion": "v1", "kind": "Node", "name": "bench-ghost"}},
                            REFERENCE_NAMESPACE, subresource_of=name, subresource="binding")
        created["metadata"].pop("resourceVersion", None)  # the binding moved it on: write unconditionally
        created["status"] = running_status(f"10.255.{w % 256}.{i % 250 + 2}")
        await client.update_status("pods", created)

    res = await run_load(pipeline, concurrency=r.concurrency, seconds=3600, max_ops=r.replicas)
    r.reference_pipeline_s = res.seconds


async def follow_pods(client: APIClient, rv: str, t0: float, r: Report, done: asyncio.Event) -> None:
    created: set[str] = set()
    bound: set[str] = set()
    ready: set[str] = set()
    while not done.is_set():
        async for kind, obj in client.watch("pods", NAMESPACE, resource_version=rv, timeout_seconds=600):
            rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
            if kind not in ("ADDED", "MODIFIED"):
                continue
            name = obj["metadata"]["name"]
            now = time.perf_counter() - t0
            created.add(name)
            if len(created) == r.replicas and not r.all_created_s:
                r.all_created_s = now
            if (obj.get("spec") or {}).get("nodeName"):
                bound.add(name)
                if len(bound) == r.replicas and not r.all_bound_s:
                    r.all_bound_s = now
            if any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in (obj.get("status") or {}).get("conditions") or ()):
                ready.add(name)
                if len(ready) == r.replicas and not r.all_ready_s:
                    r.all_ready_s = now
                    done.set()
                    return


async def wait_available(client: APIClient, rv: str, t0: float, r: Report) -> None:
    while True:
        async for kind, obj in client.watch("deployments.apps", NAMESPACE, resource_version=rv,
                                            timeout_seconds=600):
            rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
            if kind == "MODIFIED" and (obj.get("status") or {}).get("availableReplicas", 0) >= r.replicas:
                r.available_s = time.perf_counter() - t0
                return


async def wait_nodes(client: APIClient, count: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        nodes, _ = await client.list_all("nodes", label_selector="type=fake")
        ready = [n for n in nodes if (n.get("spec") or {}).get("podCIDR") and any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in n["status"].get("conditions") or ())]
        if len(ready) >= count:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the {count} fake nodes did not become Ready with pod CIDRs")


async def run(args: argparse.Namespace) -> Report:
    r = Report(args.replicas, args.nodes, args.concurrency)
    with tempfile.TemporaryDirectory(prefix="bench-controllers-") as tmp:
        data = Path(tmp) / "cluster"
        cmd = [sys.executable, "-m", "minikube_py", "up", "--local", "--data-dir", str(data), "--port", "0",
               "--fake-nodes", str(args.nodes)]
        with server_process(cmd, r"cluster ready", cwd=str(REPO), timeout=120,
                            log_path=str(Path(tmp) / "up.log")):
            pids = {name: c["pid"] for name, c in json.loads((data / "cluster.json").read_text())["children"].items()}
            client = APIClient.from_kubeconfig(data / "admin.kubeconfig")
            try:
                await wait_nodes(client, args.nodes)
                await references(client, r)
                print(f"  references: {args.replicas} creates in {r.reference_creates_s:.2f} s, "
                      f"create+bind+status in {r.reference_pipeline_s:.2f} s", flush=True)
                await client.create("namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": NAMESPACE}})
                pods_rv = (await client.list("pods", NAMESPACE, limit=1))["metadata"]["resourceVersion"]
                deps_rv = (await client.list("deployments.apps", NAMESPACE, limit=1))["metadata"]["resourceVersion"]
                done = asyncio.Event()
                cpu0 = {n: process_cpu(p) for n, p in pids.items()}
                t0 = time.perf_counter()
                pods_task = asyncio.create_task(follow_pods(client, pods_rv, t0, r, done))
                available_task = asyncio.create_task(wait_available(client, deps_rv, t0, r))
                await client.create("deployments.apps", {
                    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "big"},
                    "spec": {"replicas": args.replicas, "selector": {"matchLabels": {"app": "big"}},
                             "template": {"metadata": {"labels": {"app": "big"}},
                                          "spec": {"containers": [{"name": "web", "image": "demo/web:v1"}]}}}},
                    NAMESPACE)
                timeout = max(300.0, args.replicas / 2)
                try:
                    await asyncio.wait_for(asyncio.gather(pods_task, available_task), timeout)
                except TimeoutError:
                    raise RuntimeError(f"the Deployment was not available within {timeout:.0f} s; "
                                       f"logs in {data / 'logs'}") from None
                for n, p in pids.items():
                    before, after = cpu0[n], process_cpu(p)
                    if before is not None and after is not None:
                        r.cpu_seconds[n] = after - before
            finally:
                await client.close()
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--replicas", type=int, default=1000)
    p.add_argument("--nodes", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=16,
                   help="client requests in flight for the references (16 = the fake nodes' writers)")
    p.add_argument("--quick", action="store_true", help="smoke test: 5 nodes, 100 replicas")
    p.add_argument("--json", action="store_true", help="print the report as JSON too")
    args = p.parse_args(argv)
    if args.quick:
        args.nodes, args.replicas = 5, 100
    if args.replicas < 1 or args.nodes < 1 or args.concurrency < 1:
        p.error("--replicas, --nodes and --concurrency must be at least 1")
    if args.replicas > args.nodes * 110:
        p.error(f"{args.replicas} replicas do not fit on {args.nodes} nodes of 110 pods")
    print(f"controllers benchmark: a {args.replicas}-replica Deployment on {args.nodes} fake nodes, "
          f"reference concurrency {args.concurrency}")
    r = asyncio.run(run(args))
    rows = [
        ["reference: pod creates through the API", fmt(r.reference_creates_s, 2), "1.00x"],
        ["reference: create + bind + status per pod", fmt(r.reference_pipeline_s, 2),
         f"{r.reference_pipeline_s / r.reference_creates_s:.2f}x"],
        ["Deployment: every pod created", fmt(r.all_created_s, 2), f"{r.all_created_s / r.reference_creates_s:.2f}x"],
        ["Deployment: every pod bound", fmt(r.all_bound_s, 2), f"{r.all_bound_s / r.reference_creates_s:.2f}x"],
        ["Deployment: every pod Ready", fmt(r.all_ready_s, 2), f"{r.all_ready_s / r.reference_creates_s:.2f}x"],
        ["Deployment: availableReplicas = replicas", fmt(r.available_s, 2), f"{r.ratio_creates:.2f}x"],
    ]
    print_table("", ["phase", "seconds", "vs creates"], rows)
    print(f"ratio Deployment available / pod creates: {r.ratio_creates:.2f}; "
          f"/ create+bind+status: {r.ratio_pipeline:.2f}")
    print("CPU seconds while the Deployment rolled out: "
          + ", ".join(f"{n} {s:.1f}" for n, s in sorted(r.cpu_seconds.items())))
    if args.json:
        print(json.dumps({**asdict(r), "ratio_creates": r.ratio_creates, "ratio_pipeline": r.ratio_pipeline},
                         indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
