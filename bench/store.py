"""Store benchmark: the embedded SQLite backend and a real single-member etcd, side by side.

    .venv/bin/python bench/store.py [--seconds 2.0] [--json]

Each line runs the same workload at the same client concurrency against both backends: durable
writes/s (create of new 1 KiB keys), point reads/s, a range over 10,000 keys (median ms) and watch
delivery latency (from the start of a write to its event reaching a watcher, p50/p99 ms). etcd is
started here on free loopback ports with default tuning and stopped at the end, as is the SQLite
file (synchronous=FULL, the backend's default). The whole run takes about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _util import stop_process

from minikube_py.localcluster import free_port
from minikube_py.store import Store
from minikube_py.store.sqlite import SqliteStore

VALUE = os.urandom(512).hex().encode()  # 1 KiB, about a small Kubernetes object
RANGE_KEYS = 10_000
WATCH_WRITES = 400


@contextmanager
def etcd_member(workdir: Path) -> Iterator[str | None]:
    """A single-member etcd on loopback; yields its client endpoint (None: etcd not installed)."""
    binary = shutil.which("etcd")
    if binary is None:
        yield None
        return
    client, peer = free_port(), free_port()
    log = open(workdir / "etcd.log", "wb")  # closed in the finally below
    proc = subprocess.Popen(
        [
            binary, "--name", "default", "--data-dir", str(workdir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    # No proxy, whatever the environment says: this request must stay on loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with opener.open(f"http://127.0.0.1:{client}/health", timeout=1) as resp:
                    if b"true" in resp.read():
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"etcd did not become healthy; see {workdir / 'etcd.log'}")
            time.sleep(0.1)
        yield f"127.0.0.1:{client}"
    finally:
        stop_process(proc)
        log.close()


Op = Callable[[int, int], Awaitable[object]]


async def for_duration(seconds: float, concurrency: int, op: Op) -> float:
    """Run ``op(worker, i)`` from ``concurrency`` tasks for ``seconds``; operations per second."""
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < stop:
            await op(w, i)
            i += 1
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return done / (time.perf_counter() - start)


async def fill(store: Store, prefix: str, n: int, concurrency: int = 64) -> list[str]:
    keys = [f"{prefix}{i:06}" for i in range(n)]
    queue = list(reversed(keys))

    async def worker() -> None:
        while queue:
            await store.create(queue.pop(), VALUE)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return keys


async def watch_latency(store: Store, prefix: str) -> tuple[float, float]:
    started: dict[str, float] = {}
    latencies: list[float] = []
    watch = store.watch(prefix, 0)

    async def consume() -> None:
        async for event in watch:
            latencies.append(time.perf_counter() - started[event.kv.key])
            if len(latencies) == WATCH_WRITES:
                return

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.2)  # let the watch get established (etcd: a gRPC stream)
    for i in range(WATCH_WRITES):
        key = f"{prefix}{i:06}"
        started[key] = time.perf_counter()
        await store.create(key, VALUE)
        await asyncio.sleep(0.002)  # a steady stream, not a saturated one
    async with asyncio.timeout(30):
        await consumer
    await watch.close()
    cuts = statistics.quantiles(latencies, n=100)
    return cuts[49] * 1000, cuts[98] * 1000


async def measure(store: Store, seconds: float) -> dict[str, float]:
    results: dict[str, float] = {}
    run = f"/bench/{os.getpid()}-{time.time_ns()}"
    for c in (1, 16):
        results[f"writes/s c={c}"] = await for_duration(
            seconds, c, lambda w, i, c=c: store.create(f"{run}/w{c}/{w}/{i}", VALUE)
        )
    keys = await fill(store, f"{run}/range/", RANGE_KEYS)
    for c in (1, 16):
        results[f"point reads/s c={c}"] = await for_duration(
            seconds, c, lambda w, i: store.get(keys[(w * 7919 + i * 31) % len(keys)])
        )
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        result = await store.range(f"{run}/range/")
        timings.append((time.perf_counter() - start) * 1000)
        assert len(result.items) == RANGE_KEYS
    results["range 10k keys ms"] = statistics.median(timings)
    p50, p99 = await watch_latency(store, f"{run}/watch/")
    results["watch latency p50 ms"] = p50
    results["watch latency p99 ms"] = p99
    return results


@asynccontextmanager
async def opened(factory: Callable[[], Awaitable[Store]]) -> AsyncIterator[Store]:
    store = await factory()
    try:
        yield store
    finally:
        await store.close()


async def run(seconds: float) -> tuple[dict[str, float], dict[str, float] | None, str]:
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        workdir = Path(tmp)
        async with opened(lambda: SqliteStore.open(str(workdir / "bench.db"), compact_interval=None)) as s:
            sqlite_results = await measure(s, seconds)
        try:
            from minikube_py.store.etcd import EtcdStore
        except ImportError as e:
            return sqlite_results, None, f"etcd backend not importable: {e}"
        with etcd_member(workdir) as endpoint:
            if endpoint is None:
                return sqlite_results, None, "etcd is not installed"
            async with opened(lambda: EtcdStore.open([endpoint])) as e:
                etcd_results = await measure(e, seconds)
        return sqlite_results, etcd_results, ""


def print_table(sqlite_results: dict[str, float], etcd_results: dict[str, float] | None, note: str) -> None:
    print(f"{'':24} {'sqlite':>10} {'etcd':>10} {'sqlite/etcd':>12}")
    for name, value in sqlite_results.items():
        other = etcd_results.get(name) if etcd_results else None
        digits = 0 if "/s" in name else 2
        etcd_text = f"{other:>10.{digits}f}" if other is not None else f"{'n/a':>10}"
        ratio = f"{value / other:>11.2f}x" if other else f"{'n/a':>12}"
        print(f"{name:24} {value:>10.{digits}f} {etcd_text} {ratio}")
    if note:
        print(f"({note})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each throughput run")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead")
    args = parser.parse_args()
    started = time.perf_counter()
    sqlite_results, etcd_results, note = asyncio.run(run(args.seconds))
    if args.json:
        print(json.dumps({"sqlite": sqlite_results, "etcd": etcd_results, "note": note}, indent=2))
    else:
        print_table(sqlite_results, etcd_results, note)
        print(f"(whole run {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
