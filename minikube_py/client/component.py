"""The health and metrics port every component serves (controller-manager 10257, scheduler 10259,
kubelet 10248, proxy 10256 ...), answering as Kubernetes components do:

- ``/healthz``, ``/livez``, ``/readyz``: ``ok`` (200) when every check passes, else 500 with one
  ``[+]name ok`` / ``[-]name failed`` line per check; ``?verbose`` lists the checks on success too;
  ``/healthz/<check>`` runs one check.
- ``/metrics``: the Prometheus text format from a small registry of counters, gauges and histograms.

With ``tls`` and no certificate given, a self-signed one is made in memory at start, as
kube-scheduler and kube-controller-manager do. With ``auth`` (a ``DelegatedAuth``), every path but the
always-allowed ones (the health checks) needs credentials the API server accepts and permission for
``get`` on the path (``delegated_auth.py``); without it the port is open, as kube-proxy's 10249/10256.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import inspect
import logging
import math
import re
import ssl
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from minikube_py.pki import create_ca, issue_cert, write_private_file

from .delegated_auth import DelegatedAuth

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Any]  # returns a bool (or an awaitable of one); raising counts as failing
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CHECK_TIMEOUT = 5.0  # a check that hangs fails rather than hanging the probe
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


# ---- metrics ---------------------------------------------------------------------------------------

def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 2**53:
        return str(int(v))
    return repr(float(v))


class _Metric:
    type_name = ""

    def __init__(self, name: str, help: str, labels: Sequence[str]) -> None:
        if not _METRIC_NAME.fullmatch(name):
            raise ValueError(f"invalid metric name {name!r}")
        if isinstance(labels, str):
            raise TypeError("labels is a sequence of label names")
        for label in labels:
            if not _LABEL_NAME.fullmatch(label) or label == "le":
                raise ValueError(f"{name}: invalid label name {label!r}")
        self.name = name
        self.help = help
        self.label_names = tuple(labels)
        self._children: dict[tuple[str, ...], Any] = {}

    def _key(self, values: tuple[Any, ...], kw: dict[str, Any]) -> tuple[str, ...]:
        if values and kw:
            raise TypeError("give label values by position or by name, not both")
        if kw:
            if set(kw) != set(self.label_names):
                raise ValueError(f"{self.name}: labels are {self.label_names}, got {tuple(kw)}")
            values = tuple(kw[n] for n in self.label_names)
        if len(values) != len(self.label_names):
            raise ValueError(f"{self.name}: expected {len(self.label_names)} label values, got {len(values)}")
        return tuple(str(v) for v in values)

    def _labels_text(self, key: tuple[str, ...], extra: str = "") -> str:
        parts = [f'{n}="{_escape(v)}"' for n, v in zip(self.label_names, key, strict=True)]
        if extra:
            parts.append(extra)
        return "{" + ",".join(parts) + "}" if parts else ""

    def _default(self) -> Any:
        if self.label_names:
            raise ValueError(f"{self.name} has labels {self.label_names}: use .labels(...)")
        return self.labels()

    def labels(self, *values: Any, **kw: Any) -> Any:
        key = self._key(values, kw)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child()
        return child

    def _new_child(self) -> Any:
        raise NotImplementedError

    def render(self) -> list[str]:
        help_text = self.help.replace("\\", "\\\\").replace("\n", "\\n")
        out = [f"# HELP {self.name} {help_text}",
               f"# TYPE {self.name} {self.type_name}"]
        for key in sorted(self._children):
            out += self._render_child(key, self._children[key])
        return out

    def _render_child(self, key: tuple[str, ...], child: Any) -> list[str]:
        return [f"{self.name}{self._labels_text(key)} {_num(child.value)}"]


class _Value:
    def __init__(self) -> None:
        self.value = 0.0


class _CounterChild(_Value):
    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount


class _GaugeChild(_Value):
    def set(self, value: float) -> None:
        self.value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class Counter(_Metric):
    type_name = "counter"

    def _new_child(self) -> _CounterChild:
        return _CounterChild()

    def inc(self, amount: float = 1.0) -> None:
        self._default().inc(amount)


class Gauge(_Metric):
    type_name = "gauge"

    def _new_child(self) -> _GaugeChild:
        return _GaugeChild()

    def set(self, value: float) -> None:
        self._default().set(value)

    def inc(self, amount: float = 1.0) -> None:
        self._default().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._default().dec(amount)


class _HistogramChild:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)


class Histogram(_Metric):
    type_name = "histogram"

    def __init__(self, name: str, help: str, labels: Sequence[str] = (),
                 buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        super().__init__(name, help, labels)
        bs = tuple(sorted(float(b) for b in buckets if not math.isinf(b)))
        if not bs or len(set(bs)) != len(bs):
            raise ValueError(f"{name}: buckets must be distinct and non-empty")
        self.buckets = bs

    def _new_child(self) -> _HistogramChild:
        return _HistogramChild(self.buckets)

    def observe(self, value: float) -> None:
        self._default().observe(value)

    def _render_child(self, key: tuple[str, ...], child: Any) -> list[str]:
        out = []
        cumulative = 0
        for le, n in zip((*self.buckets, math.inf), child.counts, strict=True):
            cumulative += n
            le_label = 'le="' + _num(le) + '"'
            out.append(f"{self.name}_bucket{self._labels_text(key, le_label)} {cumulative}")
        out.append(f"{self.name}_sum{self._labels_text(key)} {_num(child.sum)}")
        out.append(f"{self.name}_count{self._labels_text(key)} {cumulative}")
        return out


class MetricsRegistry:
    """Named metrics, rendered in the Prometheus text exposition format (version 0.0.4)."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        return self._register(Counter(name, help, labels))

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> Gauge:
        return self._register(Gauge(name, help, labels))

    def histogram(self, name: str, help: str, labels: Sequence[str] = (),
                  buckets: Sequence[float] = DEFAULT_BUCKETS) -> Histogram:
        return self._register(Histogram(name, help, labels, buckets))

    def _register(self, metric: Any) -> Any:
        existing = self._metrics.get(metric.name)
        if existing is not None:
            # Registering the same metric again (a restarted controller) returns the first one.
            if type(existing) is not type(metric) or existing.label_names != metric.label_names:
                raise ValueError(f"metric {metric.name} is already registered with another type or labels")
            return existing
        self._metrics[metric.name] = metric
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for name in sorted(self._metrics):
            lines += self._metrics[name].render()
        return "\n".join(lines) + "\n" if lines else ""


