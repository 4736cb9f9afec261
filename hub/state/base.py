"""The ClusterState contract: what every node must agree on, held outside the nodes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class StateUnavailable(Exception):
    """The state store could not be reached; nothing was changed."""


@dataclass(frozen=True, slots=True)
class PresenceJoin:
    """Outcome of a presence join: refused (channel full), first socket of the user, members after."""

    accepted: bool
    first: bool
    members: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CachedEvent:
    """The last event of a cache channel and the seconds it has left."""

    event: str
    data: Any
    ttl: int


@dataclass
class NodeSnapshot:
    """Everything one node contributes to the cluster state, rebuilt from its live sockets.

    Keys: ``connections[app]``, ``channels[(app, channel)]`` (sockets), ``presence[(app, channel)]``
    (user -> (sockets, user_info)), ``users[(app, user)]`` (signed-in sockets).
    """

    connections: dict[str, int] = field(default_factory=dict)
    channels: dict[tuple[str, str], int] = field(default_factory=dict)
    presence: dict[tuple[str, str], dict[str, tuple[int, Any]]] = field(default_factory=dict)
    users: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass
class Departures:
    """Transitions caused by removing a node's sockets at once (reaped or drained): what to announce."""

    vacated: list[tuple[str, str]] = field(default_factory=list)
    members_removed: list[tuple[str, str, str]] = field(default_factory=list)
    users_offline: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)


class ClusterState(ABC):
    """Shared state of one node's view of the cluster; every count is cluster-wide.

    Contract (every implementation passes tests/contract):
    - Each node's contribution is kept apart (per node id) so a dead node's share can be removed.
    - Joins and leaves are atomic: of any number of concurrent joins of one user, exactly one sees
      ``first``; of leaves, exactly one sees ``last``. Occupancy counts likewise cross 0 exactly once.
    - Methods raise StateUnavailable when the store is unreachable; the node keeps its own record
      and calls ``resync`` once it is back, which replaces this node's share wholesale.
    """

    node_id: str

    @abstractmethod
    async def start(self) -> None:
        """Connect and register this node (first heartbeat)."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections (does not remove this node's share: see ``withdraw``)."""

    @abstractmethod
    async def add_connection(self, app_id: str, limit: int) -> bool:
        """Count a new socket of the app; False (and nothing counted) when ``limit`` >= 0 is reached."""

    @abstractmethod
    async def remove_connection(self, app_id: str) -> None:
        """Uncount a closed socket of the app."""

    @abstractmethod
    async def join_channel(self, app_id: str, channel: str) -> int:
        """Count a socket subscribing; return the cluster-wide subscription count after (1 = occupied)."""

    @abstractmethod
    async def leave_channel(self, app_id: str, channel: str) -> int:
        """Uncount a socket leaving; return the cluster-wide count after (0 = vacated)."""

    @abstractmethod
    async def channel_subscriptions(self, app_id: str, channel: str) -> int:
        """Sockets subscribed to the channel across the cluster."""

    @abstractmethod
    async def channels(self, app_id: str, prefix: str = "") -> dict[str, int]:
        """Occupied channels whose name starts with ``prefix``, with their subscription counts."""

    @abstractmethod
    async def join_presence(
        self, app_id: str, channel: str, user_id: str, user_info: Any, max_members: int
    ) -> PresenceJoin:
        """Add a socket of ``user_id`` to a presence channel; refuse a new user past ``max_members``."""

    @abstractmethod
    async def leave_presence(self, app_id: str, channel: str, user_id: str) -> bool:
        """Remove a socket of ``user_id``; True when it was the user's last socket (member_removed)."""

    @abstractmethod
    async def presence_members(self, app_id: str, channel: str) -> dict[str, Any]:
        """Current members: user id -> user_info."""

    @abstractmethod
    async def user_signed_in(self, app_id: str, user_id: str) -> bool:
        """Count a socket signed in as ``user_id``; True when it is the user's first (online)."""

    @abstractmethod
    async def user_signed_out(self, app_id: str, user_id: str) -> bool:
        """Uncount a signed-in socket; True when it was the user's last (offline)."""

    @abstractmethod
    async def users_online(self, app_id: str, user_ids: Iterable[str]) -> set[str]:
        """Which of ``user_ids`` have at least one signed-in socket."""

    @abstractmethod
    async def cache_set(self, app_id: str, channel: str, event: str, data: Any, ttl: int) -> None:
        """Remember the last event of a cache channel for ``ttl`` seconds."""

    @abstractmethod
    async def cache_get(self, app_id: str, channel: str) -> CachedEvent | None:
        """The cached event of a cache channel, if any."""

    @abstractmethod
    async def heartbeat(self) -> bool:
        """Prove this node alive; False when its record had been reaped (the caller must resync)."""

    @abstractmethod
    async def reap_dead_nodes(self, silence: float) -> Departures:
        """Remove the share of nodes silent for ``silence`` seconds (one reaper at a time)."""

    @abstractmethod
    async def resync(self, snapshot: NodeSnapshot) -> None:
        """Replace this node's whole share with ``snapshot`` (after a store outage or being reaped).

        ``snapshot`` is taken in the same event-loop step as this call and counts every write the node
        began before it, pending ones as if they succeed (an admission, a presence join). The share ends
        as if all of those had happened before the rewrite and every later write after it: a write begun
        earlier that reaches the store late is dropped, writes begun later wait for the rewrite, and a
        pending admission or presence join that the store refused is taken back out.
        """

    @abstractmethod
    async def withdraw(self) -> Departures:
        """Remove this node's whole share (graceful shutdown) and report the transitions."""

    @property
    @abstractmethod
    def healthy(self) -> bool:
        """Whether the store is reachable."""

    @property
    def needs_resync(self) -> bool:
        """Whether a store operation failed since the last ``resync`` began, so this node's share may be wrong.

        A write that timed out may or may not have been applied, and a Redis failover can lose the last
        writes it had acknowledged; rewriting the share from the live sockets repairs both.
        """
        return False
