#!/usr/bin/python3
"""A TCP fail-over listener for the API servers, like kubespray's nginx-proxy on every node.

Usage: apiserver-proxy.py LISTEN_HOST:PORT BACKEND_HOST:PORT [BACKEND_HOST:PORT ...]

Each client connection goes to the first backend, in the given order, that accepts a TCP connection
within CONNECT_TIMEOUT; a backend that failed is tried last for COOL_DOWN seconds so that one dead
master costs new connections nothing. Bytes are relayed unchanged: TLS is end to end between the
client and the API server, whose certificate covers 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time

CONNECT_TIMEOUT = 1.0
COOL_DOWN = 10.0
BUFFER = 65536

log = logging.getLogger("apiserver-proxy")


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SystemExit(f"apiserver-proxy: {text!r} is not HOST:PORT")
    return host, int(port)


class Balancer:
    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self.failed_at: dict[tuple[str, int], float] = {}

    def order(self) -> list[tuple[str, int]]:
        now = time.monotonic()
        healthy = [b for b in self.backends if now - self.failed_at.get(b, -COOL_DOWN) >= COOL_DOWN]
        return healthy + [b for b in self.backends if b not in healthy]

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for backend in self.order():
            try:
                streams = await asyncio.wait_for(asyncio.open_connection(*backend), CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as e:
                if backend not in self.failed_at or time.monotonic() - self.failed_at[backend] >= COOL_DOWN:
                    log.warning("API server %s:%d unreachable: %s", *backend, e or "timeout")
                self.failed_at[backend] = time.monotonic()
                continue
            self.failed_at.pop(backend, None)
            return streams
        return None


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(BUFFER):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()


async def handle(balancer: Balancer, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
    upstream = await balancer.connect()
    if upstream is None:
        log.error("no API server reachable; closing the client connection")
        client_w.close()
        return
    server_r, server_w = upstream
    try:
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))
    finally:
        for w in (client_w, server_w):
            with contextlib.suppress(OSError):
                w.close()


async def main(argv: list[str]) -> int:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    listen = parse_address(argv[0])
    balancer = Balancer([parse_address(a) for a in argv[1:]])
    server = await asyncio.start_server(lambda r, w: handle(balancer, r, w), *listen, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.warning("listening on %s:%d, backends %s", *listen, ", ".join(f"{h}:{p}" for h, p in balancer.backends))
    async with server:
        await stop.wait()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    sys.exit(asyncio.run(main(sys.argv[1:])))
