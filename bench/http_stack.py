"""HTTP stack benchmark: why the API server is an aiohttp application.

    .venv/bin/python bench/http_stack.py [--seconds 2] [--rounds 2] [--quick] [--json]

The same minimal JSON GET endpoint (the body of ``/version``, encoded per request with orjson) is
served by aiohttp (the API server's choice) on asyncio's default loop and on uvloop, by the standard
library's threaded ``http.server``, and by starlette on uvicorn (h11 on asyncio; httptools on
uvloop), each in its own process on a free loopback port. One load generator (an aiohttp client,
HTTP/1.1 keep-alive pool as large as the concurrency) measures requests/s at concurrency 1 and 16;
servers take turns, ``--rounds`` times, and the best round counts. Ratios are against aiohttp on
the default loop. On this 2-core machine the client and the server each get about one core, so the
server's own CPU time per request (from /proc) is printed too: it does not depend on the client.

``--serve KIND`` runs one of the servers in the foreground (used by the benchmark itself).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson
from _util import LoadResult, fmt, positive_float, print_table, ratio, run_load, server_process

PAYLOAD = {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "gitCommit": "minikube-py-0.1.0",
           "gitTreeState": "clean", "buildDate": "2026-11-23T00:00:00Z", "goVersion": "python3",
           "compiler": "cpython", "platform": "linux/amd64"}
PATH = "/version"
REFERENCE = "aiohttp"
CONCURRENCY = (1, 16)


def _have(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


# name -> (what it is, modules it needs)
SERVERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "aiohttp": ("aiohttp, asyncio default loop (chosen)", ("aiohttp",)),
    "aiohttp-uvloop": ("aiohttp on uvloop", ("aiohttp", "uvloop")),
    "stdlib": ("http.server ThreadingHTTPServer", ()),
    "uvicorn": ("starlette + uvicorn (asyncio, h11)", ("starlette", "uvicorn", "h11")),
    "uvicorn-fast": ("starlette + uvicorn (uvloop, httptools)",
                     ("starlette", "uvicorn", "uvloop", "httptools")),
}


# ---- the servers (run in a child process by --serve) --------------------------------------------------

def _listening_socket() -> socket.socket:
    # proto=IPPROTO_TCP as getaddrinfo gives it: asyncio sets TCP_NODELAY on accepted sockets only
    # when it sees that proto, and without it uvicorn's separate header and body writes meet Nagle
    # and the client's delayed ACK (a 40 ms stall per request that no real deployment has).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


def _announce(sock: socket.socket) -> None:
    print(f"serving on port {sock.getsockname()[1]}", flush=True)


async def _serve_aiohttp() -> None:
    from aiohttp import web

    async def version(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(PAYLOAD), content_type="application/json")

    app = web.Application()
    app.router.add_get(PATH, version)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = _listening_socket()
    await web.SockSite(runner, sock).start()
    _announce(sock)
    try:
        await asyncio.Event().wait()  # until SIGTERM ends the process
    finally:
        await runner.cleanup()


def _serve_stdlib() -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like the other servers
        # Headers and body go out in two writes; with Nagle on, the second waits for the client's
        # delayed ACK (40 ms). The stdlib's own knob for that:
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            if self.path != PATH:
                self.send_error(404)
                return
            body = orjson.dumps(PAYLOAD)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # no access log, as for the others

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    _announce(server.socket)
    server.serve_forever()


def _serve_uvicorn(fast: bool) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def version(request: Request) -> Response:
        return Response(orjson.dumps(PAYLOAD), media_type="application/json")

    app = Starlette(routes=[Route(PATH, version)])
    config = uvicorn.Config(app, loop="uvloop" if fast else "asyncio", http="httptools" if fast else "h11",
                            access_log=False, log_level="warning", lifespan="off")
    sock = _listening_socket()
    _announce(sock)
    uvicorn.Server(config).run(sockets=[sock])


def serve(kind: str) -> None:
    if kind == "aiohttp":
        asyncio.run(_serve_aiohttp())
    elif kind == "aiohttp-uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve_aiohttp())
    elif kind == "stdlib":
        _serve_stdlib()
    elif kind in ("uvicorn", "uvicorn-fast"):
        _serve_uvicorn(fast=kind == "uvicorn-fast")
    else:
        raise SystemExit(f"unknown server {kind!r}; one of {', '.join(SERVERS)}")


# ---- the load generator -------------------------------------------------------------------------------

async def _load(port: int, pid: int, concurrency: int, seconds: float) -> LoadResult:
    import aiohttp

    url = f"http://127.0.0.1:{port}{PATH}"
    connector = aiohttp.TCPConnector(limit=concurrency)
    # trust_env=False: never a proxy from the environment; this traffic stays on loopback.
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:

        async def get(w: int, i: int) -> None:
            async with session.get(url) as resp:
                body = await resp.read()
                if resp.status != 200 or not body.startswith(b"{"):
                    raise RuntimeError(f"GET {url}: {resp.status} {body[:200]!r}")

        # Open the connections and warm the server up before the clock starts.
        await run_load(get, concurrency=concurrency, seconds=min(0.3, seconds), max_ops=50 * concurrency)
        return await run_load(get, concurrency=concurrency, seconds=seconds, server_pid=pid)


def measure(seconds: float, rounds: int, kinds: list[str]) -> dict[str, dict[int, LoadResult]]:
    """{server: {concurrency: best LoadResult}}: all servers run at once (idle ones cost nothing) and
    take turns, so a burst of load from elsewhere is spread over all of them."""
    from contextlib import ExitStack

    results: dict[str, dict[int, LoadResult]] = {k: {} for k in kinds}
    with ExitStack() as stack:
        ports: dict[str, tuple[int, int]] = {}
        for kind in kinds:
            proc, match = stack.enter_context(server_process(
                [sys.executable, __file__, "--serve", kind], r"serving on port (\d+)", timeout=30))
            ports[kind] = (int(match.group(1)), proc.pid)
        for _ in range(rounds):
            for c in CONCURRENCY:
                for kind in kinds:
                    port, pid = ports[kind]
                    result = asyncio.run(_load(port, pid, c, seconds))
                    best = results[kind].get(c)
                    if best is None or result.per_second > best.per_second:
                        results[kind][c] = result
    return results


def report(results: dict[str, dict[int, LoadResult]], notes: list[str]) -> None:
    ref = results.get(REFERENCE, {})
    header = ["server"]
    for c in CONCURRENCY:
        header += [f"c={c} req/s", "vs aiohttp"]
    top = CONCURRENCY[-1]
    header += [f"p50 ms c={top}", f"p99 ms c={top}", "server CPU us/req", "server CPU", "client CPU"]
    rows = []
    for kind, by_c in results.items():
        row = [SERVERS[kind][0]]
        for c in CONCURRENCY:
            r = by_c[c]
            row += [fmt(r.per_second), ratio(r.per_second, ref[c].per_second if c in ref else None)]
        r = by_c[top]
        server_busy, client_busy = r.busy(r.cpu_server), r.busy(r.cpu_self)
        row += [fmt(r.p(50), 2), fmt(r.p(99), 2), fmt(r.server_cpu_us_per_op()),
                f"{server_busy:.0%}" if server_busy is not None else "n/a",
                f"{client_busy:.0%}" if client_busy is not None else "n/a"]
        rows.append(row)
    print_table(f"JSON GET {PATH}: requests/s with one aiohttp client (keep-alive); "
                f"CPU columns at c={top} (100% = one core)", header, rows)
    for note in notes:
        print(f"({note})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=positive_float, default=2.0,
                        help="length of each measured run (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="turns each server takes; the best counts")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 0.4 s runs, one round")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead")
    parser.add_argument("--serve", choices=sorted(SERVERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, not {args.rounds}")
    seconds, rounds = (0.4, 1) if args.quick else (args.seconds, args.rounds)
    kinds, notes = [], []
    for kind, (what, modules) in SERVERS.items():
        if _have(*modules):
            kinds.append(kind)
        else:
            notes.append(f"{what}: not measured, needs {' '.join(modules)} (pip install ...)")
    started = time.perf_counter()
    results = measure(seconds, rounds, kinds)
    if args.json:
        out = {kind: {str(c): {"requests_per_s": r.per_second, "p50_ms": r.p(50), "p99_ms": r.p(99),
                               "server_cpu_us_per_request": r.server_cpu_us_per_op()}
                      for c, r in by_c.items()} for kind, by_c in results.items()}
        print(json.dumps({"results": out, "reference": REFERENCE, "notes": notes}, indent=2))
    else:
        report(results, notes)
        print(f"(whole run {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
