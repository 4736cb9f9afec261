"""ClusterState in Redis: cluster-wide totals plus each node's share of them, changed only by Lua scripts.

Keys (``{p}`` = prefix, ``{a}`` = app id, ``{n}`` = node id):

| key | type | holds |
|---|---|---|
| ``{p}:{a}:conns`` | string | open sockets of the app, all nodes |
| ``{p}:{a}:channels`` | hash | channel -> subscribed sockets (only occupied channels) |
| ``{p}:{a}:presence:{channel}`` | hash | user id -> sockets in the channel |
| ``{p}:{a}:members:{channel}`` | hash | user id -> user_info JSON (first socket's) |
| ``{p}:{a}:users`` | hash | user id -> signed-in sockets |
| ``{p}:{a}:cache:{channel}`` | string, EX ttl | JSON ``[event, data]`` of a cache channel |
| ``{p}:#node:{n}:conns`` | hash | app -> this node's sockets |
| ``{p}:#node:{n}:channels`` | hash | ``app\\nchannel`` -> this node's subscriptions |
| ``{p}:#node:{n}:presence`` | hash | ``app\\nchannel\\nuser`` -> this node's sockets of the member |
| ``{p}:#node:{n}:users`` | hash | ``app\\nuser`` -> this node's signed-in sockets |
| ``{p}:#nodes`` | zset | node -> last heartbeat (Redis clock, ms) |
| ``{p}:#reaping`` | zset | node -> when its share removal started |
| ``{p}:#reaper`` | string, PX | the reaper lock (one reaper at a time) |

Every total equals the sum of the nodes' shares, and every script changes a share and its total together,
so removing a dead node is subtracting its share (which lists exactly what it touched: no SCAN). Using
Redis's clock for heartbeats keeps liveness independent of the nodes' clock skew.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

import structlog
from redis.exceptions import RedisError

from hub.redis_connection import create_client, parse_redis_url
from hub.state import redis_lua
from hub.state.base import CachedEvent, ClusterState, Departures, NodeSnapshot, PresenceJoin, StateUnavailable

T = TypeVar("T")

SHARE_KINDS = ("conns", "channels", "presence", "users")
# Share fields removed per script call when draining a node: bounds how long one call blocks Redis.
DRAIN_BATCH = 500
# A reaping that started this long ago without finishing was abandoned by its reaper; finish it.
ABANDONED_REAP_MS = 60_000
REAPER_LOCK_MS = 30_000

_REDIS_ERRORS = (RedisError, OSError, TimeoutError)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _glob_escape(text: str) -> str:
    """Escape glob metacharacters so HSCAN MATCH treats a channel prefix literally."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisClusterState(ClusterState):
    """ClusterState on one Redis (or Sentinel-managed primary); see the module docstring for the layout."""

    def __init__(self, redis_url: str, prefix: str, node_id: str, *, timeout: float = 2.0) -> None:
        """Configure; nothing connects until ``start``. Every Redis round trip fails within ``timeout`` s."""
        self.node_id = node_id
        self._target = parse_redis_url(redis_url)
        self._prefix = prefix
        self._timeout = timeout
        self._log = structlog.get_logger("hub.state.redis").bind(node_id=node_id, redis=self._target.address)
        safe_id = "".join(c if c.isalnum() or c in "-_.:" else "_" for c in node_id)
        self._client = create_client(self._target, timeout=timeout, name=f"hub-state-{safe_id}")
        self._healthy = False

        self._nodes_key = f"{prefix}:#nodes"
        self._reaping_key = f"{prefix}:#reaping"
        self._lock_key = f"{prefix}:#reaper"
        self._share = {kind: self._share_key(node_id, kind) for kind in SHARE_KINDS}

        register = self._client.register_script
        self._add_connection = register(redis_lua.ADD_CONNECTION)
        self._remove_connection = register(redis_lua.REMOVE_CONNECTION)
        self._join_channel = register(redis_lua.JOIN_CHANNEL)
        self._leave_channel = register(redis_lua.LEAVE_CHANNEL)
        self._join_presence = register(redis_lua.JOIN_PRESENCE)
        self._leave_presence = register(redis_lua.LEAVE_PRESENCE)
        self._user_signed_in = register(redis_lua.USER_SIGNED_IN)
        self._user_signed_out = register(redis_lua.USER_SIGNED_OUT)
        self._heartbeat = register(redis_lua.HEARTBEAT)
        self._claim_dead = register(redis_lua.CLAIM_DEAD)
        self._claim_self = register(redis_lua.CLAIM_SELF)
        self._drain_share = register(redis_lua.DRAIN_SHARE)
        self._finish_drain = register(redis_lua.FINISH_DRAIN)
        self._resync = register(redis_lua.RESYNC)
        self._release_lock = register(redis_lua.RELEASE_LOCK)

    # keys

    def _share_key(self, node_id: str, kind: str) -> str:
        return f"{self._prefix}:#node:{node_id}:{kind}"

    def _conns_key(self, app_id: str) -> str:
        return f"{self._prefix}:{app_id}:conns"

    def _channels_key(self, app_id: str) -> str:
        return f"{self._prefix}:{app_id}:channels"

    def _presence_key(self, app_id: str, channel: str) -> str:
        return f"{self._prefix}:{app_id}:presence:{channel}"

    def _members_key(self, app_id: str, channel: str) -> str:
        return f"{self._prefix}:{app_id}:members:{channel}"

    def _users_key(self, app_id: str) -> str:
        return f"{self._prefix}:{app_id}:users"

    def _cache_key(self, app_id: str, channel: str) -> str:
        return f"{self._prefix}:{app_id}:cache:{channel}"

    # plumbing

    async def _run(self, op: str, awaitable: Awaitable[T]) -> T:
        """Await one Redis round trip within ``timeout``; turn any Redis failure into StateUnavailable."""
        try:
            async with asyncio.timeout(self._timeout):
                result = await awaitable
        except _REDIS_ERRORS as exc:
            if self._healthy:
                self._log.warning("state_unavailable", op=op, error=repr(exc))
            self._healthy = False
            raise StateUnavailable(f"Redis state store unreachable during {op}: {exc!r}") from exc
        if not self._healthy:
            self._healthy = True
            self._log.info("state_available", op=op)
        return result

    # lifecycle

    async def start(self) -> None:
        """Register this node, dropping any share a previous process with the same node id left behind."""
        await self.resync(NodeSnapshot())

    async def close(self) -> None:
        """Close the connection pool (the share stays: see ``withdraw``)."""
        await self._client.aclose()
        self._healthy = False

    # connections

    async def add_connection(self, app_id: str, limit: int) -> bool:
        """Count a socket unless the app's cluster-wide ``limit`` (>= 0) is reached."""
        keys = [self._conns_key(app_id), self._share["conns"]]
        return bool(await self._run("add_connection", self._add_connection(keys=keys, args=[app_id, limit])))

    async def remove_connection(self, app_id: str) -> None:
        """Uncount a socket of this node."""
        keys = [self._conns_key(app_id), self._share["conns"]]
        await self._run("remove_connection", self._remove_connection(keys=keys, args=[app_id]))

    # channels

    async def join_channel(self, app_id: str, channel: str) -> int:
        """Count a subscription; the total after (1 means the channel became occupied)."""
        keys = [self._channels_key(app_id), self._share["channels"]]
        args = [channel, f"{app_id}\n{channel}"]
        return int(await self._run("join_channel", self._join_channel(keys=keys, args=args)))

    async def leave_channel(self, app_id: str, channel: str) -> int:
        """Uncount a subscription of this node; the total after (0 means vacated)."""
        keys = [self._channels_key(app_id), self._share["channels"]]
        args = [channel, f"{app_id}\n{channel}"]
        return int(await self._run("leave_channel", self._leave_channel(keys=keys, args=args)))

    async def channel_subscriptions(self, app_id: str, channel: str) -> int:
        """Subscribed sockets across the cluster."""
        value = await self._run("channel_subscriptions", self._client.hget(self._channels_key(app_id), channel))
        return int(value) if value is not None else 0

    async def channels(self, app_id: str, prefix: str = "") -> dict[str, int]:
        """Occupied channels starting with ``prefix`` and their counts (HSCAN: never blocks Redis on big apps)."""
        key = self._channels_key(app_id)
        match = _glob_escape(prefix) + "*"
        found: dict[str, int] = {}
        cursor = 0
        while True:
            cursor, page = await self._run("channels", self._client.hscan(key, cursor, match=match, count=1000))
            assert isinstance(page, dict)  # a list only with no_values=True
            for name, count in page.items():
                found[_text(name)] = int(count)
            if cursor == 0:
                return found

    # presence

    async def join_presence(
        self, app_id: str, channel: str, user_id: str, user_info: Any, max_members: int
    ) -> PresenceJoin:
        """Add a socket of the user; refused when the user is new and ``max_members`` (>= 0) are present."""
        keys = [self._presence_key(app_id, channel), self._members_key(app_id, channel), self._share["presence"]]
        args: list[str | int] = [user_id, _json(user_info), max_members, f"{app_id}\n{channel}\n{user_id}"]
        accepted, first, flat = await self._run("join_presence", self._join_presence(keys=keys, args=args))
        members = {_text(flat[i]): json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}
        return PresenceJoin(accepted=bool(accepted), first=bool(first), members=members)

    async def leave_presence(self, app_id: str, channel: str, user_id: str) -> bool:
        """Remove a socket of the user on this node; True when it was the user's last in the cluster."""
        keys = [self._presence_key(app_id, channel), self._members_key(app_id, channel), self._share["presence"]]
        args = [user_id, f"{app_id}\n{channel}\n{user_id}"]
        return bool(await self._run("leave_presence", self._leave_presence(keys=keys, args=args)))

    async def presence_members(self, app_id: str, channel: str) -> dict[str, Any]:
        """Members of the presence channel: user id -> user_info."""
        flat = await self._run("presence_members", self._client.hgetall(self._members_key(app_id, channel)))
        return {_text(user): json.loads(info) for user, info in flat.items()}

    # signed-in users

    async def user_signed_in(self, app_id: str, user_id: str) -> bool:
        """Count a signed-in socket; True when the user just came online."""
        keys = [self._users_key(app_id), self._share["users"]]
        args = [user_id, f"{app_id}\n{user_id}"]
        return bool(await self._run("user_signed_in", self._user_signed_in(keys=keys, args=args)))

    async def user_signed_out(self, app_id: str, user_id: str) -> bool:
        """Uncount a signed-in socket of this node; True when the user just went offline."""
        keys = [self._users_key(app_id), self._share["users"]]
        args = [user_id, f"{app_id}\n{user_id}"]
        return bool(await self._run("user_signed_out", self._user_signed_out(keys=keys, args=args)))

    async def users_online(self, app_id: str, user_ids: Iterable[str]) -> set[str]:
        """The subset of ``user_ids`` with a signed-in socket anywhere."""
        wanted = list(dict.fromkeys(user_ids))
        if not wanted:
            return set()
        counts = await self._run("users_online", self._client.hmget(self._users_key(app_id), wanted))
        return {user for user, count in zip(wanted, counts, strict=True) if count is not None and int(count) > 0}

    # cache channels

    async def cache_set(self, app_id: str, channel: str, event: str, data: Any, ttl: int) -> None:
        """Keep the channel's last event for ``ttl`` seconds."""
        key = self._cache_key(app_id, channel)
        await self._run("cache_set", self._client.set(key, _json([event, data]), ex=max(1, ttl)))

    async def cache_get(self, app_id: str, channel: str) -> CachedEvent | None:
        """The cached event and its remaining whole seconds (at least 1), or None."""
        # One round trip, no MULTI: if the key expires between GET and PTTL, PTTL says -2 and we miss.
        pipe = self._client.pipeline(transaction=False)
        key = self._cache_key(app_id, channel)
        pipe.get(key)
        pipe.pttl(key)
        raw, pttl = await self._run("cache_get", pipe.execute())
        if raw is None or pttl is None or pttl == -2:
            return None
        event, data = json.loads(raw)
        return CachedEvent(event=event, data=data, ttl=max(1, int(pttl) // 1000))

    # liveness

    async def heartbeat(self) -> bool:
        """Record that this node is alive; False when its record had been reaped (the caller must resync)."""
        keys = [self._nodes_key, self._reaping_key]
        return bool(await self._run("heartbeat", self._heartbeat(keys=keys, args=[self.node_id])))

    async def reap_dead_nodes(self, silence: float) -> Departures:
        """Remove the share of every other node silent for ``silence`` s; empty if another reaper is at work.

        Raises StateUnavailable only if nothing was removed; a failure midway returns what was removed.
        """
        departures = Departures()
        token = secrets.token_hex(8)
        locked = await self._run("reap_lock", self._client.set(self._lock_key, token, nx=True, px=REAPER_LOCK_MS))
        if not locked:
            return departures
        try:
            keys = [self._nodes_key, self._reaping_key]
            args: list[str | int] = [int(silence * 1000), self.node_id, max(ABANDONED_REAP_MS, int(silence * 1000))]
            dead = [_text(n) for n in await self._run("reap_claim", self._claim_dead(keys=keys, args=args))]
            for node in dead:
                self._log.warning("state_reaping_node", dead_node=node, silence=silence)
                if not await self._drain(node, departures):
                    break
        finally:
            # Best effort: if this fails the lock simply expires after REAPER_LOCK_MS.
            try:
                await self._run("reap_unlock", self._release_lock(keys=[self._lock_key], args=[token]))
            except StateUnavailable:
                self._log.warning("state_reaper_lock_not_released")
        return departures

    async def resync(self, snapshot: NodeSnapshot) -> None:
        """Replace this node's whole share by ``snapshot`` in one script and register the node alive."""
        args: list[Any] = [self._prefix, self.node_id]
        args.append(len(snapshot.connections))
        for app_id, n in snapshot.connections.items():
            args += [app_id, n]
        args.append(len(snapshot.channels))
        for (app_id, channel), n in snapshot.channels.items():
            args += [f"{app_id}\n{channel}", n]
        presence = [
            (f"{app_id}\n{channel}\n{user_id}", n, _json(info))
            for (app_id, channel), users in snapshot.presence.items()
            for user_id, (n, info) in users.items()
        ]
        args.append(len(presence))
        for entry in presence:
            args += entry
        args.append(len(snapshot.users))
        for (app_id, user_id), n in snapshot.users.items():
            args += [f"{app_id}\n{user_id}", n]
        keys = [self._nodes_key, self._reaping_key, *(self._share[kind] for kind in SHARE_KINDS)]
        await self._run("resync", self._resync(keys=keys, args=args))

    async def withdraw(self) -> Departures:
        """Remove this node's whole share (graceful shutdown) and report the transitions it caused.

        If Redis fails midway, the transitions made so far are returned and a reaper removes the rest.
        """
        departures = Departures()
        keys = [self._nodes_key, self._reaping_key]
        await self._run("withdraw", self._claim_self(keys=keys, args=[self.node_id]))
        await self._drain(self.node_id, departures)
        return departures

    async def _drain(self, node: str, out: Departures) -> bool:
        """Subtract a claimed node's share from the totals in batches, collecting the transitions into ``out``.

        Returns False if Redis failed midway. The transitions applied so far are in ``out`` and must still
        be announced, so the failure is logged rather than raised; the node stays claimed in
        ``{p}:#reaping`` and a later reaper finishes it (see ABANDONED_REAP_MS).
        """
        shares = [self._share_key(node, kind) for kind in SHARE_KINDS]
        try:
            while True:
                for kind, share in zip(SHARE_KINDS, shares, strict=True):
                    while True:
                        args: list[str | int] = [self._prefix, node, kind, DRAIN_BATCH]
                        keys = [self._reaping_key, share]
                        result = await self._run("drain", self._drain_share(keys=keys, args=args))
                        status = int(result[0])
                        if status == -1:
                            self._log.info("state_reap_cancelled", dead_node=node, reason="node resynced")
                            return True
                        if status == 0:
                            break
                        _collect(kind, result[1:], out)
                keys = [self._reaping_key, *shares]
                if await self._run("drain_finish", self._finish_drain(keys=keys, args=[node])):
                    return True
        except StateUnavailable:
            self._log.warning("state_drain_interrupted", drained_node=node, hint="a later reaper finishes it")
            return False

    @property
    def healthy(self) -> bool:
        """Whether the last Redis round trip succeeded."""
        return self._healthy


def _collect(kind: str, items: list[Any], out: Departures) -> None:
    """Fold one drain batch's transitions (see DRAIN_SHARE) into ``out``."""
    if kind == "channels":
        for i in range(0, len(items), 3):
            key = (_text(items[i]), _text(items[i + 1]))
            total = int(items[i + 2])
            out.counts[key] = total
            if total == 0:
                out.vacated.append(key)
    elif kind == "presence":
        for i in range(0, len(items), 3):
            out.members_removed.append((_text(items[i]), _text(items[i + 1]), _text(items[i + 2])))
    elif kind == "users":
        for i in range(0, len(items), 2):
            out.users_offline.append((_text(items[i]), _text(items[i + 1])))
