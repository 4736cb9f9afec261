"""Server-side liveness: RFC 6455 pings to silent sockets, 4201 when nothing comes back.

WebSocket-level pings (not ``pusher:ping``) because the Java/Android SDK answers only those. One
sweep per second over all sockets instead of a timer per socket keeps memory per connection flat.
"""

from __future__ import annotations

import asyncio
import time

from hub.protocol.channels import channel_type
from hub.protocol.errors import CloseCode
from hub.ws.frames import PING_FRAME
from hub.ws.node import WsNode

SWEEP_SECONDS = 1.0


def sweep(node: WsNode, now: float) -> None:
    """One pass: ping silent sockets, close those whose ping went unanswered or that never signed in."""
    settings = node.ctx.settings
    for conn in list(node.connections.values()):
        if conn.closing:
            continue
        if conn.ping_sent is None:
            if now - conn.last_seen >= settings.activity_timeout:
                conn.ping_sent = now
                conn.write(PING_FRAME)
        elif now - conn.ping_sent >= settings.pong_timeout:
            node.close_soon(conn, CloseCode.PONG_TIMEOUT, "Pong reply not received in time.", "pong_timeout")
            continue
        app = conn.app
        if (
            app.enable_user_authentication
            and conn.user is None
            and now - conn.connected_at >= app.user_authentication_timeout
            and not any(channel_type(c).needs_auth for c in conn.channels)
        ):
            node.close_soon(conn, CloseCode.UNAUTHORIZED, "Connection not authorized within timeout.", "unauthorized")


async def run_liveness(node: WsNode) -> None:
    """Sweep forever (cancelled at shutdown)."""
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        sweep(node, time.monotonic())
