"""API server benchmark: what the HTTP/JSON/registry layers cost on top of the store.

    .venv/bin/python bench/apiserver.py [--seconds 3] [--pods 1000] [--watchers 100] [--quick]
                                        [--http] [--uvloop] [--profile FILE] [--cprofile FILE]
                                        [--creates-only] [--etcd [--workers N]] [--json]

In one run, on fresh SQLite stores in a temporary directory:

1. raw store writes/s: ``SqliteStore.create`` of pod-sized values, called directly from this
   process at concurrency 1 and 32 (the reference);
2. a real ``minikube-py apiserver --local`` subprocess (HTTPS and a bearer token, as served) on a
   free loopback port, driven by one aiohttp client with an HTTP/1.1 keep-alive pool: pod creates/s
   and latency at concurrency 1 and 32 (taking turns with step 1 for ``--rounds`` rounds; the best
   round of each counts), then gets and lists over a namespace of ``--pods`` pods;
3. watch delivery: ``--watchers`` concurrent watch streams on one namespace, and a steady stream of
   pod creates; each sample is the time from a create being sent to one watcher reading its ADDED
   event (p50/p99 over all watcher-events), and per create the time until the last watcher had it.

It prints one table and the ratio API creates/s / store writes/s, against the goals (ratio >= 0.5,
p99 create <= 50 ms at concurrency 32). The CPU columns (server process from /proc; this process
for the client) tell whether the server or the load generator was the bottleneck on this 2-core
machine. ``--profile FILE`` samples the server with py-spy during the concurrency-32 creates and
prints the functions where it spent its time (samples of the thread holding the GIL); ``--uvloop``
runs the server on uvloop; ``--cprofile FILE`` runs it under cProfile instead. ``--etcd`` puts the
API server and the reference on a single-member etcd, and ``--workers N`` then starts N API server
processes on it (the client spreads its connections over them, as SO_REUSEPORT would). The default
run takes about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import random
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import aiohttp
import orjson
import yaml
from _util import (
    LoadResult,
    fmt,
    ms,
    percentile,
    pod_manifest,
    positive_float,
    print_table,
    process_cpu,
    ratio,
    run_load,
    server_process,
)

from minikube_py.store.sqlite import SqliteStore

REPO = Path(__file__).resolve().parent.parent
CONCURRENCY = (1, 32)
GOAL_RATIO = 0.5
GOAL_P99_CREATE_MS = 50.0
WATCH_INTERVAL = 0.02  # seconds between the creates a watch test sends: steady, not saturating


@dataclass
class Settings:
    seconds: float = 3.0
    pods: int = 1000
    watchers: int = 100
    watch_writes: int = 100
    list_repeats: int = 20
    rounds: int = 2
    uvloop: bool = False
    tls: bool = True
    profile: Path | None = None
    cprofile: Path | None = None
    creates_only: bool = False
    etcd: bool = False  # the API server(s) and the reference on a single-member etcd, not SQLite
    workers: int = 1  # API server processes (etcd only); the client spreads its connections over them


@dataclass
class Results:
    store: dict[int, LoadResult] = field(default_factory=dict)
    create: dict[int, LoadResult] = field(default_factory=dict)
    get: dict[int, LoadResult] = field(default_factory=dict)
    listing: LoadResult | None = None
    fill: LoadResult | None = None
    watch_samples: list[float] = field(default_factory=list)  # seconds, one per watcher-event
    watch_last: list[float] = field(default_factory=list)  # seconds, per create: until every watcher had it
    watch_expected: int = 0
    watch_cpu_server: float | None = None
    watch_seconds: float = 0.0
    profile_top: list[tuple[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ---- the reference: the store alone ------------------------------------------------------------------

async def store_phase(store: Any, c: int, round_: int, seconds: float) -> LoadResult:
    """Creates straight into a SqliteStore from this process (the server idles meanwhile): the
    throughput the API server's own store could give it at this concurrency."""
    value = orjson.dumps(pod_manifest("web-7d4b9c8f5d-00000", "bench"))
    return await run_load(
        lambda w, i: store.create(f"/registry/pods/bench/raw-r{round_}-c{c}-{w}-{i}", value),
        concurrency=c, seconds=seconds)