# ---- the server ------------------------------------------------------------------------------------

class ComponentServer:
    """A component's health and metrics endpoint."""

    def __init__(self, *, name: str, bind_address: str = "127.0.0.1", port: int, tls: bool = True,
                 cert_file: Path | None = None, key_file: Path | None = None,
                 auth: DelegatedAuth | None = None) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is not a TCP port")
        if (cert_file is None) != (key_file is None):
            raise ValueError("cert_file and key_file go together")
        if cert_file is not None and not tls:
            raise ValueError("a certificate was given but tls is off")
        if auth is not None and auth.client_ca_file is not None and not tls:
            raise ValueError("client certificates need tls")
        self.name = name
        self.bind_address = bind_address
        self.tls = tls
        self.cert_file = cert_file
        self.key_file = key_file
        # Settable until start(): the controller-manager builds its server before its CLI knows the auth.
        self.auth = auth
        self.metrics = MetricsRegistry()
        self._port = port
        self._checks: dict[str, HealthCheck] = {"ping": lambda: True}
        self._runner: web.AppRunner | None = None

    def add_check(self, name: str, check: HealthCheck) -> None:
        if not name or "/" in name or name in self._checks:
            raise ValueError(f"invalid or duplicate health check name {name!r}")
        self._checks[name] = check

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.bind_address}]" if ":" in self.bind_address else self.bind_address
        return f"{'https' if self.tls else 'http'}://{host}:{self._port}"

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError(f"{self.name}: the component server is already running")
        ssl_context = self._ssl_context() if self.tls else None
        if ssl_context is not None and self.auth is not None:
            self.auth.configure_tls(ssl_context)
        app = web.Application(middlewares=[self.auth.middleware()] if self.auth is not None else [])
        for path in ("/healthz", "/livez", "/readyz"):
            app.router.add_get(path, self._health)
            app.router.add_get(path + "/{check}", self._one_check)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.bind_address, self._port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        if runner.addresses:
            self._port = runner.addresses[0][1]  # the real port when 0 asked for any
        log.info("%s: serving health and metrics on %s", self.name, self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ComponentServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- handlers --------------------------------------------------------------------------------

    async def _run_check(self, check: HealthCheck) -> bool:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, CHECK_TIMEOUT)
            return bool(result)
        except Exception as e:
            log.warning("%s: health check failed: %s: %s", self.name, type(e).__name__, e)
            return False

    async def _health(self, request: web.Request) -> web.Response:
        what = request.path.strip("/")
        results = [(name, await self._run_check(check)) for name, check in list(self._checks.items())]
        failed = any(not ok for _, ok in results)
        lines = [f"[+]{n} ok" if ok else f"[-]{n} failed: reason withheld" for n, ok in results]
        if failed:
            return web.Response(status=500, text="\n".join([*lines, f"{what} check failed"]) + "\n",
                                headers={"X-Content-Type-Options": "nosniff"})
        if "verbose" in request.query:
            return web.Response(text="\n".join([*lines, f"{what} check passed"]) + "\n")
        return web.Response(text="ok")

    async def _one_check(self, request: web.Request) -> web.Response:
        name = request.match_info["check"]
        check = self._checks.get(name)
        if check is None:
            return web.Response(status=404, text=f"no health check named {name!r}\n")
        if await self._run_check(check):
            return web.Response(text="ok")
        return web.Response(status=500, text=f"[-]{name} failed: reason withheld\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render().encode(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    # ---- TLS -------------------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        if self.cert_file is not None and self.key_file is not None:
            ctx.load_cert_chain(self.cert_file, self.key_file)
            return ctx
        # kube-scheduler's way: a throwaway CA and a serving certificate signed by it, named after
        # the host and the time, for localhost and the bind address.
        stamp = int(dt.datetime.now(dt.UTC).timestamp())
        ca = create_ca(f"{self.name}-ca@{stamp}", days=365)
        ips = ["127.0.0.1"]
        if self.bind_address not in ("0.0.0.0", "::", "127.0.0.1", "localhost"):
            ips.append(self.bind_address)
        pair = issue_cert(ca, f"{self.name}@{stamp}", dns_names=["localhost"], ip_addresses=ips,
                          server=True, days=365)
        # Python's ssl loads a key only from a file: it lives for this call, in a private directory.
        with tempfile.TemporaryDirectory(prefix="minikube-py-serving-") as tmp:
            cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            write_private_file(cert, pair.cert_pem + ca.cert_pem)
            write_private_file(key, pair.key_pem)
            ctx.load_cert_chain(cert, key)
        return ctx

