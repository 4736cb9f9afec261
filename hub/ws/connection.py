"""One client socket: identity, subscriptions, liveness and the raw transport writes go to."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from hub.apps import App
from hub.protocol.errors import PusherError
from hub.protocol.messages import error_frame
from hub.protocol.users import PresenceMember, SignedInUser
from hub.ws.frames import text_frame

CLOSE_GRACE_SECONDS = 2.0


class Connection:
    """A connected socket. Writes go straight to the transport; a full send buffer marks it slow.

    ``channels`` maps each subscribed channel to the presence member it joined as (or None).
    """

    __slots__ = (
        "_on_slow",
        "_sent",
        "app",
        "channels",
        "close_reason",
        "closing",
        "connected_at",
        "event_count",
        "event_window",
        "last_seen",
        "ping_sent",
        "send_limit",
        "socket_id",
        "transport",
        "user",
        "ws",
    )

    def __init__(
        self,
        socket_id: str,
        app: App,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        send_limit: int,
        on_slow: Callable[[Connection], None],
        sent: tuple[Counter, Counter],
    ) -> None:
        self.socket_id = socket_id
        self.app = app
        self.ws = ws
        self.transport = transport
        self.send_limit = send_limit
        self._on_slow = on_slow
        self._sent = sent
        self.channels: dict[str, PresenceMember | None] = {}
        self.user: SignedInUser | None = None
        self.closing = False
        self.close_reason: str | None = None
        self.last_seen = time.monotonic()
        self.connected_at = self.last_seen
        self.ping_sent: float | None = None
        self.event_window = 0.0
        self.event_count = 0

    def write(self, frame: bytes) -> None:
        """Queue a prebuilt frame. Never awaits: a socket that cannot keep up is closed, not waited for."""
        if self.closing:
            return
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(frame)
        if transport.get_write_buffer_size() > self.send_limit:
            self._on_slow(self)

    def send(self, text: str) -> None:
        """Queue a JSON text frame meant for this socket alone (fan-out counts its own frames in bulk)."""
        frame = text_frame(text.encode())
        self.write(frame)
        messages, sent_bytes = self._sent
        messages.inc()
        sent_bytes.inc(len(frame))

    def send_error(self, error: PusherError) -> None:
        """Tell the client about an error with ``pusher:error`` (the socket stays open)."""
        self.send(error_frame(error))

    def seen(self) -> None:
        """Any frame from the client proves it alive."""
        self.last_seen = time.monotonic()
        self.ping_sent = None

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

    async def close(self, code: int, message: str, *, announce: bool = True) -> None:
        """Send ``pusher:error`` (when ``announce``), then close with ``code``; abort if the peer stalls."""
        if self.closing:
            return
        if announce:
            self.send_error(PusherError(code, message))
        self.closing = True
        try:
            async with asyncio.timeout(CLOSE_GRACE_SECONDS):
                await self.ws.close(code=code, message=message.encode()[:120])
        except (TimeoutError, ConnectionError, RuntimeError):
            self.transport.abort()

    def describe(self) -> dict[str, Any]:
        """Context for log lines."""
        return {"app_id": self.app.id, "socket_id": self.socket_id}
