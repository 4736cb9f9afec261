"""The first protocol of every connection to a port that serves WebSockets.

A connection whose first request is a plain ``GET [--path-prefix]/app/{key}`` WebSocket upgrade is answered here and
handed straight to a ``Connection``: no aiohttp request handler, request object, middleware chain or
task is built for it, which is about a third of what a reconnecting client costs the node
(benchmarks/README.md, "Reconnect storm"). Everything else (the HTTP API, health, metrics, a draining
node's 503, a malformed or unusual request, anything on a kept-alive connection after its first request)
goes to aiohttp with the bytes read so far, exactly as if aiohttp had accepted the connection itself.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from urllib.parse import parse_qsl

from multidict import CIMultiDict

from hub.ws.handshake import HandshakeError
from hub.ws.node import WsNode

# An upgrade request is a few hundred bytes; anything larger is aiohttp's to judge (and refuse).
MAX_HEAD_BYTES = 8192
# A connection that has not sent a whole request by then is left to aiohttp's own timeouts.
HAND_OFF_SECONDS = 10.0


class FrontDoor(asyncio.Protocol):
    """Reads the first request's head; answers a WebSocket upgrade or hands the connection to aiohttp."""

    __slots__ = ("_aiohttp", "_buf", "_node", "_path", "_timer", "transport")

    def __init__(self, node: WsNode, aiohttp_factory: Callable[[], asyncio.Protocol], path_prefix: str = "") -> None:
        self._node = node
        self._aiohttp = aiohttp_factory
        self._path = f"{path_prefix}/app/"
        self._buf = b""
        self._timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the hand-off timer."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._timer = asyncio.get_running_loop().call_later(HAND_OFF_SECONDS, self._hand_off)

    def data_received(self, data: bytes) -> None:
        """Wait for the whole head of the first request, then decide."""
        buf = self._buf + data
        start = b"GET " + self._path.encode()
        if not buf.startswith(start[: len(buf)]):
            self._hand_off(buf)
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                self._hand_off(buf)
            else:
                self._buf = buf
            return
        if not self._answer(buf[:end].decode("latin-1"), buf[end + 4 :]):
            self._hand_off(buf)

    def eof_received(self) -> bool | None:
        """The client gave up before a whole request: close."""
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _answer(self, head: str, rest: bytes) -> bool:
        """Take the connection when ``head`` is an upgrade we accept; False leaves it to aiohttp."""
        node, transport = self._node, self.transport
        if node.draining or transport is None:
            return False  # aiohttp answers the 503
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or parts[2] != "HTTP/1.1":
            return False
        path, _, query = parts[1].partition("?")
        if not path.startswith(self._path):
            return False
        key = path[len(self._path) :]
        if not key or "/" in key or "%" in key:
            return False
        headers: CIMultiDict[str] = CIMultiDict()
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip() or name[0] in " \t":
                return False  # obsolete line folding, a space before the colon, no colon: aiohttp decides
            headers.add(name, value.strip())
        if len(headers.getall("Sec-WebSocket-Key", ())) != 1:
            return False
        try:
            handshake = node.handshake(headers)
        except HandshakeError:
            return False  # aiohttp answers the 400 with its message
        protocol = next((v for k, v in parse_qsl(query, keep_blank_values=True) if k == "protocol"), None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # What aiohttp does for its connections: let the kernel notice peers that vanished.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

        def adopt(protocol_: asyncio.Protocol) -> None:
            transport.write(handshake.response)
            transport.set_protocol(protocol_)

        conn = node.open_socket(key, protocol, handshake, transport, adopt)
        if conn is not None and rest:
            conn.data_received(rest)  # frames sent before the 101 arrived (RFC 6455 forbids it; harmless)
        return True

    def _hand_off(self, buf: bytes | None = None) -> None:
        """Give the connection to aiohttp as if it had accepted it, with everything read so far."""
        transport = self.transport
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if transport is None or transport.is_closing():
            return
        data = self._buf if buf is None else buf
        self._buf = b""
        handler = self._aiohttp()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if data:
            handler.data_received(data)
