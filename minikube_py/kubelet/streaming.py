"""The exec/attach stream protocol, server side: a WebSocket speaking ``v5.channel.k8s.io`` (or v4).

Every binary message starts with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error (one JSON
``Status`` at the end), 4 resize (JSON ``{"Width":W,"Height":H}``) and, in v5 only, 255 close
(``[255, channel]``: the client has no more stdin). ``serve_exec`` upgrades an aiohttp request and
connects the channels to an ``ExecProcess``; ``SubprocessExec`` is one backed by a local process
(with a pseudo-terminal for ``tty=true``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import pty
import signal
import struct
import termios
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiohttp import WSMsgType, web

log = logging.getLogger("minikube_py.kubelet.streaming")

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
PROTOCOL_V5 = "v5.channel.k8s.io"
PROTOCOL_V4 = "v4.channel.k8s.io"
# Preference order when a client offers several.
WEBSOCKET_PROTOCOLS = (PROTOCOL_V5, PROTOCOL_V4)

READ_CHUNK = 32 * 1024
# After the process exits, how long its output may still drain (a background child can hold the pipe).
DRAIN_TIMEOUT = 5.0
MAX_MESSAGE = 4 * 1024 * 1024


class ExecProcess(Protocol):
    """A started command whose streams ``serve_exec`` relays. Reads return b"" at end of stream."""

    async def write_stdin(self, data: bytes) -> None: ...

    async def close_stdin(self) -> None: ...

    async def read_stdout(self) -> bytes: ...

    async def read_stderr(self) -> bytes: ...

    def resize(self, width: int, height: int) -> None: ...

    async def wait(self) -> int: ...

    def kill(self) -> None: ...

    def close(self) -> None:
        """Release what the process held (called once, after the session)."""


class StreamRequestError(ValueError):
    """The query of an exec request is not acceptable (answered with 400 before any upgrade)."""


@dataclass(frozen=True)
class StreamOptions:
    command: tuple[str, ...]
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True
    tty: bool = False

    @classmethod
    def from_query(cls, query: Mapping[str, str], commands: list[str]) -> StreamOptions:
        """Read ``stdin= stdout= stderr= tty=`` and the repeated ``command=`` as kube-apiserver does."""
        opts = cls(tuple(commands), parse_bool(query, "stdin"), parse_bool(query, "stdout"),
                   parse_bool(query, "stderr"), parse_bool(query, "tty"))
        if not opts.command:
            raise StreamRequestError("you must specify at least one command for the container")
        if not (opts.stdin or opts.stdout or opts.stderr):
            raise StreamRequestError("you must specify at least 1 of stdin, stdout, stderr")
        if opts.tty and opts.stderr:
            # client-go never asks for both; with a terminal, stderr goes to stdout.
            opts = cls(opts.command, opts.stdin, opts.stdout, False, True)
        return opts


def parse_bool(query: Mapping[str, str], key: str) -> bool:
    raw = query.get(key)
    if raw is None or raw == "":
        return False
    if raw in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if raw in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise StreamRequestError(f'invalid value for {key}: "{raw}" is not a boolean')


# ---- the final Status on channel 3 --------------------------------------------------------------------

def exit_status(code: int) -> dict[str, Any]:
    """The Status the kubelet sends when the command ends; kubectl exits with ``code``."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: exit status {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def internal_error_status(message: str) -> dict[str, Any]:
    """The Status of a command that could not run (the kubelet's NewInternalError)."""
    return {"metadata": {}, "status": "Failure", "message": f"Internal error occurred: {message}",
            "reason": "InternalError", "details": {"causes": [{"message": message}]}, "code": 500}