def keep_best(best: dict[int, LoadResult], c: int, result: LoadResult) -> None:
    if c not in best or result.per_second > best[c].per_second:
        best[c] = result


# ---- the API server ------------------------------------------------------------------------------------

@dataclass
class Client:
    base: str
    session: aiohttp.ClientSession
    ssl: ssl.SSLContext | None
    headers: dict[str, str]
    others: list[str] = field(default_factory=list)  # further API server processes (--workers)

    async def request(self, method: str, path: str, body: Any = None, expect: int = 200, worker: int = 0
                      ) -> bytes:
        data = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else None
        # Load worker w always goes to the same process: as SO_REUSEPORT hashes each connection to one.
        base = ([self.base, *self.others][worker % (1 + len(self.others))]) if self.others else self.base
        async with self.session.request(method, base + path, data=data, headers=headers) as resp:
            raw = await resp.read()
            if resp.status != expect:
                raise RuntimeError(f"{method} {path}: HTTP {resp.status} (expected {expect}): {raw[:300]!r}")
            return raw


def _credentials(data_dir: Path, tls: bool) -> tuple[dict[str, str], ssl.SSLContext | None]:
    config = yaml.safe_load((data_dir / "admin.kubeconfig").read_text())
    token = config["users"][0]["user"]["token"]
    ctx = ssl.create_default_context(cafile=str(data_dir / "pki" / "ca.crt")) if tls else None
    return {"Authorization": f"Bearer {token}"}, ctx


