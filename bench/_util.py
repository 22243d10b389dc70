"""What the benchmarks share: a bounded load loop, percentiles, CPU accounting of a server process,
starting a server subprocess and waiting for its "listening" line, a realistic Pod, and the table.

The machine has 2 cores and is noisy, so every benchmark prints its figures beside a reference
measured in the same run, and the ratio between them; the CPU columns show which side (the server
or the load generator) was the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---- statistics ---------------------------------------------------------------------------------------

def percentile(samples: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of ``samples``; NaN when there are none."""
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} is outside (0, 100]")
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> float:
    return seconds * 1000.0


@dataclass
class LoadResult:
    """The outcome of :func:`run_load`: how many operations, in how long, and each one's latency."""

    ops: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # seconds, one per operation
    cpu_self: float = 0.0  # CPU seconds this process (the load generator) used meanwhile
    cpu_server: float | None = None  # CPU seconds the measured server process used meanwhile

    @property
    def per_second(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    def p(self, q: float) -> float:
        """Latency percentile in milliseconds."""
        return ms(percentile(self.latencies, q))

    def server_cpu_us_per_op(self) -> float | None:
        """Server CPU microseconds per operation: independent of how fast the load generator is."""
        if self.cpu_server is None or not self.ops:
            return None
        return self.cpu_server / self.ops * 1e6

    def busy(self, cpu: float | None) -> float | None:
        """CPU seconds as a share of the wall time (1.0 = one core saturated)."""
        return None if cpu is None or self.seconds <= 0 else cpu / self.seconds


Op = Callable[[int, int], Awaitable[object]]


async def run_load(op: Op, *, concurrency: int, seconds: float, max_ops: int = 0,
                   server_pid: int | None = None) -> LoadResult:
    """Run ``op(worker, i)`` from ``concurrency`` tasks until ``seconds`` have passed or ``max_ops``
    operations (0: no limit) were started; every operation's latency is recorded.

    Both bounds are hard: a load loop here must stop by itself, whatever the server does.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, not {concurrency}")
    if not seconds > 0:
        raise ValueError(f"seconds must be positive, not {seconds}")
    latencies: list[float] = []
    started = 0
    stop = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal started
        i = 0
        while time.perf_counter() < stop and (not max_ops or started < max_ops):
            started += 1
            t0 = time.perf_counter()
            await op(w, i)
            latencies.append(time.perf_counter() - t0)
            i += 1

    cpu0, srv0 = time.process_time(), process_cpu(server_pid)
    t0 = time.perf_counter()
    # A stuck server must not hang the benchmark: give the in-flight requests a grace period.
    async with asyncio.timeout(seconds + 30):
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - t0
    srv1 = process_cpu(server_pid)
    return LoadResult(
        ops=len(latencies), seconds=elapsed, latencies=latencies, cpu_self=time.process_time() - cpu0,
        cpu_server=None if srv0 is None or srv1 is None else srv1 - srv0,
    )


def process_cpu(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` (and its reaped children) from /proc; None when
    unknown (no pid, not Linux, process gone)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


# ---- server subprocesses ------------------------------------------------------------------------------

@contextmanager
def server_process(cmd: Sequence[str], ready: str, *, timeout: float = 60.0, cwd: str | None = None,
                   env: dict[str, str] | None = None, log_path: str | None = None
                   ) -> Iterator[tuple[subprocess.Popen[bytes], re.Match[str]]]:
    """Start ``cmd``, wait for a stdout line matching the regex ``ready`` (e.g. ``port (\\d+)``),
    yield the process and the match, and stop the process (SIGTERM, then SIGKILL) on the way out.

    stderr goes to ``log_path`` (or is discarded); the error names it when the server never gets ready.
    """
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # closed in the finally below
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=log, cwd=cwd, env=env)
    drain: threading.Thread | None = None
    try:
        match = _wait_for_line(proc, re.compile(ready), timeout)
        if match is None:
            where = f"; see {log_path}" if log_path else ""
            code = proc.poll()
            what = f"exited with code {code}" if code is not None else f"not within {timeout:.0f} s"
            raise RuntimeError(f"{' '.join(cmd[:4])}... did not print {ready!r}: {what}{where}")
        # Keep reading stdout, so that a chatty server never blocks on a full pipe.
        drain = threading.Thread(target=_drain, args=(proc,), daemon=True)
        drain.start()
        yield proc, match
    finally:
        stop_process(proc)
        if drain is not None:
            drain.join(timeout=5)  # EOF follows the exit, unless a grandchild holds the pipe
        if proc.stdout is not None and (drain is None or not drain.is_alive()):
            proc.stdout.close()
        if log is not subprocess.DEVNULL:
            log.close()


def _wait_for_line(proc: subprocess.Popen[bytes], pattern: re.Pattern[str], timeout: float
                   ) -> re.Match[str] | None:
    """Read the raw pipe (no buffered reader: lines it buffered would be invisible to select)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    pending = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not sel.select(left):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:  # the process closed stdout: it exited
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
                return None
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if m := pattern.search(line.decode(errors="replace")):
                    return m
    return None


def _drain(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    try:
        while proc.stdout.read(65536):
            pass
    except (OSError, ValueError):  # closed under us: the process is gone
        pass


def stop_process(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


# ---- a realistic Pod ----------------------------------------------------------------------------------

def pod_manifest(name: str, namespace: str = "default") -> dict[str, Any]:
    """A Pod as a ReplicaSet controller posts it: labels, owner, two containers with env, ports,
    probes, resources and mounts, and volumes (about 2 KiB of JSON)."""
    app = "web"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "generateName": f"{app}-7d4b9c8f5d-",
            "labels": {"app": app, "pod-template-hash": "7d4b9c8f5d", "tier": "frontend"},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9102"},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{app}-7d4b9c8f5d",
                "uid": "0b6f7c2e-6a1e-4a52-9d3e-1f2a3b4c5d6e", "controller": True,
                "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example/web/frontend:1.27.3",
                    "args": ["--listen=:8080", "--log-level=info", "--cache-size=256Mi"],
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                              {"name": "metrics", "containerPort": 9102, "protocol": "TCP"}],
                    "env": [
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "BACKEND_URL", "value": "http://backend.default.svc.cluster.local:8080"},
                        {"name": "FEATURE_FLAGS", "value": "new-checkout,fast-search"},
                    ],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                  "limits": {"cpu": "500m", "memory": "256Mi"}},
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080},
                                       "periodSeconds": 5, "failureThreshold": 3},
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080},
                                      "initialDelaySeconds": 10, "periodSeconds": 10},
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/web", "readOnly": True},
                                     {"name": "cache", "mountPath": "/var/cache/web"}],
                },
                {
                    "name": "log-shipper",
                    "image": "registry.example/infra/log-shipper:2.4.0",
                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                    "volumeMounts": [{"name": "cache", "mountPath": "/var/cache/web", "readOnly": True}],
                },
            ],
            "volumes": [{"name": "config", "configMap": {"name": "web-config"}},
                        {"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}}],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "terminationGracePeriodSeconds": 30,
        },
    }


