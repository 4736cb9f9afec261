"""Client events (``client-*``): Pusher's rules, then publish to the channel minus the sender."""

from __future__ import annotations

from typing import Any

from hub.protocol.channels import channel_type
from hub.protocol.errors import CloseCode, PusherError
from hub.protocol.messages import ClientMessage, dumps, error_frame
from hub.ws.connection import Connection
from hub.ws.context import NodeContext


def _rejected(message: str) -> PusherError:
    return PusherError(CloseCode.CLIENT_EVENT_REJECTED, message)


def check_client_event(conn: Connection, message: ClientMessage) -> PusherError | None:
    """Why this client event may not be relayed, or None when it may."""
    app = conn.app
    if not app.enable_client_messages:
        return _rejected("Client events are not enabled for this app.")
    if not message.event.startswith("client-"):
        return _rejected("Client event names must start with client-.")
    if len(message.event) > app.limits.max_event_name_length:
        return _rejected(f"Event name is longer than {app.limits.max_event_name_length} characters.")
    channel = message.channel
    if channel is None or not channel_type(channel).allows_client_events:
        return _rejected("Client events are only allowed on private and presence channels.")
    if channel not in conn.channels:
        return _rejected(f"The client is not subscribed to {channel}.")
    if len(dumps(message.data).encode()) > app.limits.max_payload_bytes:
        return _rejected(f"Client event data is larger than {app.limits.max_event_payload_in_kb} KB.")
    if not conn.take_client_event(app.max_client_events_per_second):
        return _rejected(f"Client event rate limit reached ({app.max_client_events_per_second}/s).")
    return None


async def relay_client_event(ctx: NodeContext, conn: Connection, message: ClientMessage) -> None:
    """Relay an allowed client event, or answer ``pusher:error`` 4301 and keep the socket open."""
    error = check_client_event(conn, message)
    if error is not None:
        if ctx.tap.watching(conn.app.id):
            ctx.tap.emit(
                conn.app.id,
                "client_event_refused",
                socket_id=conn.socket_id,
                channel=message.channel,
                event=message.event,
                message=error.message,
            )
        if "rate limit" in error.message:
            ctx.metrics.rate_limited.labels(conn.app.id, "client_event").inc()
        # With the channel, a pusher-js handler bound on the channel fires, as with Soketi.
        conn.send(error_frame(error, message.channel))
        return
    assert message.channel is not None
    member = conn.channels[message.channel]
    # user_id comes from the signed channel_data, never from the client's payload.
    user_id = member.user_id if member is not None else None
    data: Any = message.data
    ctx.metrics.published_events.labels(conn.app.id, "client").inc()
    if await ctx.publish(
        conn.app.id, message.channel, message.event, data, except_socket=conn.socket_id, user_id=user_id
    ):
        ctx.webhooks.client_event(conn.app, message.channel, message.event, data, conn.socket_id, user_id)
        if ctx.tap.watching(conn.app.id):
            ctx.tap.emit(
                conn.app.id,
                "client_event",
                socket_id=conn.socket_id,
                channel=message.channel,
                event=message.event,
                data=data,
                user_id=user_id,
            )
