"""Exec over SPDY/3.1 (kubectl 1.27-1.29, and newer ones after a WebSocket fallback), server side.

After the ``101 Switching Protocols`` the connection carries SPDY/3 frames. The client opens one
stream per channel (``streamtype`` header: error, stdin, stdout, stderr, resize); this module answers
each with SYN_REPLY and translates the streams to and from the kubelet's channel WebSocket
(v5.channel.k8s.io): stdin DATA -> channel 0, its FIN -> close channel 0xFF 0, resize -> channel 4;
channels 1/2 -> DATA on stdout/stderr; the Status on channel 3 goes, after FIN on the output streams,
to the error stream with FIN. Flow control is not enforced: client-go's spdystream neither sends
nor honours WINDOW_UPDATE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import zlib
from dataclasses import dataclass, field

import aiohttp
from aiohttp import WSMsgType, web

from minikube_py.api import errors
from minikube_py.kubelet.streaming import (
    CLOSE,
    ERROR,
    PROTOCOL_V4,
    PROTOCOL_V5,
    RESIZE,
    STDERR,
    STDIN,
    STDOUT,
    StreamOptions,
)

log = logging.getLogger("minikube_py.apiserver.spdy")

# Stream protocol versions this server can speak over SPDY, in preference order.
SPDY_PROTOCOLS = (PROTOCOL_V5, PROTOCOL_V4)
STREAM_SETUP_TIMEOUT = 30.0  # kubelet's streamCreationTimeout
TEARDOWN_TIMEOUT = 5.0
MAX_FRAME = 16 * 1024 * 1024
MAX_HEADER_BLOCK = 1024 * 1024
DATA_CHUNK = 32 * 1024

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
RST_PROTOCOL_ERROR, RST_INVALID_STREAM, RST_CANCEL = 1, 2, 5


def _header_dictionary() -> bytes:
    """The zlib dictionary of SPDY/3 header compression (draft 3, section 2.6.10.1)."""
    words = ("options head post put delete trace accept accept-charset accept-encoding accept-language "
             "accept-ranges age allow authorization cache-control connection content-base content-encoding "
             "content-language content-length content-location content-md5 content-range content-type date "
             "etag expect expires from host if-match if-modified-since if-none-match if-range "
             "if-unmodified-since last-modified location max-forwards pragma proxy-authenticate "
             "proxy-authorization range referer retry-after server te trailer transfer-encoding upgrade "
             "user-agent vary via warning www-authenticate method get status").split()
    words += ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
    tail = ("100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
            "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
            "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
            "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
            "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
            "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
            "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.")
    out = b"".join(struct.pack(">I", len(w)) + w.encode() for w in words) + tail.encode()
    # Peers check the dictionary by its Adler-32 (the zlib DICTID): one wrong byte breaks every header.
    if len(out) != 1423 or zlib.adler32(out) != 0xE3C6A7C2:
        raise AssertionError("SPDY/3 header dictionary is corrupt")
    return out


HEADER_DICTIONARY = _header_dictionary()


class SpdyProtocolError(Exception):
    pass


# ---- frames -----------------------------------------------------------------------------------------------

@dataclass
class Frame:
    control: bool
    type: int  # control frame type; 0 for DATA
    flags: int
    stream_id: int = 0
    data: bytes = b""  # DATA payload, or the raw control payload
    headers: dict[str, list[str]] = field(default_factory=dict)

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


class FrameCodec:
    """SPDY/3 framing with one header compression context per direction."""

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(zdict=HEADER_DICTIONARY)
        self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15,
                                         zdict=HEADER_DICTIONARY)
        self._buf = bytearray()

    # reading
    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames = []
        while len(self._buf) >= 8:
            length = int.from_bytes(self._buf[5:8], "big")
            if length > MAX_FRAME:
                raise SpdyProtocolError(f"frame of {length} bytes exceeds the limit")
            if len(self._buf) < 8 + length:
                break
            head, payload = bytes(self._buf[:8]), bytes(self._buf[8:8 + length])
            del self._buf[:8 + length]
            frames.append(self._parse(head, payload))
        return frames

    def _parse(self, head: bytes, payload: bytes) -> Frame:
        first, flags = int.from_bytes(head[:4], "big"), head[4]
        if not first & 0x80000000:
            return Frame(False, 0, flags, first & 0x7FFFFFFF, payload)
        version, ftype = (first >> 16) & 0x7FFF, first & 0xFFFF
        if version != 3:
            raise SpdyProtocolError(f"unsupported SPDY version {version}")
        frame = Frame(True, ftype, flags, 0, payload)
        if ftype in (SYN_STREAM, SYN_REPLY, RST_STREAM, HEADERS, WINDOW_UPDATE):
            if len(payload) < 4:
                raise SpdyProtocolError(f"control frame {ftype} is truncated")
            frame.stream_id = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
        if ftype == SYN_STREAM:
            if len(payload) < 10:
                raise SpdyProtocolError("SYN_STREAM is truncated")
            frame.headers = self._decode_headers(payload[10:])
        elif ftype in (SYN_REPLY, HEADERS):
            frame.headers = self._decode_headers(payload[4:])
        return frame

    def _decode_headers(self, block: bytes) -> dict[str, list[str]]:
        try:
            raw = self._inflate.decompress(block, MAX_HEADER_BLOCK)
        except zlib.error as e:
            raise SpdyProtocolError(f"header block does not decompress: {e}") from None
        if self._inflate.unconsumed_tail:
            raise SpdyProtocolError("header block too large")
        headers: dict[str, list[str]] = {}
        try:
            (count,), pos = struct.unpack_from(">I", raw, 0), 4
            for _ in range(count):
                (n,) = struct.unpack_from(">I", raw, pos)
                name = raw[pos + 4:pos + 4 + n].decode("latin-1")
                pos += 4 + n
                (n,) = struct.unpack_from(">I", raw, pos)
                value = raw[pos + 4:pos + 4 + n].decode("latin-1")
                pos += 4 + n
                headers.setdefault(name.lower(), []).extend(value.split("\x00"))
        except struct.error:
            raise SpdyProtocolError("header block is truncated") from None
        return headers

    # writing
    def _encode_headers(self, headers: dict[str, str]) -> bytes:
        raw = struct.pack(">I", len(headers)) + b"".join(
            struct.pack(">I", len(k)) + k.lower().encode() + struct.pack(">I", len(v)) + v.encode()
            for k, v in headers.items())
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    @staticmethod
    def control(ftype: int, flags: int, payload: bytes) -> bytes:
        return struct.pack(">HHI", 0x8003, ftype, (flags << 24) | len(payload)) + payload

    def syn_reply(self, stream_id: int, headers: dict[str, str] | None = None, fin: bool = False) -> bytes:
        block = self._encode_headers(headers or {})
        return self.control(SYN_REPLY, FLAG_FIN if fin else 0, struct.pack(">I", stream_id) + block)

    @staticmethod
    def data(stream_id: int, payload: bytes, fin: bool = False) -> bytes:
        flags = FLAG_FIN if fin else 0
        return struct.pack(">II", stream_id & 0x7FFFFFFF, (flags << 24) | len(payload)) + payload

    @classmethod
    def rst(cls, stream_id: int, status: int) -> bytes:
        return cls.control(RST_STREAM, 0, struct.pack(">II", stream_id, status))

    @classmethod
    def goaway(cls, last_stream_id: int, status: int = 0) -> bytes:
        return cls.control(GOAWAY, 0, struct.pack(">II", last_stream_id, status))


# ---- the exec session -----------------------------------------------------------------------------------

def negotiate_spdy_protocol(request: web.Request) -> str:
    """The stream protocol picked from the client's ``X-Stream-Protocol-Version`` headers."""
    offered = [v.strip() for h in request.headers.getall("X-Stream-Protocol-Version", [])
               for v in h.split(",") if v.strip()]
    for version in offered:
        if version in SPDY_PROTOCOLS:
            return version
    raise errors.bad_request(f"exec over SPDY needs stream protocol {' or '.join(SPDY_PROTOCOLS)}; "
                             f"the client offered {', '.join(offered) or 'none'}")