async def wait_idle(pid: int, *, quiet: float = 0.05, window: float = 0.5, limit: float = 60.0) -> None:
    """Wait until the server uses under ``quiet`` of a core over ``window`` seconds: it warms its
    OpenAPI documents in a thread after it starts listening, which would be charged to the first
    measurement."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = process_cpu(pid)
        await asyncio.sleep(window)
        after = process_cpu(pid)
        if before is None or after is None or after - before < quiet * window:
            return


async def load_on(pids: list[int], op: Any, *, concurrency: int, seconds: float) -> LoadResult:
    """run_load, with the server CPU summed over every API server process."""
    before = [process_cpu(p) for p in pids]
    result = await run_load(op, concurrency=concurrency, seconds=seconds, server_pid=pids[0])
    after = [process_cpu(p) for p in pids]
    if len(pids) > 1:
        result.cpu_server = (None if None in before or None in after
                             else sum(a - b for a, b in zip(after, before, strict=True)))  # type: ignore[operator]
    return result


async def measure_api(client: Client, pids: list[int], raw_store: Any, settings: Settings, results: Results
                      ) -> None:
    pid = pids[0]
    for ns in ("bench", "bench-list", "bench-watch"):
        await client.request("POST", "/api/v1/namespaces",
                             {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, 201)
    await wait_idle(pid)

    async def create(ns: str, name: str, worker: int = 0) -> None:
        await client.request("POST", f"/api/v1/namespaces/{ns}/pods", pod_manifest(name, ns), 201, worker)

    # Warm-up: the first requests import modules and fill caches on the server.
    await run_load(lambda w, i: create("bench", f"warm-{w}-{i}"), concurrency=4, seconds=5, max_ops=40)
    # The store and the API take turns, round after round, and the best round of each counts: on a
    # shared machine a burst of load from elsewhere then cannot land on one side of the ratio only.
    for r in range(settings.rounds):
        for c in CONCURRENCY:
            for p in pids:
                await wait_idle(p)
            keep_best(results.store, c, await store_phase(raw_store, c, r, settings.seconds))
            # Open this concurrency's connections (TLS handshakes) before the clock starts.
            await run_load(lambda w, i, c=c, r=r: create("bench", f"warm-r{r}-c{c}-{w}-{i}", w),
                           concurrency=c, seconds=5, max_ops=2 * c)
            keep_best(results.create, c, await load_on(
                pids, lambda w, i, c=c, r=r: create("bench", f"r{r}-c{c}-{w}-{i}", w), concurrency=c,
                seconds=settings.seconds))
    if settings.profile is not None:
        results.profile_top = await profile_creates(pid, settings, lambda w, i: create("bench", f"p-{w}-{i}"))
    if settings.creates_only:
        return

    # Exactly --pods pods in their own namespace for gets and lists; bounded by count, not time.
    results.fill = await run_load(lambda w, i: create("bench-list", f"web-{w:02d}-{i:05d}"),
                                  concurrency=32, seconds=120, max_ops=settings.pods)
    listed = orjson.loads(await client.request("GET", "/api/v1/namespaces/bench-list/pods"))
    names = [item["metadata"]["name"] for item in listed["items"]]
    if len(names) != settings.pods:
        raise RuntimeError(f"listed {len(names)} pods in bench-list, created {settings.pods}")
    rng = random.Random(42)

    async def get(w: int, i: int) -> None:
        await client.request("GET", f"/api/v1/namespaces/bench-list/pods/{rng.choice(names)}")

    for c in CONCURRENCY:
        results.get[c] = await run_load(get, concurrency=c, seconds=settings.seconds, server_pid=pid)

    async def list_all(w: int, i: int) -> None:
        body = orjson.loads(await client.request("GET", "/api/v1/namespaces/bench-list/pods"))
        if len(body["items"]) != settings.pods:
            raise RuntimeError(f"a list returned {len(body['items'])} pods, not {settings.pods}")

    results.listing = await run_load(list_all, concurrency=1, seconds=max(settings.seconds, 5.0),
                                  max_ops=settings.list_repeats, server_pid=pid)
    await measure_watch(client, pid, settings, results)


async def measure_watch(client: Client, pid: int, settings: Settings, results: Results) -> None:
    ns, n, writes = "bench-watch", settings.watchers, settings.watch_writes
    listed = orjson.loads(await client.request("GET", f"/api/v1/namespaces/{ns}/pods"))
    rv = listed["metadata"]["resourceVersion"]
    # Each watch holds its own connection; resourceVersion makes every stream start at the same
    # revision, so no event is missed whatever the order the streams are set up in.
    url = f"{client.base}/api/v1/namespaces/{ns}/pods?watch=1&resourceVersion={rv}&timeoutSeconds=300"
    sent: dict[str, float] = {}
    received: dict[str, list[float]] = {}
    ready = 0
    all_ready = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0, ssl=client.ssl if client.ssl else False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)

    async def watcher(session: aiohttp.ClientSession) -> None:
        nonlocal ready
        async with session.get(url, timeout=timeout) as resp:
            if resp.status != 200:
                raise RuntimeError(f"watch: HTTP {resp.status}: {(await resp.read())[:300]!r}")
            ready += 1
            if ready == n:
                all_ready.set()
            got = 0
            async for line in resp.content:
                now = time.perf_counter()
                event = orjson.loads(line)
                if event["type"] == "ERROR":
                    raise RuntimeError(f"watch ended with an error: {event['object']}")
                if event["type"] != "ADDED":
                    continue
                received.setdefault(event["object"]["metadata"]["name"], []).append(now)
                got += 1
                if got == writes:
                    return
            raise RuntimeError(f"a watch stream ended after {got} of {writes} events")

    async with aiohttp.ClientSession(connector=connector, headers=client.headers, trust_env=False) as session:
        tasks = [asyncio.create_task(watcher(session)) for _ in range(n)]
        try:
            async with asyncio.timeout(60):
                await asyncio.wait({asyncio.create_task(all_ready.wait()), *tasks},
                                   return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                if t.done() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            await asyncio.sleep(0.5)  # let the last streams' store watches settle
            cpu0, t0 = process_cpu(pid), time.perf_counter()
            for j in range(writes):
                name = f"watched-{j:05d}"
                sent[name] = time.perf_counter()
                await client.request("POST", f"/api/v1/namespaces/{ns}/pods", pod_manifest(name, ns), 201)
                await asyncio.sleep(WATCH_INTERVAL)
            async with asyncio.timeout(60):
                await asyncio.gather(*tasks)
            cpu1 = process_cpu(pid)
            results.watch_seconds = time.perf_counter() - t0
            results.watch_cpu_server = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    results.watch_expected = n * writes
    for name, times in received.items():
        results.watch_samples.extend(t - sent[name] for t in times)
        results.watch_last.append(max(times) - sent[name])
    if len(results.watch_samples) != n * writes:
        raise RuntimeError(f"watchers saw {len(results.watch_samples)} events, expected {n * writes}")


def find_py_spy() -> str:
    venv_bin = Path(sys.executable).parent / "py-spy"
    found = shutil.which("py-spy") or (str(venv_bin) if venv_bin.exists() else None)
    if found is None:
        raise RuntimeError("--profile needs py-spy (pip install py-spy)")
    return found


async def profile_creates(pid: int, settings: Settings, op: Any) -> list[tuple[str, float]]:
    """Sample the server with py-spy while creates run at the top concurrency; the hottest frames."""
    assert settings.profile is not None
    py_spy = find_py_spy()
    duration = max(2, round(settings.seconds))
    proc = await asyncio.create_subprocess_exec(
        py_spy, "record", "--pid", str(pid), "--duration", str(duration), "--rate", "250",
        "--format", "raw", "--output", str(settings.profile), "--nonblocking", "--gil",
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await asyncio.sleep(0.5)  # py-spy attaching
        await run_load(op, concurrency=CONCURRENCY[-1], seconds=duration + 1)
        async with asyncio.timeout(30):
            _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
    return hot_spots(settings.profile.read_text())


def hot_spots(collapsed: str, top: int = 12) -> list[tuple[str, float]]:
    """From py-spy's collapsed stacks (``frame;frame;... count`` lines): the functions that hold the
    most samples, as (what, share of all busy samples). Two views: "self" (the innermost frame: where
    the CPU actually was) and "in" (inclusive, for this project's functions: which step of the
    request pipeline the time belongs to). Each function is counted once per stack."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_function(f) for f in stack.split(";")]
        n = int(count)
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            if "minikube_py/" in f and not f.startswith("<module>") and "/cli/" not in f:
                inclusive[f] += n
    if not total:
        return []
    hot = [(f"self {f}", c / total) for f, c in own.most_common(top)]
    hot += [(f"in   {f}", c / total) for f, c in inclusive.most_common(top)]
    return hot


