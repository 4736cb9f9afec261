"""What an app change does to the sockets open on this node.

A deleted app's sockets close with 4001 and a disabled app's with 4003: both in 4000-4099, the range
pusher-js treats as "refused" and does not reconnect from. Sockets of a changed app keep their
subscriptions and from now on see the new app (its secret signs the next subscription, its limits
count from the next event).
"""

from __future__ import annotations

from collections.abc import Sequence

from hub.apps import App, AppChange
from hub.protocol.errors import CloseCode
from hub.ws.node import WsNode


def apply_app_changes(node: WsNode, changes: Sequence[AppChange]) -> None:
    """Close or update this node's sockets of the changed apps (one pass over the sockets)."""
    changed: dict[str, App | None] = {change.app_id: change.after for change in changes if change.before}
    if not changed:
        return
    for conn in list(node.connections.values()):
        if conn.app.id not in changed or conn.closing:
            continue
        app = changed[conn.app.id]
        if app is None:
            node.close_soon(conn, CloseCode.APP_NOT_FOUND, "The app was deleted.", "app_deleted")
        elif not app.enabled:
            node.close_soon(conn, CloseCode.APP_DISABLED, "The app was disabled.", "app_disabled")
        else:
            conn.app = app
