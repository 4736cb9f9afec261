"""Taking a socket over from aiohttp once the WebSocket handshake is answered.

aiohttp routes the upgrade request and answers every refusal before it (503 while draining, 400 for a
bad handshake, 404/405 for other paths). From the 101 on, the transport belongs to a protocol of ours
and aiohttp forgets the connection: no request handler, task, reader, writer or keep-alive timer stays
behind per socket, which is most of what a socket used to cost (benchmarks/README.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from hub.ws.connection import CLOSE_GRACE_SECONDS


class Detached(web.StreamResponse):
    """The handler's answer once the socket is ours: aiohttp writes nothing more to it."""

    async def prepare(self, request: web.BaseRequest) -> Any:
        """Nothing to send: the 101 went out with the takeover."""
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        """Nothing to finish."""
        return None


def take_over(request: web.Request, protocol: asyncio.Protocol, response_head: bytes) -> asyncio.Transport:
    """Write the 101, hand the transport to ``protocol`` and detach aiohttp's request handler from it.

    All in one callback, so no byte of the client can reach aiohttp after the 101 (a client may not send
    before it, RFC 6455 4.1).
    """
    transport = request.transport
    handler = request.protocol
    assert transport is not None
    transport.write(response_head)
    transport.set_protocol(protocol)
    # aiohttp closes the transport it holds when its handler finishes; it holds none from here on, and
    # connection_lost is how it drops the connection from its server's bookkeeping and stops its timers.
    handler.transport = None
    handler.connection_lost(None)
    transport.resume_reading()
    return transport


class Refused(asyncio.Protocol):
    """A socket refused after the upgrade: its frames are written; it closes on the peer's answer."""

    __slots__ = ("_timer", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self, transport: asyncio.Transport, frames: bytes) -> None:
        """Send ``frames`` (a ``pusher:error`` and the close frame); abort after the grace period."""
        self.transport = transport
        transport.write(frames)
        self._timer = asyncio.get_running_loop().call_later(CLOSE_GRACE_SECONDS, transport.abort)

    def data_received(self, data: bytes) -> None:
        """Whatever comes back (the close reply, or frames sent before the client read ours) ends it."""
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the grace timer."""
        if self._timer is not None:
            self._timer.cancel()