def _function(frame: str) -> str:
    """``name (path/file.py:123)`` -> ``name (path/file.py)``: samples of one function at different
    lines belong together."""
    head, sep, where = frame.rpartition(" (")
    if not sep:
        return frame
    return f"{head} ({where.rsplit(':', 1)[0].removesuffix(')')})"


# ---- the run ----------------------------------------------------------------------------------------

async def run_api(work: Path, pids: list[int], ports: list[int], settings: Settings, results: Results,
                  etcd: str | None = None) -> None:
    headers, ctx = _credentials(work / "data", settings.tls)
    scheme = "https" if settings.tls else "http"
    connector = aiohttp.TCPConnector(limit=max(CONCURRENCY), ssl=ctx if ctx else False)
    raw_store: Any
    if etcd is not None:
        from minikube_py.store import open_store

        raw_store = await open_store(f"etcd://{etcd}")
    else:
        raw_store = await SqliteStore.open(str(work / "raw.db"), compact_interval=None)
    try:
        async with aiohttp.ClientSession(connector=connector, headers=headers, trust_env=False) as session:
            bases = [f"{scheme}://127.0.0.1:{port}" for port in ports]
            client = Client(bases[0], session, ctx, headers, bases[1:])
            await measure_api(client, pids, raw_store, settings, results)
    finally:
        await raw_store.close()


