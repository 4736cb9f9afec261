"""Subscribing and unsubscribing sockets: auth checks, presence membership, occupancy, cache channels."""

from __future__ import annotations

from typing import Any

import structlog

from hub.protocol import messages
from hub.protocol.channels import ChannelKind, channel_name_error, channel_type, user_of_server_channel
from hub.protocol.errors import SubscriptionError
from hub.protocol.signatures import channel_auth_message, verify_token
from hub.protocol.users import InvalidUserData, PresenceMember, parse_channel_data
from hub.state.base import StateUnavailable
from hub.ws.connection import Connection
from hub.ws.context import NodeContext

log = structlog.get_logger("hub.ws")


def _refuse(ctx: NodeContext, conn: Connection, channel: str, error: SubscriptionError) -> None:
    conn.send(messages.subscription_error(channel, error))
    log.info("subscription_refused", channel=channel, reason=error.error, **conn.describe())
    if ctx.tap.watching(conn.app.id):
        ctx.tap.emit(
            conn.app.id,
            "subscription_refused",
            socket_id=conn.socket_id,
            channel=channel,
            reason=error.type,
            message=error.error,
        )


def _succeeded(ctx: NodeContext, conn: Connection, channel: str, presence: dict[str, Any] | None = None) -> None:
    conn.send(messages.subscription_succeeded(channel, presence))
    if ctx.tap.watching(conn.app.id):
        member = conn.channels.get(channel)
        ctx.tap.emit(
            conn.app.id, "subscribed", socket_id=conn.socket_id, channel=channel, user_id=member and member.user_id
        )


def _auth_error(channel: str) -> SubscriptionError:
    return SubscriptionError("AuthError", f"Invalid signature: the auth for {channel} does not match.", 401)


def _check_name(conn: Connection, channel: str) -> SubscriptionError | None:
    if channel.startswith("#"):
        own = conn.user is not None and user_of_server_channel(channel) == conn.user.user_id
        if own:
            return None
        return SubscriptionError("AuthError", "Channels starting with # are reserved for the server.", 4009)
    problem = channel_name_error(channel, conn.app.limits.max_channel_name_length, allow_server_channels=False)
    if problem:
        return SubscriptionError("InvalidChannel", problem, 4009)
    return None


def _presence_member(conn: Connection, channel: str, auth: str | None, channel_data: str | None) -> PresenceMember:
    """The member a presence subscription joins as, after checking its signature."""
    app = conn.app
    if channel_data is None:
        # A signed-in user may join without channel_data: pusher-js then uses the sign-in identity.
        if conn.user is None:
            raise InvalidUserData("channel_data is required for presence channels.")
        if not verify_token(app.key, app.secret, channel_auth_message(conn.socket_id, channel), auth):
            raise PermissionError
        return PresenceMember(conn.user.user_id, conn.user.user_info)
    if not verify_token(app.key, app.secret, channel_auth_message(conn.socket_id, channel, channel_data), auth):
        raise PermissionError
    return parse_channel_data(channel_data, app.limits.max_member_info_bytes)


async def subscribe(ctx: NodeContext, conn: Connection, channel: str, auth: str | None, data: str | None) -> None:
    """Handle ``pusher:subscribe``: answer ``subscription_succeeded`` or ``subscription_error``."""
    problem = _check_name(conn, channel)
    if problem:
        _refuse(ctx, conn, channel, problem)
        return
    kind = channel_type(channel)
    if channel in conn.channels:
        # Re-subscribing is idempotent: confirm again with the current state.
        await _confirm(ctx, conn, channel, conn.channels[channel])
        return
    limit = ctx.settings.max_channels_per_socket
    if len(conn.channels) >= limit:
        ctx.metrics.limit_refusals.labels("channels_per_socket").inc()
        _refuse(
            ctx, conn, channel, SubscriptionError("LimitReached", f"A socket may join at most {limit} channels.", 4100)
        )
        return
    if kind.kind is ChannelKind.SERVER_TO_USER:
        conn.channels[channel] = None
        _succeeded(ctx, conn, channel)
        return
    member: PresenceMember | None = None
    try:
        if kind.kind is ChannelKind.PRESENCE:
            member = _presence_member(conn, channel, auth, data)
        elif kind.needs_auth and not verify_token(
            conn.app.key, conn.app.secret, channel_auth_message(conn.socket_id, channel), auth
        ):
            raise PermissionError
    except PermissionError:
        _refuse(ctx, conn, channel, _auth_error(channel))
        return
    except InvalidUserData as exc:
        _refuse(ctx, conn, channel, SubscriptionError("AuthError", str(exc), 400))
        return
    # A public or private socket is counted before it is told it succeeded, so a channel query made
    # after subscription_succeeded (e.g. by the app's backend) already sees it.
    if member is not None:
        if not await _join_presence(ctx, conn, channel, member):
            return  # refused: counts nothing, so no occupancy is left behind
    else:
        try:
            await ctx.join_local(conn, channel)
        finally:
            # Recorded in the step that issues the count: a resync's snapshot counts exactly the writes
            # begun before it (ClusterState.resync).
            conn.channels[channel] = None
        await _count_join(ctx, conn, channel)
        _succeeded(ctx, conn, channel)
    if kind.cache:
        await _send_cached(ctx, conn, channel)