class _ParserAdapter:
    """Stands in for aiohttp's payload parser after the upgrade: raw connection bytes go to a queue."""

    def __init__(self, queue: asyncio.Queue[bytes | None]) -> None:
        self._queue = queue

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._queue.put_nowait(bytes(data))
        return False, b""

    def feed_eof(self) -> None:
        self._queue.put_nowait(None)


class SpdyExecSession:
    def __init__(self, request: web.Request, kubelet: aiohttp.ClientWebSocketResponse,
                 opts: StreamOptions) -> None:
        self.request = request
        self.kubelet = kubelet
        self.opts = opts
        self.codec = FrameCodec()
        self.incoming: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.streams: dict[str, int] = {}
        self.ready = asyncio.Event()
        self.client_done = asyncio.Event()
        self.last_stream_id = 0
        self._resize_buf = b""
        self._transport: asyncio.Transport | None = None
        self._write_lock = asyncio.Lock()
        self._needed = {"error"} | {name for name, wanted in (
            ("stdin", opts.stdin), ("stdout", opts.stdout), ("stderr", opts.stderr and not opts.tty),
            ("resize", opts.tty)) if wanted}

    async def write(self, data: bytes) -> None:
        async with self._write_lock:
            if self._transport is None or self._transport.is_closing():
                raise ConnectionResetError("the client connection is closed")
            self._transport.write(data)
            drain = getattr(self.request.protocol, "_drain_helper", None)
            if drain is not None:  # aiohttp's back-pressure: wait while the transport is paused
                await drain()

    async def run(self, protocol_version: str) -> web.StreamResponse:
        req_protocol = self.request.protocol
        # Bytes after the 101 are SPDY, not HTTP: take them before aiohttp's HTTP parser would.
        req_protocol.set_parser(_ParserAdapter(self.incoming))  # type: ignore[arg-type]
        req_protocol.keep_alive(False)
        resp = web.StreamResponse(status=101, headers={
            "Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": protocol_version})
        resp.force_close()
        await resp.prepare(self.request)
        self._transport = self.request.transport  # type: ignore[assignment]
        reader = asyncio.ensure_future(self._read_client())
        relay = asyncio.ensure_future(self._relay_kubelet())
        try:
            await asyncio.wait([reader, relay], return_when=asyncio.FIRST_COMPLETED)
            if relay.done():
                # The Status is out: give the client a moment to tear down itself (RST, GOAWAY).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(reader), TEARDOWN_TIMEOUT)
            for t in (reader, relay):
                if t.done() and not t.cancelled() and t.exception() is not None:
                    log.info("SPDY exec ended: %r", t.exception())
        finally:
            for t in (reader, relay):
                t.cancel()
            await asyncio.gather(reader, relay, return_exceptions=True)
            if not self.kubelet.closed:
                await self.kubelet.close()
            if self._transport is not None:
                self._transport.close()
        return resp

    # client -> kubelet
    async def _read_client(self) -> None:
        try:
            while (data := await self.incoming.get()) is not None:
                for frame in self.codec.feed(data):
                    if await self._on_frame(frame):
                        return
        except SpdyProtocolError as e:
            log.info("SPDY protocol error from the client: %s", e)
            with contextlib.suppress(ConnectionError):
                await self.write(FrameCodec.goaway(self.last_stream_id, 1))
        finally:
            self.client_done.set()

    async def _on_frame(self, frame: Frame) -> bool:
        """Handle one frame; True when the client ended the session."""
        if not frame.control:
            await self._on_data(frame)
        elif frame.type == SYN_STREAM:
            await self._on_syn_stream(frame)
        elif frame.type == PING:
            await self.write(FrameCodec.control(PING, 0, frame.data[:4]))
        elif frame.type == GOAWAY:
            return True
        elif frame.type == RST_STREAM:
            name = next((n for n, sid in self.streams.items() if sid == frame.stream_id), None)
            if name == "stdin" and not self.kubelet.closed:
                await self.kubelet.send_bytes(bytes((CLOSE, STDIN)))
        # SETTINGS, WINDOW_UPDATE, HEADERS: nothing to do without flow control.
        return False

    async def _on_syn_stream(self, frame: Frame) -> None:
        stream_type = (frame.headers.get("streamtype") or [""])[0]
        sid = frame.stream_id
        if sid <= self.last_stream_id or sid % 2 == 0 or stream_type in self.streams or \
                stream_type not in ("error", "stdin", "stdout", "stderr", "resize"):
            await self.write(FrameCodec.rst(sid, RST_PROTOCOL_ERROR))
            return
        self.last_stream_id = sid
        self.streams[stream_type] = sid
        await self.write(self.codec.syn_reply(sid))
        if self._needed <= self.streams.keys():
            self.ready.set()

    async def _on_data(self, frame: Frame) -> None:
        name = next((n for n, sid in self.streams.items() if sid == frame.stream_id), None)
        if name is None:
            await self.write(FrameCodec.rst(frame.stream_id, RST_INVALID_STREAM))
            return
        if self.kubelet.closed:
            return
        if name == "stdin":
            if frame.data:
                await self.kubelet.send_bytes(bytes((STDIN,)) + frame.data)
            if frame.fin:
                await self.kubelet.send_bytes(bytes((CLOSE, STDIN)))
        elif name == "resize":
            # client-go writes one JSON object per line; frames need not match lines.
            self._resize_buf += frame.data
            *lines, self._resize_buf = self._resize_buf.split(b"\n")
            for line in lines:
                if line.strip():
                    await self.kubelet.send_bytes(bytes((RESIZE,)) + line)

    # kubelet -> client
    async def _relay_kubelet(self) -> None:
        try:
            await asyncio.wait_for(self.ready.wait(), STREAM_SETUP_TIMEOUT)
        except TimeoutError:
            log.info("SPDY exec: the client did not open its streams (%s) in time", sorted(self._needed))
            return
        status = b""
        async for msg in self.kubelet:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, payload = msg.data[0], msg.data[1:]
            if channel == ERROR:
                status += payload
                continue
            name = {STDOUT: "stdout", STDERR: "stderr"}.get(channel)
            sid = self.streams.get(name or "")
            if sid is None:
                continue
            for i in range(0, len(payload), DATA_CHUNK):
                await self.write(FrameCodec.data(sid, payload[i:i + DATA_CHUNK]))
        for name in ("stdout", "stderr"):
            if name in self.streams:
                await self.write(FrameCodec.data(self.streams[name], b"", fin=True))
        await self.write(FrameCodec.data(self.streams["error"], status, fin=True))


async def relay_spdy_exec(request: web.Request, kubelet: aiohttp.ClientWebSocketResponse, protocol: str,
                          opts: StreamOptions) -> web.StreamResponse:
    """Answer the SPDY upgrade and relay the session to the kubelet's channel WebSocket."""
    if kubelet.protocol != PROTOCOL_V5 and opts.stdin:
        log.info("kubelet speaks %s: the end of stdin cannot be passed on", kubelet.protocol)
    return await SpdyExecSession(request, kubelet, opts).run(protocol)