def run(settings: Settings) -> Results:
    results = Results()
    with tempfile.TemporaryDirectory(prefix="apiserver-bench-") as tmp:
        work = Path(tmp)
        # No controller-manager makes `default` ServiceAccounts here: pods skip that admission.
        args = ["apiserver", "--local", "--data-dir", str(work / "data"), "--port", "0",
                "--disable-admission-plugins", "ServiceAccount"]
        if settings.uvloop:
            # The same CLI, with uvloop's policy installed first: what switching loops would buy.
            cmd = [sys.executable, "-c", "import sys, uvloop; uvloop.install(); "
                   "from minikube_py.cli.main import main; sys.exit(main(sys.argv[1:]))", *args]
        elif settings.cprofile is not None:
            # cProfile writes its stats when the server exits cleanly on SIGTERM.
            cmd = [sys.executable, "-m", "cProfile", "-o", str(settings.cprofile.resolve()), "-m", "minikube_py", *args]
        else:
            cmd = [sys.executable, "-m", "minikube_py", *args]
        if not settings.tls:
            cmd.append("--insecure-http")
        log = work / "apiserver.log"
        try:
            with contextlib.ExitStack() as stack:
                etcd = None
                if settings.etcd:
                    from store import etcd_member  # bench/store.py's single-member etcd on loopback

                    etcd = stack.enter_context(etcd_member(work))
                    if etcd is None:
                        raise RuntimeError("--etcd needs the etcd binary on PATH")
                    cmd += ["--etcd-servers", f"http://{etcd}"]
                pids, ports = [], []
                # One after the other: the first writes the PKI and token file, the others reuse them.
                for n in range(settings.workers):
                    proc, match = stack.enter_context(server_process(
                        cmd, r"serving on port (\d+)", cwd=str(REPO),
                        log_path=str(log if n == 0 else work / f"apiserver-{n}.log"), timeout=90))
                    pids.append(proc.pid)
                    ports.append(int(match.group(1)))
                asyncio.run(run_api(work, pids, ports, settings, results, etcd))
        except Exception:
            if log.exists():
                print(f"--- API server log (tail) ---\n{log.read_text()[-3000:]}", file=sys.stderr)
            raise
    return results


def summary(results: Results, settings: Settings | None = None) -> dict[str, Any]:
    def load(r: LoadResult | None, in_process: bool = False) -> dict[str, Any] | None:
        if r is None:
            return None
        cpu = store_cpu_us(r) if in_process else r.server_cpu_us_per_op()
        return {"ops": r.ops, "per_second": r.per_second, "p50_ms": r.p(50), "p99_ms": r.p(99),
                "server_cpu_us_per_op": cpu}

    out: dict[str, Any] = {
        "store_create": {str(c): load(r, in_process=True) for c, r in results.store.items()},
        "api_create": {str(c): load(r) for c, r in results.create.items()},
        "api_get": {str(c): load(r) for c, r in results.get.items()},
        "api_list": load(results.listing),
        "watch": {"samples": len(results.watch_samples), "p50_ms": ms(percentile(results.watch_samples, 50)),
                  "p99_ms": ms(percentile(results.watch_samples, 99)),
                  "all_watchers_p50_ms": ms(percentile(results.watch_last, 50)),
                  "all_watchers_p99_ms": ms(percentile(results.watch_last, 99))},
        "ratio_create_vs_store": {str(c): results.create[c].per_second / results.store[c].per_second
                                  for c in CONCURRENCY if results.store[c].per_second},
        "hot_spots": results.profile_top,
    }
    if settings is not None:
        out["backend"] = {"store": "etcd" if settings.etcd else "sqlite", "workers": settings.workers,
                          "tls": settings.tls, "uvloop": settings.uvloop}
    return out


