"""Connection-level limits of the main port: new connections per address, connections still sending their
first request head (and for how long), and plain-HTTP (API) connections.

A slowloris client opens connections and sends its request head a byte at a time; aiohttp alone would
wait for it forever. Every connection starts in a thin ``Watch`` protocol in front of whatever serves
the port (the ws node's front door, or aiohttp): until its first request head is complete, or until
that protocol hands the transport on (an adopted WebSocket, a hand-off to aiohttp), it counts as
*pending* (closed with 408 after ``request_timeout``; a bounded number of them may be slow, see below). Connections aiohttp
serves (the HTTP API, health, anything the front door leaves to it) pass through ``Tracked``, which
bounds how many are open. Refusals are answered with Pusher's JSON error and HTTP 408, 429 or 503.

The pending bound applies to connections still incomplete ``SLOW_AFTER`` seconds after they were accepted,
not to every accepted one: in a reconnect storm the event loop accepts thousands of connections in one
turn (up to the listen backlog) before it reads any of them, and counting those refused well-behaved
clients whose heads were already in the kernel's buffers (benchmarks/README.md, "Reconnect storm").
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from hub.guard.windows import PerSecond
from hub.metrics import Metrics

HEAD_END = b"\r\n\r\n"
# A head that has not arrived this long after the accept is a slow one; a prompt client's head arrives in
# one round trip, and the loop reads a ready socket before it runs a timer that came due in the same turn.
SLOW_AFTER = 1.0

ProtocolFactory = Callable[[], asyncio.Protocol]


@dataclass(frozen=True)
class ConnectionLimits:
    """The bounds of the main port (see the README's configuration table)."""

    max_pending: int
    request_timeout: float
    max_api: int
    max_connects_per_address: int = -1


def raw_response(status: int, reason: str, message: str) -> bytes:
    """A complete HTTP/1.1 error response with Pusher's JSON body, for a connection nothing else answers."""
    body = json.dumps({"error": message, "code": status}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _refuse(transport: asyncio.Transport, status: int, reason: str, message: str) -> None:
    transport.write(raw_response(status, reason, message))
    transport.close()


class ConnectionGuard:
    """Counts the port's slow pending connections and its API connections, and refuses past the limits."""

    def __init__(self, limits: ConnectionLimits, metrics: Metrics) -> None:
        self.limits = limits
        self.slow = 0
        self.api = 0
        self._metrics = metrics
        self._connects = PerSecond(limits.max_connects_per_address)
        self._api_connections: dict[asyncio.BaseTransport, Tracked] = {}

    def refused(self, limit: str) -> None:
        """Count a refusal by the limit that made it."""
        self._metrics.limit_refusals.labels(limit).inc()

    def watched(self, inner: ProtocolFactory, *, admit: bool = True) -> ProtocolFactory:
        """Each connection watched until its first head is complete, then ``inner``'s.

        ``admit=False`` is for a connection handed on mid-head (the front door leaves everything but
        WebSocket upgrades to aiohttp): its address was counted at accept already; the slow bound and
        the request timeout apply from the hand-off (the first watch stops counting it then).
        """
        return lambda: Watch(self, inner(), admit=admit)

    def tracked(self, inner: ProtocolFactory) -> ProtocolFactory:
        """aiohttp's protocol factory, its connections counted against the API-connection bound."""
        return lambda: Tracked(self, inner())

    def admit_address(self, transport: asyncio.Transport) -> bool:
        """Count a new connection from its peer address; False past the per-address rate."""
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        return self._connects.take(address, time.monotonic())

    def websocket(self, transport: asyncio.BaseTransport | None) -> None:
        """aiohttp is handing this connection to the ws node, which owns it from the 101 on: stop counting it."""
        tracked = self._api_connections.get(transport) if transport is not None else None
        if tracked is not None:
            tracked.release()


class Watch(asyncio.Protocol):
    """The first protocol of a connection: bounds how many are pending and how long they may stay so.

    Once another protocol takes the transport (``set_protocol``), the transport stops calling this one.
    """

    __slots__ = ("_admit", "_guard", "_inner", "_refused", "_slow", "_tail", "_timer", "_transport")

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol, *, admit: bool = True) -> None:
        self._guard = guard
        self._inner = inner
        self._admit = admit
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._slow = False
        self._refused = False
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        guard = self._guard
        if self._admit and not guard.admit_address(transport):
            self._refused = True
            guard.refused("connects_per_address")
            limit = guard.limits.max_connects_per_address
            _refuse(transport, 429, "Too Many Requests", f"Too many connections from one address ({limit} a second).")
            return
        grace = min(SLOW_AFTER, guard.limits.request_timeout)
        self._timer = asyncio.get_running_loop().call_later(grace, self._turned_slow)
        self._inner.connection_made(transport)

    def _turned_slow(self) -> None:
        """Still no whole head after ``SLOW_AFTER``: one of the bounded slow connections, or refused."""
        self._timer = None
        transport, guard = self._transport, self._guard
        if transport is None or transport.is_closing() or self._replaced():
            self._release()
            return
        if guard.slow >= guard.limits.max_pending:
            self._release()
            guard.refused("pending_handshakes")
            _refuse(transport, 503, "Service Unavailable", "Too many connections are still connecting.")
            return
        guard.slow += 1
        self._slow = True
        remaining = max(guard.limits.request_timeout - SLOW_AFTER, 0.0)
        self._timer = asyncio.get_running_loop().call_later(remaining, self._too_slow)

    def _release(self) -> None:
        """No longer pending: the head is complete, another protocol took over, or the connection ended."""
        if self._slow:
            self._slow = False
            self._guard.slow -= 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _replaced(self) -> bool:
        return self._transport is None or self._transport.get_protocol() is not self

    def _too_slow(self) -> None:
        self._timer = None
        transport = self._transport
        still_pending = transport is not None and not transport.is_closing()
        self._release()
        if still_pending and transport is not None and not self._replaced():
            self._guard.refused("request_timeout")
            _refuse(transport, 408, "Request Timeout", "The request head took too long to arrive.")

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._timer is not None:
            seen = self._tail + data
            if HEAD_END in seen:
                self._release()
            else:
                self._tail = seen[-(len(HEAD_END) - 1) :]
        self._inner.data_received(data)
        if self._timer is not None and self._replaced():
            self._release()  # handed on mid-head: whoever took it bounds it from here

    def eof_received(self) -> bool | None:
        return None if self._refused else self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        if not self._refused:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if not self._refused:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if not self._refused:
            self._inner.resume_writing()


class Tracked(asyncio.Protocol):
    """aiohttp's protocol for one connection, counted among the open API connections while it lasts."""

    __slots__ = ("_counted", "_guard", "_inner", "_refused", "_transport")

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._counted = False
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        guard = self._guard
        self._transport = transport
        if guard.api >= guard.limits.max_api:
            self._refused = True
            guard.refused("api_connections")
            _refuse(transport, 503, "Service Unavailable", "Too many API connections are open; retry shortly.")
            return
        guard.api += 1
        self._counted = True
        guard._api_connections[transport] = self
        self._inner.connection_made(transport)

    def release(self) -> None:
        """Stop counting this connection (it ended, or the ws node took it over)."""
        if self._counted:
            self._counted = False
            self._guard.api -= 1
            if self._transport is not None:
                self._guard._api_connections.pop(self._transport, None)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._refused else self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.release()
        if not self._refused:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if not self._refused:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if not self._refused:
            self._inner.resume_writing()
