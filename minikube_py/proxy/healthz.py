"""kube-proxy's health port (10256): plain HTTP, a JSON body saying when the rules were last synced,
200 while that is recent enough and 503 otherwise — what cloud load balancers probe to decide
whether a node can take NodePort traffic.

``/healthz`` also fails while the node is being deleted; ``/livez`` only asks whether syncing works.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

import orjson
from aiohttp import web

from .proxier import HealthState

log = logging.getLogger(__name__)


def _rfc3339(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class HealthzServer:
    def __init__(self, health: Callable[[], HealthState], live: Callable[[], bool], *,
                 bind_address: str = "0.0.0.0", port: int = 10256) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is not a TCP port")
        self.health = health
        self.live = live
        self.bind_address = bind_address
        self._port = port
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/livez", self._livez)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.bind_address, self._port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        if runner.addresses:
            self._port = runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _answer(self, healthy: bool, state: HealthState) -> web.Response:
        body = {"lastUpdated": _rfc3339(state.last_updated), "currentTime": _rfc3339(time.time()),
                "nodeEligible": state.node_eligible}
        return web.Response(status=200 if healthy else 503, body=orjson.dumps(body),
                            content_type="application/json",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def _healthz(self, request: web.Request) -> web.Response:
        state = self.health()
        return self._answer(state.healthy, state)

    async def _livez(self, request: web.Request) -> web.Response:
        return self._answer(self.live(), self.health())