def status_response(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    return web.Response(status=code, body=orjson.dumps(body), content_type="application/json")


def parse_resize(data: bytes) -> tuple[int, int] | None:
    """``{"Width":W,"Height":H}`` -> (W, H); None for anything malformed (ignored, as the kubelet does)."""
    try:
        size = orjson.loads(data)
        width, height = int(size.get("Width", 0)), int(size.get("Height", 0))
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return None
    if not (0 <= width <= 0xFFFF and 0 <= height <= 0xFFFF):
        return None
    return width, height


# ---- the WebSocket side -------------------------------------------------------------------------------

def is_websocket_upgrade(request: web.Request) -> bool:
    return (request.headers.get("Upgrade", "").lower() == "websocket"
            and "upgrade" in request.headers.get("Connection", "").lower())


async def serve_exec(request: web.Request, start: Callable[[StreamOptions], Awaitable[ExecProcess]],
                     options: StreamOptions | None = None) -> web.StreamResponse:
    """Upgrade ``request`` to a channel WebSocket, start the command and relay until it exits.

    Bad queries and missing upgrades get a 400 Status before any upgrade; failures to start the
    command arrive as a Failure Status on channel 3, as from the real kubelet.
    """
    if options is None:
        try:
            options = StreamOptions.from_query(request.query, request.query.getall("command", []))
        except StreamRequestError as e:
            return status_response(400, "BadRequest", str(e))
    ws = web.WebSocketResponse(protocols=WEBSOCKET_PROTOCOLS, max_msg_size=MAX_MESSAGE)
    ready = ws.can_prepare(request)
    if not ready.ok:
        return status_response(400, "BadRequest", "exec needs a WebSocket upgrade (Upgrade: websocket)")
    if ready.protocol is None:
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        return status_response(400, "BadRequest", f"unsupported WebSocket subprotocols {offered!r}; "
                                                  f"this server speaks {', '.join(WEBSOCKET_PROTOCOLS)}")
    await ws.prepare(request)
    channels = ChannelSocket(ws, ready.protocol)
    try:
        try:
            proc = await start(options)
        except Exception as e:  # the client reads why on the error channel
            log.info("exec %s failed to start: %s", options.command, e)
            why = (f'exec: "{options.command[0]}": {e.strerror.lower()}'
                   if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__)
            await channels.finish(internal_error_status(f"error executing command in container: {why}"))
            return ws
        try:
            await relay_process(channels, proc, options)
        finally:
            proc.close()
    finally:
        await ws.close()
    return ws


class ChannelSocket:
    """A channel WebSocket: one sender at a time, and the protocol version that decides about close."""

    def __init__(self, ws: web.WebSocketResponse, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol
        self._send_lock = asyncio.Lock()

    async def send(self, channel: int, data: bytes) -> None:
        async with self._send_lock:
            await self.ws.send_bytes(bytes((channel,)) + data)

    async def finish(self, status: dict[str, Any], reader: asyncio.Future[None] | None = None) -> None:
        """Send the final Status, then close with a full handshake.

        A receive still pending would make aiohttp drop the TCP connection right after our close
        frame, before the peer's answer; the peer would then see an abnormal closure (1006).
        """
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.send(ERROR, orjson.dumps(status))
        if reader is not None and not reader.done():
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        await self.ws.close()


async def relay_process(channels: ChannelSocket, proc: ExecProcess, options: StreamOptions) -> None:
    """Pump stdout/stderr out and stdin/resize in until the process exits; then send its Status."""
    client_gone = asyncio.Event()

    async def pump(read: Callable[[], Awaitable[bytes]], channel: int) -> None:
        while data := await read():
            await channels.send(channel, data)

    async def receive() -> None:
        try:
            async for msg in channels.ws:
                if msg.type != WSMsgType.BINARY or not msg.data:
                    continue  # the v4/v5 protocols are binary only
                channel, payload = msg.data[0], msg.data[1:]
                log.debug("exec channel %d: %d bytes", channel, len(payload))
                if channel == STDIN and options.stdin:
                    await proc.write_stdin(payload)
                elif channel == RESIZE and options.tty:
                    size = parse_resize(payload)
                    if size is not None:
                        proc.resize(*size)
                elif channel == CLOSE and channels.protocol == PROTOCOL_V5 and payload[:1] == bytes((STDIN,)):
                    await proc.close_stdin()
        except (ConnectionError, BrokenPipeError) as e:
            log.debug("exec stdin ended: %s", e)
        finally:
            client_gone.set()

    pumps = [asyncio.ensure_future(pump(proc.read_stdout, STDOUT))]
    if options.stderr and not options.tty:
        pumps.append(asyncio.ensure_future(pump(proc.read_stderr, STDERR)))
    receiver = asyncio.ensure_future(receive())
    exited = asyncio.ensure_future(proc.wait())
    gone = asyncio.ensure_future(client_gone.wait())
    try:
        await asyncio.wait([exited, gone], return_when=asyncio.FIRST_COMPLETED)
        if not exited.done():
            # The client hung up first: nobody reads the output any more.
            proc.kill()
            await exited
            return
        done, _ = await asyncio.wait(pumps, timeout=DRAIN_TIMEOUT)
        for p in done:
            if p.exception() is not None and not isinstance(p.exception(), ConnectionError):
                log.warning("exec output pump failed: %r", p.exception())
        await channels.finish(exit_status(exited.result()), receiver)
    finally:
        if not exited.done():
            # Cancelled (the server stops, or aiohttp saw the connection drop): no orphan commands.
            proc.kill()
        for t in (*pumps, receiver, gone, exited):
            t.cancel()
        await asyncio.gather(*pumps, receiver, gone, exited, return_exceptions=True)


# ---- a local process as the exec target ---------------------------------------------------------------

class SubprocessExec:
    """A local process: pipes for stdin/stdout/stderr, or one pseudo-terminal when ``tty`` is set."""

    def __init__(self, proc: asyncio.subprocess.Process, master_fd: int | None = None) -> None:
        self.proc = proc
        self._master = master_fd
        self._pty_reader: _PtyReader | None = _PtyReader(master_fd) if master_fd is not None else None

    @classmethod
    async def start(cls, options: StreamOptions, *, cwd: str | None = None,
                    env: Mapping[str, str] | None = None) -> SubprocessExec:
        if options.tty:
            master, slave = pty.openpty()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *options.command, stdin=slave, stdout=slave, stderr=slave, cwd=cwd,
                    env=dict(env) if env is not None else None, start_new_session=True)
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)
            os.set_blocking(master, False)
            return cls(proc, master)
        pipe, devnull = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        proc = await asyncio.create_subprocess_exec(
            *options.command, stdin=pipe if options.stdin else devnull,
            stdout=pipe if options.stdout else devnull, stderr=pipe if options.stderr else devnull,
            cwd=cwd, env=dict(env) if env is not None else None, start_new_session=True)
        return cls(proc)

    async def write_stdin(self, data: bytes) -> None:
        if self._master is not None:
            await _write_fd(self._master, data)
            return
        if self.proc.stdin is None or self.proc.stdin.is_closing():
            return
        try:
            self.proc.stdin.write(data)
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the command stopped reading; its exit status tells the rest

    async def close_stdin(self) -> None:
        if self._master is not None:
            await _write_fd(self._master, b"\x04")  # a terminal's end of input is ^D
            return
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await self.proc.stdin.wait_closed()

    async def read_stdout(self) -> bytes:
        if self._pty_reader is not None:
            return await self._pty_reader.read()
        return await self.proc.stdout.read(READ_CHUNK) if self.proc.stdout is not None else b""

    async def read_stderr(self) -> bytes:
        if self._pty_reader is not None:
            return b""
        return await self.proc.stderr.read(READ_CHUNK) if self.proc.stderr is not None else b""

    def resize(self, width: int, height: int) -> None:
        if self._master is not None:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    async def wait(self) -> int:
        code = await self.proc.wait()
        # A signal-killed command exits 128+N, as a shell or container runtime reports it.
        return 128 - code if code < 0 else code

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def close(self) -> None:
        if self._pty_reader is not None:
            self._pty_reader.stop()
        if self._master is not None:
            with contextlib.suppress(OSError):
                os.close(self._master)
            self._master = None


