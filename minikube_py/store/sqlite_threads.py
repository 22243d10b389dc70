"""Threads that own SQLite connections, so the event loop never waits on the disk.

A :class:`DbThreads` is a queue of jobs served by one or more threads, each with its own
connection. A thread takes every job queued at that moment (up to ``max_batch``) and hands the
batch to ``run_batch``: the writer runs a batch in one transaction (group commit: one fsync for many
writes), readers just run them one after another. Results travel back to the loop in one
``call_soon_threadsafe`` per batch rather than one per job.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .interface import StoreClosedError, StoreUnavailableError

C = TypeVar("C")  # what a job gets: a connection, or an object wrapping one


@dataclass(slots=True)
class Job(Generic[C]):
    fn: Callable[[C], Any]
    future: asyncio.Future[Any]


# run_batch(conn, jobs) -> a callback the loop runs to publish the results.
BatchRunner = Callable[[sqlite3.Connection, list[Job[Any]]], Callable[[], None]]


def settle(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    """Resolve futures on the loop thread; a caller that gave up (cancelled) is skipped."""
    for future, result, error in outcomes:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class DbThreads:
    def __init__(
        self,
        name: str,
        loop: asyncio.AbstractEventLoop,
        connect: Callable[[], sqlite3.Connection],
        run_batch: BatchRunner,
        *,
        threads: int = 1,
        max_batch: int = 256,
    ) -> None:
        self._loop = loop
        self._connect = connect
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Job[Any] | None] = queue.SimpleQueue()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True) for i in range(threads)
        ]
        self._ready: list[asyncio.Future[None]] = []

    async def start(self) -> None:
        """Start the threads; raise what opening a connection raised."""
        for t in self._threads:
            ready: asyncio.Future[None] = self._loop.create_future()
            self._ready.append(ready)
            t.start()
        try:
            await asyncio.gather(*self._ready)
        except BaseException:
            await self.stop()
            raise

    def submit(self, fn: Callable[[Any], Any]) -> asyncio.Future[Any]:
        if self._stopping:
            raise StoreClosedError("the store is closed")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put(Job(fn, future))
        return future

    async def stop(self) -> None:
        """Finish the jobs already queued, then close the connections. Idempotent."""
        if not self._stopping:
            self._stopping = True
            for _ in self._threads:
                self._queue.put(None)
        for t in self._threads:
            if t.is_alive():
                await asyncio.to_thread(t.join)

    def _call_soon(self, callback: Callable[[], None]) -> None:
        try:
            self._loop.call_soon_threadsafe(callback)
        except RuntimeError:  # the loop is gone: nobody is waiting any more
            pass

    def _serve(self) -> None:
        index = self._threads.index(threading.current_thread())
        ready = self._ready[index]
        try:
            conn = self._connect()
        except BaseException as e:  # handed to the loop, raised by start()
            error = e
            self._call_soon(lambda: ready.done() or ready.set_exception(error))
            return
        self._call_soon(lambda: ready.done() or ready.set_result(None))
        try:
            running = True
            while running:
                job = self._queue.get()
                if job is None:
                    break
                jobs = [job]
                while len(jobs) < self._max_batch:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        running = False
                        break
                    jobs.append(more)
                try:
                    deliver = self._run_batch(conn, jobs)
                except Exception as e:  # a bug or a dead disk: fail the batch, never leave it hanging
                    failure = StoreUnavailableError(f"sqlite store: {e!r}")
                    deliver = functools.partial(settle, [(j.future, None, failure) for j in jobs])
                self._call_soon(deliver)
        finally:
            conn.close()
