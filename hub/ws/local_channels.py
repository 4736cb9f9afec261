"""Which local sockets are in which channel: the fan-out lookup, and the broker's subscribe trigger."""

from __future__ import annotations

from hub.ws.connection import Connection

Topic = tuple[str, str]


class LocalChannels:
    """Channel -> sockets of this node. ``add``/``remove`` report the first join and last leave."""

    def __init__(self) -> None:
        self._topics: dict[Topic, dict[str, Connection]] = {}

    def add(self, app_id: str, channel: str, conn: Connection) -> bool:
        """Add the socket; True when it is the channel's first local socket."""
        subs = self._topics.get((app_id, channel))
        if subs is None:
            self._topics[(app_id, channel)] = {conn.socket_id: conn}
            return True
        subs[conn.socket_id] = conn
        return False

    def remove(self, app_id: str, channel: str, conn: Connection) -> bool:
        """Remove the socket; True when the channel has no local socket left."""
        subs = self._topics.get((app_id, channel))
        if subs is None or subs.pop(conn.socket_id, None) is None:
            return False
        if not subs:
            del self._topics[(app_id, channel)]
            return True
        return False

    def subscribers(self, app_id: str, channel: str) -> dict[str, Connection] | None:
        """The channel's local sockets by socket id (the live dict: do not mutate)."""
        return self._topics.get((app_id, channel))
