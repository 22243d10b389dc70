"""Container logs as the kubelet serves them: the CRI log files the runtime writes, one entry a line
(``<RFC3339Nano> stdout|stderr F|P <content>``), read back with kubectl's options.

As in the kubelet's ``kuberuntime/logs``: ``tailLines`` counts file entries, ``timestamps`` puts each
entry's own timestamp in front of it, a ``P`` (partial) entry is written without its newline so the
pieces join up again, and ``follow`` keeps reading until the container stops running.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

FOLLOW_POLL = 0.1
# How often a follower asks whether the container still runs (the runtime is a socket call away).
RUNNING_CHECK = 1.0
READ_CHUNK = 64 * 1024
_TS = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$")


class LogFormatError(ValueError):
    """A line that is not a CRI log entry."""


@dataclass(frozen=True)
class LogEntry:
    timestamp: str   # as written: RFC3339Nano
    time: float      # unix seconds
    stream: str      # stdout | stderr
    partial: bool
    content: bytes   # without the newline


def parse_timestamp(text: str) -> float:
    """RFC3339 with up to nanoseconds (Go's RFC3339Nano) -> unix seconds."""
    m = _TS.match(text)
    if m is None:
        raise LogFormatError(f"not an RFC3339 timestamp: {text!r}")
    base, frac, zone = m.groups()
    tz = dt.UTC if zone == "Z" else dt.datetime.strptime(zone.replace(":", ""), "%z").tzinfo
    when = dt.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=tz)
    return when.timestamp() + (int(frac.ljust(9, "0")) / 1e9 if frac else 0.0)