def pod_as_served(name: str, namespace: str = "default", index: int = 0) -> dict[str, Any]:
    """The same Pod as a GET returns it once scheduled and running: server-set metadata, defaulted
    spec fields, managedFields and a full status (about 5 KiB of JSON)."""
    pod = pod_manifest(name, namespace)
    meta, spec = pod["metadata"], pod["spec"]
    meta.update({
        "uid": f"5f1e2d3c-4b5a-4697-8a9b-{index:012x}",
        "resourceVersion": str(1000 + index),
        "creationTimestamp": "2026-11-23T10:15:00Z",
        "managedFields": [
            {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
             "time": "2026-11-23T10:15:00Z", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app": {},
                                                                         "f:pod-template-hash": {}}},
                          "f:spec": {"f:containers": {'k:{"name":"app"}': {".": {}, "f:image": {}}}}}},
            {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "subresource": "status",
             "time": "2026-11-23T10:15:04Z", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:status": {"f:conditions": {}, "f:containerStatuses": {}, "f:podIP": {}}}},
        ],
    })
    for c in spec["containers"]:
        c.update({"imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log",
                  "terminationMessagePolicy": "File"})
    spec.update({
        "nodeName": f"worker-{index % 3}", "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default", "schedulerName": "default-scheduler", "priority": 0,
        "enableServiceLinks": True, "preemptionPolicy": "PreemptLowerPriority", "securityContext": {},
        "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                         "effect": "NoExecute", "tolerationSeconds": 300},
                        {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                         "effect": "NoExecute", "tolerationSeconds": 300}],
    })
    conditions = [{"type": t, "status": "True", "lastProbeTime": None,
                   "lastTransitionTime": "2026-11-23T10:15:03Z"}
                  for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady",
                            "PodScheduled")]
    statuses = [{"name": c["name"], "image": c["image"], "imageID": f"sha256:{index:064x}",
                 "containerID": f"containerd://{index + n:064x}", "ready": True, "started": True,
                 "restartCount": 0, "state": {"running": {"startedAt": "2026-11-23T10:15:02Z"}},
                 "lastState": {}}
                for n, c in enumerate(spec["containers"])]
    pod["status"] = {
        "phase": "Running", "conditions": conditions, "hostIP": f"10.0.0.{10 + index % 3}",
        "hostIPs": [{"ip": f"10.0.0.{10 + index % 3}"}],
        "podIP": f"10.244.{index // 250 % 256}.{index % 250 + 2}",
        "podIPs": [{"ip": f"10.244.{index // 250 % 256}.{index % 250 + 2}"}],
        "startTime": "2026-11-23T10:15:01Z", "qosClass": "Burstable", "containerStatuses": statuses,
    }
    return pod


# ---- output -------------------------------------------------------------------------------------------

def fmt(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference or math.isnan(value) or math.isnan(reference):
        return "n/a"
    return f"{value / reference:.2f}x"


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain text table: first column left-aligned, the others right-aligned."""
    cells = [list(header), *[list(r) for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(title)
    for n, row in enumerate(cells):
        line = "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row))
        print("  " + line.rstrip())
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))
    print()


def positive_float(text: str) -> float:
    """argparse type: a number > 0, with a clear message otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value