class _PtyReader:
    """Reads a pty master without a thread. Linux reports the slave side's last close as EIO."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)
        self._eof = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._on_readable)
        self._paused = False

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno != errno.EIO:
                log.debug("pty read failed: %s", e)
            data = b""
        if not data:
            self.stop()
            self._eof.set()
            self._queue.put_nowait(b"")  # never full here: a full queue pauses this reader
            return
        self._queue.put_nowait(data)
        if self._queue.full():
            # Back-pressure: stop reading until the consumer catches up.
            self._loop.remove_reader(self._fd)
            self._paused = True

    async def read(self) -> bytes:
        if self._eof.is_set() and self._queue.empty():
            return b""
        data = await self._queue.get()
        if self._paused and not self._eof.is_set():
            self._paused = False
            self._loop.add_reader(self._fd, self._on_readable)
        return data

    def stop(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._fd)


async def _write_fd(fd: int, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
            view = view[n:]
        except BlockingIOError:
            writable = loop.create_future()
            loop.add_writer(fd, writable.set_result, None)
            try:
                await writable
            finally:
                loop.remove_writer(fd)
        except OSError:
            return  # the terminal is gone; the exit status tells the rest


async def relay_websockets(client: Any, kubelet: Any) -> None:
    """Copy messages both ways until either side closes; then close the other with the same code.
    Both hops of an exec use it: kubectl <-> API server <-> kubelet, and kubelet <-> runtime."""

    async def copy(src: Any, dst: Any) -> None:
        async for msg in src:
            if msg.type == WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type == WSMsgType.ERROR:
                break

    to_kubelet = asyncio.ensure_future(copy(client, kubelet))
    to_client = asyncio.ensure_future(copy(kubelet, client))
    try:
        done, _ = await asyncio.wait([to_kubelet, to_client], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                log.info("exec relay ended: %r", t.exception())
        if to_client in done:
            # The kubelet finished (its Status already went out): close the client the same way, but
            # never with a code reserved for "no frame seen" (1005, 1006, 1015): clients reject those.
            code = kubelet.close_code or 1000
            await client.close(code=code if 1000 <= code < 5000 and code not in (1005, 1006, 1015) else 1000)
        else:
            await kubelet.close()
    finally:
        for t in (to_kubelet, to_client):
            t.cancel()
        await asyncio.gather(to_kubelet, to_client, return_exceptions=True)
        if not client.closed:
            await client.close()
