"""The benchmarks stay runnable: each runs in its ``--quick`` mode and prints its table and its ratios;
their shared helpers compute what they claim; bad arguments fail fast with a message.

No timing is asserted (the machine is noisy): only that the figures exist, are positive, and that
each reference row is the 1.00x of its own table.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

import _util  # noqa: E402 - bench/ is not a package; its scripts import _util the same way

QUICK = {
    "apiserver": ["--quick"],
    "http_stack": ["--quick"],
    "json_codec": ["--quick", "--json"],
    "controllers": ["--quick"],
}


def _bench_cmd(name: str, *args: str) -> list[str]:
    return [sys.executable, str(BENCH / f"{name}.py"), *args]


@pytest.fixture(scope="module")
def quick_runs() -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    """All three benchmarks in --quick mode, run side by side to keep the wall time down."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = {name: subprocess.Popen(_bench_cmd(name, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, cwd=REPO, env=env)
             for name, args in QUICK.items()}
    done: dict[str, subprocess.CompletedProcess[str]] = {}
    try:
        deadline = time.monotonic() + 240
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        yield done
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def _ok(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 0, f"exit {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr[-4000:]}"
    return run.stdout


def _row(out: str, label: str) -> list[str]:
    for line in out.splitlines():
        if line.strip().startswith(label):
            return line.split()
    raise AssertionError(f"no row {label!r} in:\n{out}")


@pytest.mark.slow
def test_apiserver_quick_prints_table_ratios_and_watch(quick_runs: dict[str, subprocess.CompletedProcess[str]]
                                                       ) -> None:
    out = _ok(quick_runs["apiserver"])
    lines = [line.split() for line in out.splitlines()]
    # "store create (SqliteStore, in-process)  C  OPS/S  1.00x ..." and "API create pod  C  OPS/S  RATIO ..."
    store = {row[4]: row for row in lines if row[:2] == ["store", "create"]}
    api = {row[3]: row for row in lines if row[:3] == ["API", "create", "pod"]}
    assert set(store) == set(api) == {"1", "32"}, out
    for c in ("1", "32"):
        assert float(store[c][5].replace(",", "")) > 0 and store[c][6] == "1.00x"
        assert float(api[c][4].replace(",", "")) > 0
        assert api[c][5].endswith("x")  # the ratio to the store, measured in the same run
    assert "API get pod (of 100)" in out and "API list 100 pods" in out
    # 10 watchers x 20 creates: every watcher saw every create.
    assert _row(out, "each watcher-event")[-1] == "200"
    assert _row(out, "until all watchers had it")[-1] == "20"
    assert "creates/s / store writes/s at c=1:" in out and "creates/s / store writes/s at c=32:" in out
    assert "p99 create at c=32:" in out


@pytest.mark.slow
def test_http_stack_quick_compares_against_aiohttp(quick_runs: dict[str, subprocess.CompletedProcess[str]]
                                                   ) -> None:
    out = _ok(quick_runs["http_stack"])
    ref = _row(out, "aiohttp, asyncio default loop (chosen)")
    # c=1 req/s, ratio, c=16 req/s, ratio follow the 5-word label.
    assert float(ref[5].replace(",", "")) > 0 and ref[6] == "1.00x"
    assert float(ref[7].replace(",", "")) > 0 and ref[8] == "1.00x"
    stdlib = _row(out, "http.server ThreadingHTTPServer")
    assert float(stdlib[2].replace(",", "")) > 0 and stdlib[3].endswith("x")


def test_json_codec_quick_reports_every_codec(quick_runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    data = json.loads(_ok(quick_runs["json_codec"]))
    times = data["seconds_per_op"]
    assert {"json (stdlib)", "orjson"} <= set(times)
    for codec, ops in times.items():
        assert set(ops) == {"encode pod", "decode pod", "encode list", "decode list"}, codec
        assert all(0 < t < 10 for t in ops.values()), (codec, ops)
    assert data["sizes"]["list"] > 50 * data["sizes"]["pod"]  # the quick list still holds 100 pods


def test_json_codec_table_has_stdlib_as_reference() -> None:
    run = subprocess.run(_bench_cmd("json_codec", "--quick", "--seconds", "0.2"), capture_output=True,
                         text=True, cwd=REPO, timeout=120)
    out = _ok(run)
    row = _row(out, "json (stdlib)")
    assert row[2:].count("1.00x") == 4  # each speed-up column is relative to stdlib itself
    assert _row(out, "orjson")


@pytest.mark.parametrize("name,args,message", [
    ("apiserver", ["--seconds", "0"], "must be a positive number"),
    ("apiserver", ["--watchers", "0"], "--watchers must be at least 1"),
    ("http_stack", ["--rounds", "0"], "--rounds must be at least 1"),
    ("json_codec", ["--seconds", "soon"], "is not a number"),
])
def test_bad_arguments_fail_at_once(name: str, args: list[str], message: str) -> None:
    run = subprocess.run(_bench_cmd(name, *args), capture_output=True, text=True, cwd=REPO, timeout=60)
    assert run.returncode == 2
    assert message in run.stderr


# ---- the helpers ----------------------------------------------------------------------------------------

def test_percentile_is_nearest_rank() -> None:
    samples = [float(x) for x in range(1, 101)]  # 1..100
    assert _util.percentile(samples, 50) == 50.0
    assert _util.percentile(samples, 99) == 99.0
    assert _util.percentile(samples, 100) == 100.0
    assert _util.percentile([3.0, 1.0, 2.0], 50) == 2.0  # unsorted input
    assert math.isnan(_util.percentile([], 50))
    with pytest.raises(ValueError):
        _util.percentile(samples, 0)


async def test_run_load_stops_at_max_ops_and_records_each_latency() -> None:
    calls: list[tuple[int, int]] = []

    async def op(w: int, i: int) -> None:
        calls.append((w, i))
        await asyncio.sleep(0)

    result = await _util.run_load(op, concurrency=4, seconds=30, max_ops=25)
    assert result.ops == len(calls) == 25 == len(result.latencies)
    assert {w for w, _ in calls} == {0, 1, 2, 3}
    assert result.per_second > 0


async def test_run_load_stops_at_its_deadline() -> None:
    async def op(w: int, i: int) -> None:
        await asyncio.sleep(0.01)

    started = time.monotonic()
    result = await _util.run_load(op, concurrency=2, seconds=0.2)
    assert time.monotonic() - started < 5  # bounded by time, whatever the count
    assert result.ops > 0


async def test_run_load_rejects_bad_bounds() -> None:
    async def op(w: int, i: int) -> None:
        return None

    with pytest.raises(ValueError):
        await _util.run_load(op, concurrency=0, seconds=1)
    with pytest.raises(ValueError):
        await _util.run_load(op, concurrency=1, seconds=0)


def test_process_cpu_reads_this_process_and_tolerates_a_missing_one() -> None:
    cpu = _util.process_cpu(os.getpid())
    assert cpu is not None and cpu >= 0
    assert _util.process_cpu(None) is None
    assert _util.process_cpu(2**22 + 12345) is None  # beyond pid_max: no such process


def test_server_process_reports_a_server_that_never_gets_ready(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    cmd = [sys.executable, "-c", "import sys; print('booting'); sys.stderr.write('no port for you'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match="did not print") as info:
        with _util.server_process(cmd, r"port (\d+)", timeout=30, log_path=str(log)):
            pass
    assert "exited with code 3" in str(info.value)
    assert "no port for you" in log.read_text()


def test_server_process_stops_the_server_on_the_way_out() -> None:
    cmd = [sys.executable, "-c", "import time; print('serving on port 1234', flush=True); time.sleep(60)"]
    with _util.server_process(cmd, r"serving on port (\d+)", timeout=30) as (proc, match):
        assert match.group(1) == "1234"
        assert proc.poll() is None
    assert proc.poll() is not None


def test_pods_are_realistic_and_distinct() -> None:
    manifest = _util.pod_manifest("web-1", "ns1")
    assert manifest["metadata"]["namespace"] == "ns1" and len(manifest["spec"]["containers"]) == 2
    served = [_util.pod_as_served(f"web-{i}", "default", i) for i in range(3)]
    assert len({p["metadata"]["uid"] for p in served}) == 3
    assert served[0]["status"]["phase"] == "Running"
    assert 3000 < len(json.dumps(served[0])) < 8000


def test_hot_spots_groups_lines_of_one_function() -> None:
    import apiserver as bench_apiserver  # bench/apiserver.py

    collapsed = "\n".join([
        "<module> (minikube_py/__main__.py:3);handle (minikube_py/apiserver/handlers.py:10);"
        "walk (minikube_py/api/schema.py:5) 30",
        "<module> (minikube_py/__main__.py:3);handle (minikube_py/apiserver/handlers.py:12);"
        "walk (minikube_py/api/schema.py:7) 30",
        "<module> (minikube_py/__main__.py:3);handle (minikube_py/apiserver/handlers.py:14) 40",
        "garbage line",
    ])
    hot = dict(bench_apiserver.hot_spots(collapsed))
    assert hot["self walk (minikube_py/api/schema.py)"] == pytest.approx(0.6)
    assert hot["self handle (minikube_py/apiserver/handlers.py)"] == pytest.approx(0.4)
    assert hot["in   handle (minikube_py/apiserver/handlers.py)"] == pytest.approx(1.0)
    assert not any("<module>" in k for k in hot if k.startswith("in"))
