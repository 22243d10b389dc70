"""A stand-in kubelet for the logs/exec tests: the kubelet API's /containerLogs and /exec on 127.0.0.1.

Logs come from ``FakeKubelet.logs`` (lines with a timestamp each); ``follow=true`` then streams
``follow_lines`` one by one and ends, as when the container exits. Exec runs the command as a real
local process through ``minikube_py.kubelet.streaming``. It runs its own event loop in a thread so
that synchronous tests can drive kubectl against it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web

from minikube_py.kubelet.streaming import StreamOptions, SubprocessExec, serve_exec, status_response


@dataclass
class LogLine:
    at: float  # unix time
    text: str


def _stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


@dataclass
class FakeKubelet:
    # (namespace, pod, container) -> lines already written by the container.
    logs: dict[tuple[str, str, str], list[LogLine]] = field(default_factory=dict)
    follow_lines: list[str] = field(default_factory=lambda: ["follow-1", "follow-2", "follow-3"])
    follow_interval: float = 0.05
    exec_dir: str | None = None
    requests: list[tuple[str, str, dict[str, list[str]]]] = field(default_factory=list)
    # Containers whose followed log never ends (until the client goes away).
    endless: set[tuple[str, str, str]] = field(default_factory=set)
    open_log_streams: int = 0
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    def add_container(self, namespace: str, pod: str, container: str, texts: list[str],
                      ages: list[float] | None = None) -> None:
        """Give a container its log; ``ages`` (seconds before now) default to one line a minute."""
        now = time.time()
        ages = ages or [60.0 * (len(texts) - i) for i in range(len(texts))]
        lines = [LogLine(now - a, t) for a, t in zip(ages, texts, strict=True)]
        self.logs[(namespace, pod, container)] = lines

    # ---- handlers ------------------------------------------------------------------------------------

    def _record(self, request: web.Request) -> None:
        query: dict[str, list[str]] = {}
        for k, v in request.query.items():
            query.setdefault(k, []).append(v)
        self.requests.append((request.method, request.path, query))

    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        key = (request.match_info["namespace"], request.match_info["pod"], request.match_info["container"])
        if key not in self.logs:
            return status_response(404, "NotFound", f'container "{key[2]}" in pod "{key[1]}" not found')
        q = request.query
        lines = list(self.logs[key])
        if "sinceSeconds" in q:
            cutoff = time.time() - int(q["sinceSeconds"])
            lines = [ln for ln in lines if ln.at >= cutoff]
        if "tailLines" in q:
            tail = int(q["tailLines"])
            lines = lines[len(lines) - tail:] if tail < len(lines) else lines
        timestamps = q.get("timestamps") == "true"
        limit = int(q["limitBytes"]) if "limitBytes" in q else None
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        self.open_log_streams += 1
        try:
            await self._stream_log(resp, key, lines, timestamps, limit, q.get("follow") == "true")
        finally:
            self.open_log_streams -= 1
        return resp

    async def _stream_log(self, resp: web.StreamResponse, key: tuple[str, str, str], lines: list[LogLine],
                          timestamps: bool, limit: int | None, follow: bool) -> None:
        sent = 0

        async def emit(line: LogLine) -> bool:
            nonlocal sent
            data = ((_stamp(line.at) + " " if timestamps else "") + line.text + "\n").encode()
            if limit is not None:
                data = data[:max(0, limit - sent)]
            if data:
                await resp.write(data)
                sent += len(data)
            return limit is None or sent < limit

        more = True
        for line in lines:
            if not (more := await emit(line)):
                break
        if more and follow:
            n = 0
            while key in self.endless or n < len(self.follow_lines):
                await asyncio.sleep(self.follow_interval)
                text = self.follow_lines[n] if n < len(self.follow_lines) else f"follow-{n + 1}"
                n += 1
                if not await emit(LogLine(time.time(), text)):
                    break
        await resp.write_eof()

    async def exec(self, request: web.Request) -> web.StreamResponse:
        self._record(request)

        async def start(options: StreamOptions) -> SubprocessExec:
            return await SubprocessExec.start(options, cwd=self.exec_dir)

        return await serve_exec(request, start)

    # ---- life cycle ------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self.container_logs)
        app.router.add_route("*", "/exec/{namespace}/{pod}/{container}", self.exec)
        return app

    async def _serve(self) -> None:
        self._runner = web.AppRunner(self.app(), handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def start(self) -> int:
        """Serve in a background thread; returns the port."""
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as e:
                failure.append(e)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup() if self._runner else asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-kubelet", daemon=True)
        self._thread.start()
        started.wait(10)
        if failure:
            raise failure[0]
        return self.port

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None
