"""Watchlist events: tell signed-in users when the users they watch come online or go offline.

A user is online while it has a signed-in socket anywhere in the cluster. The node that sees the
first sign-in (or the last sign-out) publishes a USER_PRESENCE control message; every node tells its
local watchers of that user.
"""

from __future__ import annotations

import structlog

from hub.apps import App
from hub.broker.base import BrokerUnavailable
from hub.broker.envelope import Envelope, Kind, user_envelope
from hub.protocol import messages
from hub.state.base import StateUnavailable
from hub.ws.connection import Connection
from hub.ws.context import NodeContext

log = structlog.get_logger("hub.ws")


class Watchlists:
    """This node's watchers: (app id, watched user id) -> sockets watching it."""

    def __init__(self, ctx: NodeContext) -> None:
        self._ctx = ctx
        self._watchers: dict[tuple[str, str], dict[str, Connection]] = {}

    async def watch(self, conn: Connection) -> None:
        """Register a signed-in socket's watchlist and send it the watched users' current status."""
        user = conn.user
        if user is None or not user.watchlist or not conn.app.enable_watchlist_events:
            return
        for watched in user.watchlist:
            self._watchers.setdefault((conn.app.id, watched), {})[conn.socket_id] = conn
        try:
            online = await self._ctx.state.users_online(conn.app.id, user.watchlist)
        except StateUnavailable:
            log.warning("state_unavailable", op="users_online", **conn.describe())
            return
        conn.send(
            messages.watchlist_events(
                [u for u in user.watchlist if u in online], [u for u in user.watchlist if u not in online]
            )
        )

    def unwatch(self, conn: Connection) -> None:
        """Forget a closing socket's watchlist."""
        if conn.user is None:
            return
        for watched in conn.user.watchlist:
            key = (conn.app.id, watched)
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.pop(conn.socket_id, None)
                if not watchers:
                    del self._watchers[key]

    def deliver(self, envelope: Envelope) -> None:
        """Tell local watchers of ``envelope.user_id`` that it came online (data true) or went offline."""
        watchers = self._watchers.get((envelope.app_id, envelope.user_id or ""))
        if not watchers:
            return
        user_ids = [envelope.user_id or ""]
        frame = messages.watchlist_events(user_ids, []) if envelope.data else messages.watchlist_events([], user_ids)
        for conn in watchers.values():
            conn.send(frame)

    async def announce(self, app: App, user_id: str, online: bool) -> None:
        """Publish a user's online/offline transition to every node (for apps with watchlist events)."""
        if not app.enable_watchlist_events:
            return
        envelope = user_envelope(Kind.USER_PRESENCE, app.id, user_id, online, origin_node=self._ctx.node_id)
        try:
            await self._ctx.broker.publish(envelope)
        except BrokerUnavailable:
            log.warning("watchlist_publish_failed", app_id=app.id, user_id=user_id)