async def _join_presence(ctx: NodeContext, conn: Connection, channel: str, member: PresenceMember) -> bool:
    """Join the member to the channel; False when the subscription was refused.

    The socket receives the channel before the member list is read, and the list is sent with no
    await after the read: a member_added/removed published after the read reaches the socket after
    its subscription_succeeded, and one published before is already in the list. (Reading first left
    a window in which a moved member vanished for good from a client's list during rolling restarts.)
    """
    app = conn.app
    await ctx.join_local(conn, channel)
    # While the join is pending a resync's snapshot counts the member (ClusterState.resync).
    conn.presence_pending = (channel, member)
    try:
        joined = await ctx.state.join_presence(
            app.id, channel, member.user_id, member.user_info, app.limits.max_presence_members_per_channel
        )
    except StateUnavailable:
        ctx.leave_local(conn, channel)
        _refuse(
            ctx, conn, channel, SubscriptionError("ServerError", "Presence is unavailable; try again shortly.", 503)
        )
        return False
    finally:
        conn.presence_pending = None
    if not joined.accepted:
        ctx.leave_local(conn, channel)
        limit = app.limits.max_presence_members_per_channel
        _refuse(
            ctx, conn, channel, SubscriptionError("LimitReached", f"Presence channel is full ({limit} members).", 4100)
        )
        return False
    conn.channels[channel] = member
    _succeeded(ctx, conn, channel, messages.presence_payload(joined.members))
    await _count_join(ctx, conn, channel)
    if joined.first:
        ctx.webhooks.member_added(app, channel, member.user_id)
        await ctx.publish(
            app.id,
            channel,
            "pusher_internal:member_added",
            messages.member_added_data(member.user_id, member.user_info),
            except_socket=conn.socket_id,
        )
    return True


async def _confirm(ctx: NodeContext, conn: Connection, channel: str, member: PresenceMember | None) -> None:
    presence: dict[str, Any] | None = None
    if member is not None:
        try:
            members = await ctx.state.presence_members(conn.app.id, channel)
        except StateUnavailable:
            members = {member.user_id: member.user_info}
        presence = messages.presence_payload(members)
    conn.send(messages.subscription_succeeded(channel, presence))


async def _count_join(ctx: NodeContext, conn: Connection, channel: str) -> None:
    try:
        if await ctx.state.join_channel(conn.app.id, channel) == 1:
            ctx.webhooks.channel_occupied(conn.app, channel)
            if ctx.tap.watching(conn.app.id):
                ctx.tap.emit(conn.app.id, "occupied", channel=channel)
        ctx.count_changed(conn.app, channel)
    except StateUnavailable:
        # The node's own record is authoritative; it is written back by resync when the store returns.
        log.warning("state_unavailable", op="join_channel", channel=channel, **conn.describe())


async def _send_cached(ctx: NodeContext, conn: Connection, channel: str) -> None:
    try:
        cached = await ctx.state.cache_get(conn.app.id, channel)
    except StateUnavailable:
        cached = None
    if cached is None:
        conn.send(messages.cache_miss(channel))
        ctx.webhooks.cache_miss(conn.app, channel)
    else:
        conn.send(messages.event_frame(cached.event, channel, cached.data))


async def unsubscribe(ctx: NodeContext, conn: Connection, channel: str) -> None:
    """Handle ``pusher:unsubscribe`` (no reply, as Pusher does)."""
    if channel not in conn.channels:
        return
    member = conn.channels.pop(channel)
    await leave(ctx, conn, channel, member)


async def leave(ctx: NodeContext, conn: Connection, channel: str, member: PresenceMember | None) -> None:
    """Take the socket out of a channel: locally, from occupancy and, for presence, from the members."""
    if channel_type(channel).kind is ChannelKind.SERVER_TO_USER:
        return
    ctx.leave_local(conn, channel)
    app = conn.app
    if ctx.tap.watching(app.id):
        ctx.tap.emit(app.id, "unsubscribed", socket_id=conn.socket_id, channel=channel)
    # The caller dropped the channel from the socket's record as this leave began; until its presence
    # leave is issued a resync's snapshot still counts the member (ClusterState.resync).
    conn.presence_pending = None if member is None else (channel, member)
    try:
        if await ctx.state.leave_channel(app.id, channel) == 0:
            ctx.webhooks.channel_vacated(app, channel)
            if ctx.tap.watching(app.id):
                ctx.tap.emit(app.id, "vacated", channel=channel)
        ctx.count_changed(app, channel)
        if member is not None:
            conn.presence_pending = None
            if await ctx.state.leave_presence(app.id, channel, member.user_id):
                ctx.webhooks.member_removed(app, channel, member.user_id)
                await ctx.publish(
                    app.id, channel, "pusher_internal:member_removed", messages.member_removed_data(member.user_id)
                )
    except StateUnavailable:
        log.warning("state_unavailable", op="leave_channel", channel=channel, **conn.describe())
    finally:
        conn.presence_pending = None
