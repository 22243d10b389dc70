"""The crash-loop/image back-off and CRI log reading, without a runtime."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from minikube_py.kubelet.backoff import BackOff, format_duration
from minikube_py.kubelet.logs import (
    LogFormatError,
    LogOptions,
    format_timestamp,
    parse_line,
    parse_timestamp,
    write_log,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_to_the_cap_and_resets_after_quiet() -> None:
    clock = Clock()
    b = BackOff(10, 300, clock=clock)
    assert not b.in_backoff_since("k", clock.now)          # never failed: no waiting
    delays = [b.next("k", clock.now) for _ in range(7)]
    assert delays == [10, 20, 40, 80, 160, 300, 300]
    finished = clock.now
    clock.now += 299
    assert b.in_backoff_since("k", finished)
    assert b.remaining("k", finished) == pytest.approx(1)
    clock.now += 2
    assert not b.in_backoff_since("k", finished)
    # Ten quiet minutes (twice the cap) later the next failure starts from the initial delay again.
    clock.now += 601
    assert b.next("k", clock.now) == 10


def test_backoff_since_update_and_forget() -> None:
    clock = Clock()
    b = BackOff(1, 4, clock=clock)
    b.next("uid1_img")
    b.next("uid2_img")
    assert b.in_backoff_since_update("uid1_img")
    clock.now += 1.5
    assert not b.in_backoff_since_update("uid1_img")
    b.forget_prefix("uid1")
    assert b.get("uid1_img") == 0 and b.get("uid2_img") == 1
    with pytest.raises(ValueError):
        BackOff(0, 1)


@pytest.mark.parametrize(("seconds", "text"), [(10, "10s"), (20, "20s"), (80, "1m20s"), (300, "5m0s"), (0.5, "0.5s")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_parse_line_and_timestamps() -> None:
    e = parse_line(b"2024-05-01T10:00:00.123456789Z stdout F hello world")
    assert (e.stream, e.partial, e.content) == ("stdout", False, b"hello world")
    assert e.time == pytest.approx(parse_timestamp("2024-05-01T10:00:00Z") + 0.123456789)
    assert parse_line(b"2024-05-01T10:00:00Z stderr P ").content == b""
    assert parse_timestamp("2024-05-01T12:00:00+02:00") == parse_timestamp("2024-05-01T10:00:00Z")
    assert format_timestamp(parse_timestamp("2024-05-01T10:00:00.5Z")) == "2024-05-01T10:00:00.5Z"
    for bad in (b"garbage", b"2024-05-01T10:00:00Z stdin F x", b"2024-05-01T10:00:00Z stdout X x", b"nope stdout F x"):
        with pytest.raises(LogFormatError):
            parse_line(bad)


def _log(tmp_path: Path) -> Path:
    lines = [
        "2024-05-01T10:00:00Z stdout F one",
        "2024-05-01T10:00:01Z stderr F two",
        "2024-05-01T10:00:02Z stdout P thr",
        "2024-05-01T10:00:03Z stdout F ee",
        "not a log line",
        "2024-05-01T10:00:04Z stdout F four",
    ]
    path = tmp_path / "0.log"
    path.write_text("\n".join(lines) + "\n")
    return path


async def _read(path: Path, query: dict[str, str], **kw: object) -> str:
    out: list[bytes] = []

    async def sink(data: bytes) -> None:
        out.append(data)

    await write_log(path, LogOptions.from_query(query, now=parse_timestamp("2024-05-01T10:00:05Z")), sink, **kw)
    return b"".join(out).decode()


async def test_log_options_tail_since_limit_timestamps(tmp_path: Path) -> None:
    path = _log(tmp_path)
    assert await _read(path, {}) == "one\ntwo\nthree\nfour\n"           # partials joined, garbage skipped
    assert await _read(path, {"tailLines": "2"}) == "four\n"             # entries counted, the torn one too
    assert await _read(path, {"tailLines": "0"}) == ""
    assert await _read(path, {"sinceSeconds": "3"}) == "three\nfour\n"
    assert await _read(path, {"sinceSeconds": "2"}) == "ee\nfour\n"
    assert await _read(path, {"sinceTime": "2024-05-01T10:00:01Z", "limitBytes": "6"}) == "two\nth"
    assert (await _read(path, {"timestamps": "true", "tailLines": "1"})) == "2024-05-01T10:00:04Z four\n"
    assert await _read(tmp_path / "missing.log", {}) == ""
    for bad in ({"tailLines": "x"}, {"limitBytes": "0"}, {"follow": "maybe"},
                {"sinceSeconds": "1", "sinceTime": "2024-05-01T10:00:01Z"}):
        with pytest.raises(ValueError):
            LogOptions.from_query(bad)


async def test_log_follow_ends_when_the_container_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import minikube_py.kubelet.logs as logs

    monkeypatch.setattr(logs, "FOLLOW_POLL", 0.01)
    monkeypatch.setattr(logs, "RUNNING_CHECK", 0.05)
    path = tmp_path / "0.log"
    path.write_text("2024-05-01T10:00:00Z stdout F first\n2024-05-01T10:00:00Z stdout F sec")
    running = True

    async def still_running() -> bool:
        return running

    task = asyncio.ensure_future(_read(path, {"follow": "true"}, still_running=still_running))
    await asyncio.sleep(0.1)
    assert not task.done()
    with path.open("a") as f:
        f.write("ond\n2024-05-01T10:00:01Z stdout F third\n")
    await asyncio.sleep(0.1)
    running = False
    assert await asyncio.wait_for(task, 5) == "first\nsecond\nthird\n"
