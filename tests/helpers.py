"""Helpers shared by the test suites."""

from __future__ import annotations

import asyncio
import inspect
import signal
import subprocess
from collections.abc import Callable
from typing import Any


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
    """Send ``sig`` to a process still running and wait for it; SIGKILL it when ``timeout`` passes
    first. Returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


async def eventually(check: Callable[[], Any], what: str = "condition", *, timeout: float = 15.0,
                     interval: float = 0.1, retry_assertions: bool = False) -> Any:
    """Poll ``check`` (plain, or returning an awaitable) until it returns something truthy, and return
    that. After ``timeout`` seconds fail naming ``what`` and the last result; with ``retry_assertions``
    an AssertionError from ``check`` is retried too, and the last one is raised at the timeout.

    Each suite binds its own timeout: a generous bound on a noisy machine, not a performance assertion.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    error: AssertionError | None = None
    while True:
        try:
            last = check()
            if inspect.isawaitable(last):
                last = await last
            if last:
                return last
        except AssertionError as e:
            if not retry_assertions:
                raise
            error = e
        if loop.time() > deadline:
            if error is not None:
                raise error
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last result: {last!r}")
        await asyncio.sleep(interval)
