"""The kubelet's per-key back-off (client-go's ``flowcontrol.Backoff``): restarting a crashed container
and re-pulling an image that failed both wait 10 s, then 20 s, 40 s ... up to 5 minutes.

A key whose last failure is older than twice the cap starts again from the initial delay, so a
container that ran well for ten minutes and then crashed is restarted at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

INITIAL = 10.0
CAP = 300.0


@dataclass
class _Entry:
    delay: float
    last_update: float


class BackOff:
    """Delays per key; ``clock`` is monotonic-like seconds (injectable for tests)."""

    def __init__(self, initial: float = INITIAL, cap: float = CAP,
                 clock: Callable[[], float] = time.time) -> None:
        if initial <= 0 or cap < initial:
            raise ValueError(f"need 0 < initial <= cap, got initial={initial} cap={cap}")
        self.initial = initial
        self.cap = cap
        self.clock = clock
        self._entries: dict[str, _Entry] = {}

    def _expired(self, event_time: float, entry: _Entry) -> bool:
        return event_time - entry.last_update > 2 * self.cap

    def get(self, key: str) -> float:
        """The current delay of ``key`` (0 when it has none)."""
        entry = self._entries.get(key)
        return entry.delay if entry is not None else 0.0

    def next(self, key: str, event_time: float | None = None) -> float:
        """Count one more failure of ``key`` (at ``event_time``); the delay it now has."""
        now = self.clock()
        at = now if event_time is None else event_time
        entry = self._entries.get(key)
        if entry is None or self._expired(at, entry):
            entry = self._entries[key] = _Entry(self.initial, now)
        else:
            entry.delay = min(entry.delay * 2, self.cap)
            entry.last_update = now
        return entry.delay

    def in_backoff_since(self, key: str, event_time: float) -> bool:
        """Whether ``key`` must still wait, counting its delay from ``event_time`` (a container's finish)."""
        entry = self._entries.get(key)
        if entry is None or self._expired(event_time, entry):
            return False
        return self.clock() - event_time < entry.delay

    def in_backoff_since_update(self, key: str) -> bool:
        """Whether ``key`` must still wait, counting from its last failure (an image pull)."""
        entry = self._entries.get(key)
        if entry is None:
            return False
        return self.clock() - entry.last_update < entry.delay

    def remaining(self, key: str, event_time: float | None = None) -> float:
        """Seconds until ``key`` may be tried again (0 when it may now)."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        start = entry.last_update if event_time is None else event_time
        return max(0.0, start + entry.delay - self.clock())

    def reset(self, key: str) -> None:
        self._entries.pop(key, None)

    def forget_prefix(self, prefix: str) -> None:
        """Drop every key of a pod (keys start with its uid) once the pod is gone."""
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]


def format_duration(seconds: float) -> str:
    """Go's ``time.Duration`` text for whole seconds and minutes: ``10s``, ``1m20s``, ``5m0s``."""
    total = round(seconds, 3)
    if total < 60:
        return f"{total:g}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{int(minutes)}m{secs:g}s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)}h{int(minutes)}m{secs:g}s"