def store_cpu_us(r: LoadResult) -> float | None:
    return r.cpu_self / r.ops * 1e6 if r.ops else None


def report(results: Results, settings: Settings) -> None:
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.0%}"

    header = ["operation", "c", "ops/s", "vs store", "p50 ms", "p99 ms", "server CPU us/op", "server CPU",
              "client CPU"]
    rows = []
    for c, r in results.store.items():
        # The store runs in this process: its CPU is this process's, shown in the server columns.
        store_label = f"store create ({'EtcdStore' if settings.etcd else 'SqliteStore'}, in-process)"
        rows.append([store_label, str(c), fmt(r.per_second), "1.00x",
                     fmt(r.p(50), 2), fmt(r.p(99), 2), fmt(store_cpu_us(r)), pct(r.busy(r.cpu_self)), "-"])
    labelled = [("API create pod", c, r, results.store.get(c)) for c, r in results.create.items()]
    labelled += [(f"API get pod (of {settings.pods:,})", c, r, None) for c, r in results.get.items()]
    if results.listing is not None:
        labelled.append((f"API list {settings.pods:,} pods", 1, results.listing, None))
    for label, c, r, ref in labelled:
        rows.append([label, str(c), fmt(r.per_second, 1 if r.per_second < 100 else 0),
                     ratio(r.per_second, ref.per_second) if ref else "",
                     fmt(r.p(50), 2), fmt(r.p(99), 2), fmt(r.server_cpu_us_per_op()),
                     pct(r.busy(r.cpu_server)), pct(r.busy(r.cpu_self))])
    scheme = ("HTTPS" if settings.tls else "plain HTTP") + (", uvloop" if settings.uvloop else "")
    backend = f"etcd, {settings.workers} API server process(es)" if settings.etcd else "embedded SQLite"
    print_table(f"API server ({scheme}, bearer token, {backend}) vs its store, same run, best of "
                f"{settings.rounds} interleaved rounds; 100% CPU = one core", header, rows)

    w = results.watch_samples
    watch_cpu = results.watch_cpu_server
    if not settings.creates_only:  # --creates-only: no watch phase to report
        events_per_s = len(w) / results.watch_seconds if results.watch_seconds else 0.0
        print_table(
            f"Watch delivery: {settings.watchers} watchers, {settings.watch_writes} pod creates "
            f"{WATCH_INTERVAL * 1000:.0f} ms apart (from the create being sent to the ADDED event being read)",
            ["measure", "p50 ms", "p99 ms", "max ms", "samples"],
            [["each watcher-event", fmt(ms(percentile(w, 50)), 2), fmt(ms(percentile(w, 99)), 2),
              fmt(ms(max(w)) if w else None, 2), f"{len(w):,}"],
             ["until all watchers had it", fmt(ms(percentile(results.watch_last, 50)), 2),
              fmt(ms(percentile(results.watch_last, 99)), 2),
              fmt(ms(max(results.watch_last)) if results.watch_last else None, 2), f"{len(results.watch_last):,}"]])
        if watch_cpu is not None and w:
            print(f"(watch phase: {events_per_s:,.0f} events/s delivered; server CPU "
                  f"{watch_cpu / results.watch_seconds:.0%} of a core, {watch_cpu / len(w) * 1e6:,.0f} us per "
                  f"delivered event)\n")

    print("Goals:")
    for c in CONCURRENCY:
        store, api = results.store.get(c), results.create.get(c)
        if store and api and store.per_second:
            value = api.per_second / store.per_second
            verdict = "met" if value >= GOAL_RATIO else "MISSED"
            print(f"  creates/s / store writes/s at c={c}: {api.per_second:,.0f} / {store.per_second:,.0f} = "
                  f"{value:.2f} (goal >= {GOAL_RATIO}: {verdict})")
            api_cpu = api.server_cpu_us_per_op()
            if api_cpu:
                print(f"    CPU per create: API server {api_cpu:,.0f} us, store alone {store_cpu_us(store):,.0f} us;"
                      f" one core saturated would give the API {1e6 / api_cpu:,.0f} creates/s")
    top = results.create.get(CONCURRENCY[-1])
    if top:
        verdict = "met" if top.p(99) <= GOAL_P99_CREATE_MS else "MISSED"
        print(f"  p99 create at c={CONCURRENCY[-1]}: {top.p(99):.1f} ms (goal <= {GOAL_P99_CREATE_MS:.0f} ms: "
              f"{verdict})")
    if results.profile_top:
        print(f"\nServer hot spots during creates at c={CONCURRENCY[-1]} (share of the busy samples of all "
              f"threads; raw stacks in {settings.profile}):")
        for frame, share in results.profile_top:
            print(f"  {share:6.1%}  {frame}")
    for note in results.notes:
        print(f"({note})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=positive_float, default=3.0,
                        help="length of each throughput run (default 3)")
    parser.add_argument("--pods", type=int, default=1000, help="pods to get and list (default 1000)")
    parser.add_argument("--watchers", type=int, default=100, help="concurrent watchers (default 100)")
    parser.add_argument("--watch-writes", type=int, default=100, help="creates the watchers see (default 100)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="turns the store and the API creates take; the best counts (default 2)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run (~10 s): 0.5 s runs, 100 pods, 10 watchers, 20 watched creates")
    parser.add_argument("--http", action="store_true", help="serve plain HTTP instead of HTTPS (TLS cost)")
    parser.add_argument("--uvloop", action="store_true", help="run the API server on uvloop (needs uvloop)")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="sample the server with py-spy during the c=32 creates; raw stacks to FILE")
    parser.add_argument("--cprofile", type=Path, metavar="FILE",
                        help="run the server under cProfile (deterministic, slower); pstats to FILE on exit")
    parser.add_argument("--creates-only", action="store_true",
                        help="measure only the store and API creates (no gets, lists or watches)")
    parser.add_argument("--etcd", action="store_true",
                        help="run on a single-member etcd (binary on PATH) instead of SQLite; the reference "
                             "is then etcd's own writes/s from this process")
    parser.add_argument("--workers", type=int, default=1,
                        help="API server processes on one etcd (needs --etcd: SQLite's watches are "
                             "in-process); the client spreads its connections over them (default 1)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead")
    args = parser.parse_args(argv)
    if args.workers > 1 and not args.etcd:
        parser.error("--workers above 1 needs --etcd: SQLite's watch fan-out is in-process, so a watch on "
                     "one process would miss the writes of the others")
    for name in ("pods", "watchers", "watch_writes", "rounds", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")
    if args.uvloop and importlib.util.find_spec("uvloop") is None:
        parser.error("--uvloop needs uvloop (pip install uvloop)")
    if args.profile is not None:
        try:
            find_py_spy()  # fail now, not after a minute of measuring
        except RuntimeError as e:
            parser.error(str(e))
    settings = Settings(seconds=args.seconds, pods=args.pods, watchers=args.watchers,
                        watch_writes=args.watch_writes, tls=not args.http, profile=args.profile,
                        rounds=args.rounds, uvloop=args.uvloop, cprofile=args.cprofile,
                        creates_only=args.creates_only, etcd=args.etcd, workers=args.workers)
    if args.quick:
        settings.seconds, settings.pods, settings.watchers, settings.watch_writes = 0.5, 100, 10, 20
        settings.list_repeats, settings.rounds = 5, 1
    started = time.perf_counter()
    results = run(settings)
    if args.json:
        print(json.dumps(summary(results, settings), indent=2))
    else:
        report(results, settings)
        print(f"(whole run {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
