"""Liveness, readiness and startup probes, as the kubelet's prober runs them.

One ``ProbeWorker`` per (container, probe type) ticks every ``periodSeconds`` after
``initialDelaySeconds``; a result flips only after ``successThreshold`` / ``failureThreshold``
consecutive outcomes. Initial results are the kubelet's: readiness starts failed (not ready until
proven), liveness starts successful, startup starts unknown. While a startup probe has not succeeded,
the other probes of that container do not run. The handlers: ``exec`` through the runtime's
ExecSync, ``httpGet`` (2xx/3xx is success) and ``tcpSocket`` to the pod IP, from the node's network
namespace (the pods are reachable through the CNI bridge).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

log = logging.getLogger("minikube_py.kubelet.probes")

SUCCESS, FAILURE, UNKNOWN = "success", "failure", "unknown"
LIVENESS, READINESS, STARTUP = "Liveness", "Readiness", "Startup"
# The kubelet caps what a probe's output contributes to an event message.
MAX_OUTPUT = 10 * 1024


class ExecRunner(Protocol):
    async def exec_sync(self, container_id: str, cmd: list[str], timeout: float = 0) -> Any: ...


@dataclass(frozen=True)
class ProbeSpec:
    """A container's probe with the API's defaults filled in."""

    handler: dict[str, Any]
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def from_api(cls, probe: dict[str, Any]) -> ProbeSpec:
        def num(key: str, default: float, minimum: float) -> float:
            value = probe.get(key)
            return max(minimum, float(value)) if isinstance(value, int | float) else default

        return cls(handler=probe, initial_delay=num("initialDelaySeconds", 0, 0), period=num("periodSeconds", 10, 1),
                   timeout=num("timeoutSeconds", 1, 1), success_threshold=int(num("successThreshold", 1, 1)),
                   failure_threshold=int(num("failureThreshold", 3, 1)))


@dataclass(frozen=True)
class ProbeOutcome:
    success: bool
    output: str = ""


def resolve_port(port: Any, container: dict[str, Any]) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        if not 0 < port < 65536:
            raise ValueError(f"invalid port number: {port}")
        return port
    text = str(port or "")
    if text.isdigit():
        return resolve_port(int(text), container)
    for p in container.get("ports") or ():
        if p.get("name") == text and p.get("containerPort"):
            return int(p["containerPort"])
    raise ValueError(f"couldn't find port {text!r} in the container's ports")


async def run_handler(handler: dict[str, Any], *, container: dict[str, Any], container_id: str, pod_ip: str,
                      runtime: ExecRunner, timeout: float) -> ProbeOutcome:
    """Run one probe attempt; never raises."""
    try:
        if handler.get("exec") is not None:
            return await _exec(handler["exec"], container_id, runtime, timeout)
        if handler.get("httpGet") is not None:
            return await _http_get(handler["httpGet"], container, pod_ip, timeout)
        if handler.get("tcpSocket") is not None:
            return await _tcp(handler["tcpSocket"], container, pod_ip, timeout)
        if handler.get("grpc") is not None:
            return ProbeOutcome(False, "grpc probes are not supported by this kubelet")
        return ProbeOutcome(False, "the probe has no handler (exec, httpGet or tcpSocket)")
    except ValueError as e:
        return ProbeOutcome(False, str(e))


async def _exec(spec: dict[str, Any], container_id: str, runtime: ExecRunner, timeout: float) -> ProbeOutcome:
    from minikube_py.runtime import DeadlineExceededError, RuntimeServiceError

    cmd = [str(c) for c in spec.get("command") or ()]
    if not cmd:
        return ProbeOutcome(False, "exec probe has no command")
    try:
        result = await runtime.exec_sync(container_id, cmd, timeout)
    except DeadlineExceededError:
        return ProbeOutcome(False, f"command {cmd!r} timed out")
    except RuntimeServiceError as e:
        return ProbeOutcome(False, str(e))
    output = (result.stdout + result.stderr).decode("utf-8", "replace")[:MAX_OUTPUT]
    if result.exit_code != 0:
        return ProbeOutcome(False, output or f"command {cmd!r} exited with {result.exit_code}")
    return ProbeOutcome(True, output)


async def _http_get(spec: dict[str, Any], container: dict[str, Any], pod_ip: str, timeout: float) -> ProbeOutcome:
    scheme = str(spec.get("scheme") or "HTTP").lower()
    host = str(spec.get("host") or pod_ip)
    port = resolve_port(spec.get("port"), container)
    path = str(spec.get("path") or "/")
    if not path.startswith("/"):
        path = "/" + path
    if not host:
        return ProbeOutcome(False, "the pod has no IP yet")
    url = f"{scheme}://{host}:{port}{path}"
    headers = {"User-Agent": "kube-probe/1.33", "Accept": "*/*"}
    for h in spec.get("httpHeaders") or ():
        if h.get("name"):
            headers[str(h["name"])] = str(h.get("value") or "")
    try:
        # Probes do not verify TLS, as the kubelet does not; redirects are followed.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                session.get(url, headers=headers, ssl=False) as resp:
            body = (await resp.content.read(MAX_OUTPUT)).decode("utf-8", "replace")
            if 200 <= resp.status < 400:
                return ProbeOutcome(True, body)
            return ProbeOutcome(False, f"HTTP probe failed with statuscode: {resp.status}")
    except TimeoutError:
        return ProbeOutcome(False, f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while '
                                   f"awaiting headers)")
    except aiohttp.ClientConnectorError as e:
        return ProbeOutcome(False, f'Get "{url}": dial tcp {host}:{port}: connect: {_os_reason(e.os_error)}')
    except aiohttp.ClientError as e:
        return ProbeOutcome(False, f'Get "{url}": {e}')


async def _tcp(spec: dict[str, Any], container: dict[str, Any], pod_ip: str, timeout: float) -> ProbeOutcome:
    host = str(spec.get("host") or pod_ip)
    port = resolve_port(spec.get("port"), container)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        return ProbeOutcome(False, f"dial tcp {host}:{port}: i/o timeout")
    except OSError as e:
        return ProbeOutcome(False, f"dial tcp {host}:{port}: connect: {_os_reason(e)}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeOutcome(True)


def _os_reason(e: OSError) -> str:
    return (os.strerror(e.errno) if e.errno else str(e)).lower()


class ProbeWorker:
    """Probes one container periodically; ``result`` is what the pod's status and restarts go by."""

    def __init__(self, kind: str, spec: ProbeSpec, attempt: Callable[[], Awaitable[ProbeOutcome]], *,
                 on_change: Callable[[ProbeWorker], None],
                 on_failure: Callable[[ProbeWorker, ProbeOutcome], None] | None = None,
                 started: Callable[[], bool] | None = None) -> None:
        self.kind = kind
        self.spec = spec
        self.attempt = attempt
        self.on_change = on_change
        self.on_failure = on_failure
        self.started = started
        self.result = {READINESS: FAILURE, LIVENESS: SUCCESS, STARTUP: UNKNOWN}[kind]
        self.last_output = ""
        self._successes = 0
        self._failures = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"probe-{self.kind}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def record(self, outcome: ProbeOutcome) -> None:
        """Count one attempt's outcome and move the result when a threshold is reached."""
        self.last_output = outcome.output
        if outcome.success:
            self._successes += 1
            self._failures = 0
            if self._successes >= self.spec.success_threshold:
                self._set(SUCCESS)
        else:
            self._failures += 1
            self._successes = 0
            if self.on_failure is not None:
                self.on_failure(self, outcome)
            if self._failures >= self.spec.failure_threshold:
                self._set(FAILURE)

    def _set(self, result: str) -> None:
        if result != self.result:
            self.result = result
            self.on_change(self)

    async def _run(self) -> None:
        await asyncio.sleep(self.spec.initial_delay)
        while True:
            if self.kind == STARTUP and self.result == SUCCESS:
                return  # a startup probe is done once it has succeeded
            if self.started is None or self.started():
                try:
                    outcome = await self.attempt()
                except Exception as e:  # a bug in a handler must not silently stop the probing
                    log.warning("%s probe raised %s: %s", self.kind, type(e).__name__, e)
                    outcome = ProbeOutcome(False, str(e))
                self.record(outcome)
                if self.kind in (LIVENESS, STARTUP) and self.result == FAILURE:
                    return  # the container is being restarted; its next run gets a new worker
            await asyncio.sleep(self.spec.period)
