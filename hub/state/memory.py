"""In-process ClusterState for ``hub serve``; several nodes may share one MemoryStore (tests)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from hub.state.base import CachedEvent, ClusterState, Departures, NodeSnapshot, PresenceJoin

Counts = dict[str, int]  # node id -> count


@dataclass
class MemoryStore:
    """The shared data: every count kept per node, as the Redis layout does."""

    clock: Callable[[], float] = time.time
    connections: dict[str, Counts] = field(default_factory=dict)
    channels: dict[tuple[str, str], Counts] = field(default_factory=dict)
    presence: dict[tuple[str, str], dict[str, Counts]] = field(default_factory=dict)
    user_info: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    users: dict[tuple[str, str], Counts] = field(default_factory=dict)
    heartbeats: dict[str, float] = field(default_factory=dict)
    cache: dict[tuple[str, str], tuple[str, Any, float]] = field(default_factory=dict)


def _bump(counts: Counts, node: str, delta: int) -> int:
    """Add ``delta`` to the node's count (never below zero) and return the total over nodes."""
    value = counts.get(node, 0) + delta
    if value > 0:
        counts[node] = value
    else:
        counts.pop(node, None)
    return sum(counts.values())


class MemoryClusterState(ClusterState):
    """ClusterState over a MemoryStore; operations are atomic because they never await."""

    def __init__(self, node_id: str, store: MemoryStore | None = None) -> None:
        self.node_id = node_id
        self.store = store or MemoryStore()

    async def start(self) -> None:
        self.store.heartbeats[self.node_id] = self.store.clock()

    async def close(self) -> None:
        return None

    async def add_connection(self, app_id: str, limit: int) -> bool:
        counts = self.store.connections.setdefault(app_id, {})
        if 0 <= limit <= sum(counts.values()):
            return False
        _bump(counts, self.node_id, 1)
        return True

    async def remove_connection(self, app_id: str) -> None:
        _bump(self.store.connections.setdefault(app_id, {}), self.node_id, -1)

    async def join_channel(self, app_id: str, channel: str) -> int:
        return _bump(self.store.channels.setdefault((app_id, channel), {}), self.node_id, 1)

    async def leave_channel(self, app_id: str, channel: str) -> int:
        key = (app_id, channel)
        total = _bump(self.store.channels.setdefault(key, {}), self.node_id, -1)
        if total == 0:
            del self.store.channels[key]
        return total

    async def channel_subscriptions(self, app_id: str, channel: str) -> int:
        return sum(self.store.channels.get((app_id, channel), {}).values())

    async def channels(self, app_id: str, prefix: str = "") -> dict[str, int]:
        return {
            ch: sum(counts.values())
            for (app, ch), counts in self.store.channels.items()
            if app == app_id and ch.startswith(prefix) and counts
        }

    async def join_presence(
        self, app_id: str, channel: str, user_id: str, user_info: Any, max_members: int
    ) -> PresenceJoin:
        key = (app_id, channel)
        members = self.store.presence.setdefault(key, {})
        infos = self.store.user_info.setdefault(key, {})
        first = user_id not in members
        if first and 0 <= max_members <= len(members):
            return PresenceJoin(accepted=False, first=False, members=dict(infos))
        _bump(members.setdefault(user_id, {}), self.node_id, 1)
        if first:
            infos[user_id] = user_info
        return PresenceJoin(accepted=True, first=first, members=dict(infos))

    async def leave_presence(self, app_id: str, channel: str, user_id: str) -> bool:
        key = (app_id, channel)
        members = self.store.presence.get(key, {})
        if user_id not in members or _bump(members[user_id], self.node_id, -1) > 0:
            return False
        del members[user_id]
        self.store.user_info.get(key, {}).pop(user_id, None)
        if not members:
            self.store.presence.pop(key, None)
            self.store.user_info.pop(key, None)
        return True

    async def presence_members(self, app_id: str, channel: str) -> dict[str, Any]:
        return dict(self.store.user_info.get((app_id, channel), {}))

    async def user_signed_in(self, app_id: str, user_id: str) -> bool:
        return _bump(self.store.users.setdefault((app_id, user_id), {}), self.node_id, 1) == 1

    async def user_signed_out(self, app_id: str, user_id: str) -> bool:
        key = (app_id, user_id)
        if key not in self.store.users or self.node_id not in self.store.users[key]:
            return False
        if _bump(self.store.users[key], self.node_id, -1) == 0:
            del self.store.users[key]
            return True
        return False

    async def users_online(self, app_id: str, user_ids: Iterable[str]) -> set[str]:
        return {u for u in user_ids if self.store.users.get((app_id, u))}

    async def cache_set(self, app_id: str, channel: str, event: str, data: Any, ttl: int) -> None:
        self.store.cache[(app_id, channel)] = (event, data, self.store.clock() + ttl)

    async def cache_get(self, app_id: str, channel: str) -> CachedEvent | None:
        entry = self.store.cache.get((app_id, channel))
        if entry is None:
            return None
        event, data, expires = entry
        left = expires - self.store.clock()
        if left <= 0:
            del self.store.cache[(app_id, channel)]
            return None
        return CachedEvent(event=event, data=data, ttl=max(1, int(left)))

    async def heartbeat(self) -> bool:
        known = self.node_id in self.store.heartbeats
        self.store.heartbeats[self.node_id] = self.store.clock()
        return known

    async def reap_dead_nodes(self, silence: float) -> Departures:
        deadline = self.store.clock() - silence
        departures = Departures()
        for node, seen in list(self.store.heartbeats.items()):
            if node != self.node_id and seen < deadline:
                del self.store.heartbeats[node]
                self._remove_node(node, departures)
        return departures

    async def resync(self, snapshot: NodeSnapshot) -> None:
        self._remove_node(self.node_id, Departures())
        s = self.store
        for app_id, n in snapshot.connections.items():
            _bump(s.connections.setdefault(app_id, {}), self.node_id, n)
        for key, n in snapshot.channels.items():
            _bump(s.channels.setdefault(key, {}), self.node_id, n)
        for key, users in snapshot.presence.items():
            for user_id, (n, info) in users.items():
                _bump(s.presence.setdefault(key, {}).setdefault(user_id, {}), self.node_id, n)
                s.user_info.setdefault(key, {}).setdefault(user_id, info)
        for key, n in snapshot.users.items():
            _bump(s.users.setdefault(key, {}), self.node_id, n)
        s.heartbeats[self.node_id] = s.clock()

    async def withdraw(self) -> Departures:
        departures = Departures()
        self.store.heartbeats.pop(self.node_id, None)
        self._remove_node(self.node_id, departures)
        return departures

    def _remove_node(self, node: str, out: Departures) -> None:
        s = self.store
        for counts in s.connections.values():
            counts.pop(node, None)
        for key in list(s.channels):
            counts = s.channels[key]
            if counts.pop(node, None) is not None:
                total = sum(counts.values())
                out.counts[key] = total
                if total == 0:
                    del s.channels[key]
                    out.vacated.append(key)
        for key in list(s.presence):
            members = s.presence[key]
            for user_id in list(members):
                if members[user_id].pop(node, None) is not None and not members[user_id]:
                    del members[user_id]
                    s.user_info.get(key, {}).pop(user_id, None)
                    out.members_removed.append((key[0], key[1], user_id))
            if not members:
                del s.presence[key]
                s.user_info.pop(key, None)
        for key in list(s.users):
            if s.users[key].pop(node, None) is not None and not s.users[key]:
                del s.users[key]
                out.users_offline.append(key)

    @property
    def healthy(self) -> bool:
        return True
