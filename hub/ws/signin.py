"""User sign-in (``pusher:signin``): who a socket is, and its ``#server-to-user-{id}`` channel."""

from __future__ import annotations

import structlog

from hub.protocol import messages
from hub.protocol.channels import server_to_user_channel
from hub.protocol.errors import CloseCode, PusherError
from hub.protocol.messages import SigninRequest
from hub.protocol.signatures import signin_message, verify_token
from hub.protocol.users import InvalidUserData, parse_user_data
from hub.state.base import StateUnavailable
from hub.ws.connection import Connection
from hub.ws.context import NodeContext
from hub.ws.watchlist import Watchlists

log = structlog.get_logger("hub.ws")


async def signin(ctx: NodeContext, watchlists: Watchlists, conn: Connection, request: SigninRequest) -> None:
    """Verify the signed ``user_data`` and bind the socket to its user; close 4009 when it is not valid."""
    app = conn.app
    if not verify_token(app.key, app.secret, signin_message(conn.socket_id, request.user_data), request.auth):
        await conn.close(CloseCode.UNAUTHORIZED, "Invalid signature: sign-in was not signed by the app.")
        return
    try:
        user, truncated = parse_user_data(request.user_data, app.limits.max_watchlist_size)
    except InvalidUserData as exc:
        await conn.close(CloseCode.UNAUTHORIZED, f"Invalid user_data: {exc}")
        return
    if conn.user is not None:
        if conn.user.user_id != user.user_id:
            await conn.close(CloseCode.UNAUTHORIZED, "The connection is already signed in as another user.")
            return
        conn.user = user
        conn.send(messages.signin_success(user.user_data))
        return
    await ctx.join_local(conn, server_to_user_channel(user.user_id))
    # Recorded in the step that issues the count (ClusterState.resync: a snapshot counts the writes begun).
    conn.user = user
    conn.send(messages.signin_success(user.user_data))
    if truncated:
        conn.send_error(
            PusherError(
                CloseCode.WATCHLIST_LIMIT, f"Watchlist limited to the first {app.limits.max_watchlist_size} ids."
            )
        )
    try:
        if await ctx.state.user_signed_in(app.id, user.user_id):
            await watchlists.announce(app, user.user_id, online=True)
    except StateUnavailable:
        log.warning("state_unavailable", op="user_signed_in", **conn.describe())
    await watchlists.watch(conn)


async def signout(ctx: NodeContext, watchlists: Watchlists, conn: Connection) -> None:
    """Forget the socket's user as it closes."""
    user = conn.user
    if user is None:
        return
    watchlists.unwatch(conn)
    ctx.leave_local(conn, server_to_user_channel(user.user_id))
    conn.user = None  # in the step that issues the uncount, as above
    try:
        if await ctx.state.user_signed_out(conn.app.id, user.user_id):
            await watchlists.announce(conn.app, user.user_id, online=False)
    except StateUnavailable:
        log.warning("state_unavailable", op="user_signed_out", **conn.describe())