def format_timestamp(seconds: float) -> str:
    """Unix seconds -> RFC3339Nano in UTC (as the kubelet prints ``--timestamps``)."""
    ns = round(seconds * 1e9)
    secs, frac = divmod(ns, 1_000_000_000)
    text = dt.datetime.fromtimestamp(secs, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{frac:09d}".rstrip("0")
    return f"{text}.{digits}Z" if digits else f"{text}Z"


def parse_line(line: bytes) -> LogEntry:
    """One CRI log line (without its newline) -> LogEntry; LogFormatError when malformed."""
    parts = line.split(b" ", 3)
    if len(parts) < 3:
        raise LogFormatError(f"not a CRI log line: {line[:100]!r}")
    ts, stream, tag = parts[0].decode("ascii", "replace"), parts[1].decode("ascii", "replace"), parts[2]
    if stream not in ("stdout", "stderr"):
        raise LogFormatError(f"unknown stream {stream!r} in log line {line[:100]!r}")
    # The tag is F or P, possibly with more flags after a colon in later CRI versions.
    flags = tag.split(b":")
    if flags[0] not in (b"F", b"P"):
        raise LogFormatError(f"unknown tag {tag!r} in log line {line[:100]!r}")
    return LogEntry(ts, parse_timestamp(ts), stream, flags[0] == b"P", parts[3] if len(parts) > 3 else b"")


@dataclass(frozen=True)
class LogOptions:
    follow: bool = False
    tail_lines: int | None = None
    timestamps: bool = False
    since_time: float | None = None
    limit_bytes: int | None = None
    previous: bool = False

    @classmethod
    def from_query(cls, query: Mapping[str, str], now: float | None = None) -> LogOptions:
        """The kubelet's query (``follow tailLines timestamps sinceSeconds sinceTime limitBytes previous``)."""

        def flag(key: str) -> bool:
            raw = query.get(key, "")
            if raw.lower() in ("", "false", "0", "f"):
                return False
            if raw.lower() in ("true", "1", "t"):
                return True
            raise ValueError(f'invalid value for {key}: "{raw}" is not a boolean')

        def number(key: str, minimum: int) -> int | None:
            raw = query.get(key)
            if raw is None or raw == "":
                return None
            try:
                value = int(raw)
            except ValueError:
                raise ValueError(f'invalid value for {key}: "{raw}" is not an integer') from None
            if value < minimum:
                raise ValueError(f"{key} must be at least {minimum}, got {value}")
            return value

        since: float | None = None
        seconds = number("sinceSeconds", 1)
        if seconds is not None:
            since = (now if now is not None else dt.datetime.now(dt.UTC).timestamp()) - seconds
        if query.get("sinceTime"):
            if since is not None:
                raise ValueError("at most one of sinceTime or sinceSeconds may be specified")
            try:
                since = parse_timestamp(query["sinceTime"])
            except LogFormatError as e:
                raise ValueError(f"sinceTime: {e}") from None
        return cls(follow=flag("follow"), tail_lines=number("tailLines", 0), timestamps=flag("timestamps"),
                   since_time=since, limit_bytes=number("limitBytes", 1), previous=flag("previous"))


class _Writer:
    """Formats entries and enforces limitBytes; ``write`` returns False once the limit is reached."""

    def __init__(self, sink: Callable[[bytes], Awaitable[None]], options: LogOptions) -> None:
        self.sink = sink
        self.options = options
        self.sent = 0

    @property
    def full(self) -> bool:
        return self.options.limit_bytes is not None and self.sent >= self.options.limit_bytes

    async def write(self, entry: LogEntry) -> bool:
        if self.options.since_time is not None and entry.time < self.options.since_time:
            return True
        data = entry.content if entry.partial else entry.content + b"\n"
        if self.options.timestamps:
            data = entry.timestamp.encode() + b" " + data
        if self.options.limit_bytes is not None:
            data = data[:max(0, self.options.limit_bytes - self.sent)]
        if data:
            await self.sink(data)
            self.sent += len(data)
        return not self.full


def _entries(data: bytes) -> list[LogEntry]:
    out = []
    for line in data.split(b"\n"):
        if not line:
            continue
        try:
            out.append(parse_line(line))
        except LogFormatError:
            continue  # a torn or foreign line is skipped, as the kubelet logs and skips it
    return out


def tail_offset(data: bytes, lines: int) -> int:
    """Where the last ``lines`` complete lines of ``data`` start."""
    if lines <= 0:
        return len(data)
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    pos = end
    for _ in range(lines):
        pos = data.rfind(b"\n", 0, pos)
        if pos < 0:
            return 0
    return pos + 1


async def write_log(path: Path, options: LogOptions, sink: Callable[[bytes], Awaitable[None]],
                    still_running: Callable[[], Awaitable[bool]] | None = None) -> None:
    """Write the log at ``path`` to ``sink`` per ``options``; with ``follow``, keep going while
    ``still_running()`` says so. A missing file is an empty log (the container has not written yet)."""
    writer = _Writer(sink, options)
    data = await asyncio.to_thread(_read_all, path)
    # Only whole lines now; a follower picks the unfinished last line up with the rest.
    complete = data.rfind(b"\n") + 1
    start = tail_offset(data[:complete], options.tail_lines) if options.tail_lines is not None else 0
    for entry in _entries(data[start:complete]):
        if not await writer.write(entry):
            return
    if not options.follow or still_running is None:
        return
    await _follow(path, complete, writer, still_running)


def _read_all(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


async def _follow(path: Path, offset: int, writer: _Writer, still_running: Callable[[], Awaitable[bool]]) -> None:
    loop = asyncio.get_running_loop()
    pending = b""
    last_check = loop.time()
    running = True
    while True:
        chunk = b""
        try:
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read(READ_CHUNK)
        except FileNotFoundError:
            pass
        if chunk:
            offset += len(chunk)
            pending += chunk
            cut = pending.rfind(b"\n") + 1
            for entry in _entries(pending[:cut]):
                if not await writer.write(entry):
                    return
            pending = pending[cut:]
            continue
        if not running:
            return  # stopped, and everything it wrote has been read
        await asyncio.sleep(FOLLOW_POLL)
        if loop.time() - last_check >= RUNNING_CHECK:
            last_check = loop.time()
            running = await still_running()
