"""The API server's HTTPS listener: aiohttp's TCPSite, except that a refused handshake is explained.

When Python's ssl refuses a client certificate (a CA the server does not trust, a forged
signature), OpenSSL writes a TLS alert saying why, but asyncio's SSL layer (3.11) aborts the
connection without sending it: kubectl then only reports "EOF" or "connection reset by peer". Here
the alert is flushed first, so kubectl says "remote error: tls: unknown certificate authority" or
"tls: error decrypting message". (kube-apiserver answers such certificates with 401 instead, because
Go lets it verify them after the handshake; the stdlib ssl has no verify callback to do the same.)
"""

from __future__ import annotations

import asyncio
import ssl
from asyncio import sslproto
from typing import Any

from aiohttp import web


class AlertingSSLProtocol(sslproto.SSLProtocol):
    """asyncio's SSL protocol, sending OpenSSL's pending alert before a failed handshake closes."""

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        # _outgoing and _transport are asyncio's own (3.11+); without them, behave as asyncio does.
        outgoing = getattr(self, "_outgoing", None)
        transport = getattr(self, "_transport", None)
        if handshake_exc is not None and outgoing is not None and transport is not None:
            try:
                alert = outgoing.read()
                if alert:
                    transport.write(alert)
            except (OSError, RuntimeError, ssl.SSLError):
                pass  # the peer is gone already: nothing to explain to
        super()._on_handshake_complete(handshake_exc)


class AlertingTLSSite(web.TCPSite):
    """A TCPSite whose TLS connections use :class:`AlertingSSLProtocol`; needs an ssl_context."""

    __slots__ = ()

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        app_factory = self._runner.server
        ctx = self._ssl_context
        assert app_factory is not None and ctx is not None

        def protocol() -> Any:
            return AlertingSSLProtocol(loop, app_factory(), ctx, None, server_side=True)

        self._server = await loop.create_server(
            protocol, self._host, self._port, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
