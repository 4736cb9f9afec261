"""One client socket after the upgrade: identity, subscriptions, liveness, and the socket's own frames.

A ``Connection`` is the asyncio ``Protocol`` of its transport: frames are parsed in ``data_received``
and handed to the node as they complete, so an idle socket costs this object, its parser and the
transport, and no task (benchmarks/README.md, "Memory per connection", has the breakdown).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from prometheus_client import Counter

from hub.apps import App
from hub.protocol.errors import PusherError
from hub.protocol.messages import error_frame
from hub.protocol.users import PresenceMember, SignedInUser
from hub.ws.deflate import Deflater
from hub.ws.frame_parser import BINARY, CLOSE, PING, TEXT, FrameParser, ProtocolViolation, parse_close
from hub.ws.frames import close_frame, deflated_text_frame, pong_frame, text_frame
from hub.ws.receive_budget import ReceiveBudget

CLOSE_GRACE_SECONDS = 2.0


class SocketEvents(Protocol):
    """What a connection tells its node (``WsNode``)."""

    def on_text(self, conn: Connection, text: str) -> None:
        """A complete text message arrived."""

    def on_binary(self, conn: Connection) -> None:
        """A binary message arrived (Pusher has none)."""

    def on_violation(self, conn: Connection, violation: ProtocolViolation) -> None:
        """The client broke the WebSocket protocol; the socket is being failed."""

    def on_slow(self, conn: Connection) -> None:
        """The send buffer passed the limit."""

    def on_lost(self, conn: Connection) -> None:
        """The transport is gone."""


class Connection(asyncio.Protocol):
    """A connected socket. Writes go straight to the transport; a full send buffer marks it slow.

    ``channels`` maps each subscribed channel to the presence member it joined as (or None).
    ``inbox`` holds text messages waiting for the node's handler task; None when no task runs, so an
    idle socket has none.
    """

    __slots__ = (
        "_close_timer",
        "_events",
        "_parser",
        "_sent",
        "admitted",
        "app",
        "budget",
        "channels",
        "close_reason",
        "closing",
        "connected_at",
        "deflate",
        "deflater",
        "event_count",
        "event_window",
        "inbox",
        "last_seen",
        "lost",
        "ping_sent",
        "presence_pending",
        "send_limit",
        "socket_id",
        "transport",
        "user",
    )

    def __init__(
        self,
        socket_id: str,
        app: App,
        transport: asyncio.Transport,
        events: SocketEvents,
        *,
        send_limit: int,
        max_message: int,
        deflater: Deflater | None,
        sent: tuple[Counter, Counter],
    ) -> None:
        self.socket_id = socket_id
        self.app = app
        self.transport = transport
        self.send_limit = send_limit
        self._events = events
        self._sent = sent
        self._parser = FrameParser(max_message, deflate=deflater is not None)
        self._close_timer: asyncio.TimerHandle | None = None
        self.deflater = deflater
        self.deflate = deflater is not None
        self.channels: dict[str, PresenceMember | None] = {}
        # A presence join or leave under way: the member a resync's snapshot still counts (ws/subscriptions.py).
        self.presence_pending: tuple[str, PresenceMember] | None = None
        self.user: SignedInUser | None = None
        self.inbox: list[str] | None = None
        self.admitted = False
        self.budget: ReceiveBudget | None = None  # created with the socket's first message
        self.closing = False
        self.lost = False
        self.close_reason: str | None = None
        self.last_seen = time.monotonic()
        self.connected_at = self.last_seen
        self.ping_sent: float | None = None
        self.event_window = 0.0
        self.event_count = 0

    # -- asyncio.Protocol -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Parse frames; any frame proves the client alive."""
        self.last_seen = time.monotonic()
        self.ping_sent = None
        events = self._events
        try:
            for opcode, payload in self._parser.feed(data):
                if opcode == CLOSE:
                    assert isinstance(payload, bytes)
                    self._peer_closed(payload)
                    return
                if self.closing:
                    continue  # after our close frame only the peer's close matters (RFC 6455 5.5.1)
                if opcode == TEXT:
                    assert isinstance(payload, str)
                    events.on_text(self, payload)
                elif opcode == PING:
                    assert isinstance(payload, bytes)
                    self.transport.write(pong_frame(payload))
                elif opcode == BINARY:
                    events.on_binary(self)
        except ProtocolViolation as violation:
            events.on_violation(self, violation)
            self._fail(violation.code, violation.reason)

    def eof_received(self) -> bool | None:
        """The client half-closed: let the transport close (no close frame came)."""
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """Tell the node, which undoes the socket's subscriptions."""
        self.closing = True
        self.lost = True
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self._events.on_lost(self)

    # -- writing ----------------------------------------------------------------------------

    def write(self, frame: bytes) -> None:
        """Queue a prebuilt frame. Never awaits: a socket that cannot keep up is closed, not waited for."""
        if self.closing:
            return
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(frame)
        if transport.get_write_buffer_size() > self.send_limit:
            self._events.on_slow(self)

    def send(self, text: str) -> None:
        """Queue a JSON text frame meant for this socket alone (fan-out counts its own frames in bulk)."""
        payload = text.encode()
        deflater = self.deflater
        if deflater is not None and len(payload) >= deflater.min_bytes:
            frame = deflated_text_frame(deflater.compress(payload))
        else:
            frame = text_frame(payload)
        self.write(frame)
        messages, sent_bytes = self._sent
        messages.inc()
        sent_bytes.inc(len(frame))

    def send_error(self, error: PusherError) -> None:
        """Tell the client about an error with ``pusher:error`` (the socket stays open)."""
        self.send(error_frame(error))

    def take_client_event(self, limit: int) -> bool:
        """Count a client event in the current one-second window; False when ``limit`` is used up."""
        if limit < 0:
            return True
        now = time.monotonic()
        if now - self.event_window >= 1.0:
            self.event_window = now
            self.event_count = 0
        if self.event_count >= limit:
            return False
        self.event_count += 1
        return True

    # -- closing ----------------------------------------------------------------------------

    def begin_close(self, code: int, message: str, *, announce: bool = True) -> None:
        """Send ``pusher:error`` (when ``announce``) and a close frame; abort if the peer does not answer."""
        if self.closing:
            return
        if announce:
            self.send_error(PusherError(code, message))
        self.closing = True
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(close_frame(code, message[:120]))
        self._close_timer = asyncio.get_running_loop().call_later(CLOSE_GRACE_SECONDS, transport.abort)

    async def close(self, code: int, message: str, *, announce: bool = True) -> None:
        """``begin_close`` for handlers that await (the close handshake finishes on its own)."""
        self.begin_close(code, message, announce=announce)

    def _peer_closed(self, payload: bytes) -> None:
        """The client's close frame: the answer to ours, or its own close, which we echo (RFC 6455 5.5.1)."""
        try:
            code, _ = parse_close(payload)
        except ProtocolViolation as violation:
            self._events.on_violation(self, violation)
            self._fail(violation.code, violation.reason)
            return
        if not self.closing:
            self.closing = True
            self.transport.write(close_frame(1000 if code == 1005 else code))
        self.transport.close()

    def _fail(self, code: int, reason: str) -> None:
        """Fail the WebSocket connection (RFC 6455 7.1.7): a close frame if we have not sent one, then TCP close."""
        self.close_reason = self.close_reason or "error"
        if not self.closing:
            self.closing = True
            self.transport.write(close_frame(code, reason))
        self.transport.close()

    def describe(self) -> dict[str, Any]:
        """Context for log lines."""
        return {"app_id": self.app.id, "socket_id": self.socket_id}
