"""ClusterState in Redis: cluster-wide totals plus each node's share of them, changed only by Lua scripts.

One key layout for a single Redis, Sentinel and Redis Cluster (``p`` = prefix, ``a`` = app id, ``n`` = node
id; docs/redis-layout.md explains the choices). Every key of an app's state carries the hash tag
``{p:a}``, so each join or leave is one script on one slot:

| key | type | holds |
|---|---|---|
| ``{p:a}:conns`` | string | open sockets of the app, all nodes |
| ``{p:a}:channels`` | hash | channel -> subscribed sockets (only occupied channels) |
| ``{p:a}:presence:<channel>`` | hash | user id -> sockets in the channel |
| ``{p:a}:members:<channel>`` | hash | user id -> user_info JSON (first socket's) |
| ``{p:a}:users`` | hash | user id -> signed-in sockets |
| ``{p:a}:node:<n>:conns`` | string | node n's sockets of the app |
| ``{p:a}:node:<n>:channels`` | hash | channel -> node n's subscriptions |
| ``{p:a}:node:<n>:presence`` | hash | ``channel\\nuser`` -> node n's sockets of the member |
| ``{p:a}:node:<n>:users`` | hash | user id -> node n's signed-in sockets |
| ``{p:a}:node:<n>:epoch`` | string | node n's epoch when it last wrote this share (see redis_lua) |
| ``{p:a:<channel>}:cache`` | string, EX ttl | JSON ``[event, data]`` of a cache channel (own slot per channel) |
| ``{p:#nodes}:alive`` | zset | node -> last heartbeat (Redis clock, ms) |
| ``{p:#nodes}:reaping`` | zset | node -> when its share removal started |
| ``{p:#nodes}:reaper`` | string, PX | the reaper lock (one reaper at a time) |
| ``{p:#nodes}:epochs`` | hash | node -> its current epoch |
| ``{p:#nodes}:apps:<n>`` | set | apps node n has (or may have) a share in |

Every total equals the sum of the nodes' shares, and every script changes a share and its total together
in one slot, so removing a dead node is subtracting its share app by app (the app index lists them: no
SCAN). Using Redis's clock for heartbeats keeps liveness independent of the nodes' clock skew.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

import structlog
from redis.exceptions import RedisError

from hub.redis_topology import parse_topology
from hub.state import redis_lua
from hub.state.base import CachedEvent, ClusterState, Departures, NodeSnapshot, PresenceJoin, StateUnavailable
from hub.state.redis_scripts import ScriptRunner

T = TypeVar("T")

# Share fields named per script call when draining or resyncing: bounds how long one call blocks Redis.
DRAIN_BATCH = 500
# A reaping that started this long ago without finishing was abandoned by its reaper; finish it.
ABANDONED_REAP_MS = 60_000
REAPER_LOCK_MS = 30_000
# A node that keeps writing while it is drained (it was paused, not dead) is drained this many times over
# before the reaper leaves the rest to its resync (or to the next reaper).
DRAIN_ROUNDS = 10

_REDIS_ERRORS = (RedisError, OSError, TimeoutError)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _glob_escape(text: str) -> str:
    """Escape glob metacharacters so HSCAN MATCH treats a channel prefix literally."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class _AppKeys:
    """The keys of one app's state and of one node's share of it, all in the app's slot."""

    __slots__ = (
        "channels",
        "conns",
        "epoch",
        "share_channels",
        "share_conns",
        "share_presence",
        "share_users",
        "tag",
        "users",
    )

    def __init__(self, prefix: str, app_id: str, node_id: str) -> None:
        self.tag = tag = "{" + f"{prefix}:{app_id}" + "}"
        self.conns = f"{tag}:conns"
        self.channels = f"{tag}:channels"
        self.users = f"{tag}:users"
        share = f"{tag}:node:{node_id}"
        self.share_conns = f"{share}:conns"
        self.share_channels = f"{share}:channels"
        self.share_presence = f"{share}:presence"
        self.share_users = f"{share}:users"
        self.epoch = f"{share}:epoch"

    def presence(self, channel: str) -> str:
        return f"{self.tag}:presence:{channel}"

    def members(self, channel: str) -> str:
        return f"{self.tag}:members:{channel}"

    def fixed(self) -> list[str]:
        """KEYS[1..8] of DRAIN_APP and RESYNC_APP."""
        return [
            self.epoch,
            self.conns,
            self.channels,
            self.users,
            self.share_conns,
            self.share_channels,
            self.share_presence,
            self.share_users,
        ]


class _PresenceKeys:
    """Presence/members key pairs appended to an app script's KEYS; ``index`` is the 1-based Lua index."""

    def __init__(self, keys: _AppKeys, base: list[str]) -> None:
        self._app = keys
        self.keys = base
        self._index: dict[str, int] = {}

    def index(self, channel: str) -> int:
        at = self._index.get(channel)
        if at is None:
            self.keys += [self._app.presence(channel), self._app.members(channel)]
            at = self._index[channel] = len(self.keys) - 1
        return at


class RedisClusterState(ClusterState):
    """ClusterState on a single Redis, a Sentinel-managed primary or a Redis Cluster (see the module docstring)."""

    def __init__(self, redis_url: str, prefix: str, node_id: str, *, timeout: float = 2.0) -> None:
        """Configure; nothing connects until ``start``. Every Redis round trip fails within ``timeout`` s."""
        self.node_id = node_id
        topology = parse_topology(redis_url)
        self._prefix = prefix
        self._timeout = timeout
        self._log = structlog.get_logger("hub.state.redis").bind(node_id=node_id, redis=topology.address)
        safe_id = "".join(c if c.isalnum() or c in "-_.:" else "_" for c in node_id)
        self._client = topology.command_client(timeout=timeout, name=f"hub-state-{safe_id}")
        self._healthy = False
        self._failed_since_resync = False

        nodes = "{" + f"{prefix}:#nodes" + "}"
        self._alive_key = f"{nodes}:alive"
        self._reaping_key = f"{nodes}:reaping"
        self._lock_key = f"{nodes}:reaper"
        self._epochs_key = f"{nodes}:epochs"
        self._apps_prefix = f"{nodes}:apps:"
        self._keys: dict[str, _AppKeys] = {}
        # This node's epoch, the apps registered in it (app index + app epoch written), registrations under
        # way, and every app this process ever wrote a share of (a resync covers them even if a reaper
        # dropped the index).
        self._epoch = 0
        self._registered: set[str] = set()
        self._registering: dict[tuple[str, int], asyncio.Future[None]] = {}
        self._touched: set[str] = set()
        # While a resync rewrites the share: the epoch it will have written with (see ``resync``).
        self._rebuilding: asyncio.Future[int] | None = None

        # Hot path in a reconnect storm: the joins and leaves of one event-loop turn share one pipeline. The
        # storm benchmark guards it (ws CPU for 5,000 reconnects 3.4-3.7 s unbatched, 2.05-2.23 s batched).
        self._scripts = scripts = ScriptRunner(self._client, batch=True)
        script = scripts.script
        self._add_connection = script(redis_lua.ADD_CONNECTION)
        self._remove_connection = script(redis_lua.REMOVE_CONNECTION)
        self._join_channel = script(redis_lua.JOIN_CHANNEL)
        self._leave_channel = script(redis_lua.LEAVE_CHANNEL)
        self._join_presence = script(redis_lua.JOIN_PRESENCE)
        self._leave_presence = script(redis_lua.LEAVE_PRESENCE)
        self._user_signed_in = script(redis_lua.USER_SIGNED_IN)
        self._user_signed_out = script(redis_lua.USER_SIGNED_OUT)
        self._register_app = script(redis_lua.REGISTER_APP)
        self._heartbeat = script(redis_lua.HEARTBEAT)
        self._claim_dead = script(redis_lua.CLAIM_DEAD)
        self._claim_self = script(redis_lua.CLAIM_SELF)
        self._drain_app = script(redis_lua.DRAIN_APP)
        self._finish_drain = script(redis_lua.FINISH_DRAIN)
        self._resync_begin = script(redis_lua.RESYNC_BEGIN)
        self._resync_app = script(redis_lua.RESYNC_APP)
        self._release_lock = script(redis_lua.RELEASE_LOCK)

    # keys

    def _app(self, app_id: str) -> _AppKeys:
        keys = self._keys.get(app_id)
        if keys is None:
            keys = self._keys[app_id] = _AppKeys(self._prefix, app_id, self.node_id)
        return keys

    def _apps_key(self, node_id: str) -> str:
        return self._apps_prefix + node_id

    def _cache_key(self, app_id: str, channel: str) -> str:
        return "{" + f"{self._prefix}:{app_id}:{channel}" + "}:cache"

    # plumbing

    async def _run(self, op: str, awaitable: Awaitable[T]) -> T:
        """Await one Redis round trip within ``timeout``; turn any Redis failure into StateUnavailable."""
        try:
            async with asyncio.timeout(self._timeout):
                if not self._scripts.initialized:
                    await self._scripts.ready()
                result = await awaitable
        except _REDIS_ERRORS as exc:
            if self._healthy:
                self._log.warning("state_unavailable", op=op, error=repr(exc))
            self._healthy = False
            self._failed_since_resync = True
            raise StateUnavailable(f"Redis state store unreachable during {op}: {exc!r}") from exc
        if not self._healthy:
            self._healthy = True
            self._log.info("state_available", op=op)
        return result

    async def _write_epoch(self) -> int:
        """The epoch a share write begun now carries; while a resync runs, waits for it and takes its epoch.

        Without a resync running this returns without suspending, so the write is issued in the same step
        as its caller's record of it (see ``resync``).
        """
        rebuilding = self._rebuilding
        if rebuilding is None:
            return self._epoch
        return await asyncio.shield(rebuilding)

    def _rewritten_since(self, epoch: int) -> bool:
        """Whether a resync began after a write of ``epoch`` was issued (its snapshot counted the write)."""
        return self._rebuilding is not None or self._epoch != epoch

    async def _share_of(self, app_id: str, epoch: int) -> _AppKeys:
        """The app's keys, once this node is registered in the app for ``epoch`` (before any share write)."""
        keys = self._app(app_id)
        # A loop, not an if: a registration that finished under an epoch a resync has since replaced counts
        # for nothing, and the app is registered again under the new one. A write of an older epoch needs
        # none: the resync that replaced its epoch covers the app (``_register`` marked it touched).
        while app_id not in self._registered and epoch == self._epoch:
            await self._register(app_id, epoch)
        return keys

    async def _register(self, app_id: str, epoch: int) -> None:
        """Add the app to this node's app index and raise its app epoch; concurrent callers share one try."""
        self._touched.add(app_id)
        pending = self._registering.get((app_id, epoch))
        if pending is None:
            pending = asyncio.ensure_future(self._register_once(app_id, epoch))
            self._registering[(app_id, epoch)] = pending
            pending.add_done_callback(lambda _: self._registering.pop((app_id, epoch), None))
        await asyncio.shield(pending)

    async def _register_once(self, app_id: str, epoch: int) -> None:
        await self._run(
            "register_app",
            asyncio.gather(
                self._client.sadd(self._apps_key(self.node_id), app_id),
                self._register_app([self._app(app_id).epoch], [epoch]),
            ),
        )
        if epoch == self._epoch:
            self._registered.add(app_id)

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
        epoch = await self._write_epoch()
        k = await self._share_of(app_id, epoch)
        counted = bool(
            await self._run("add_connection", self._add_connection([k.conns, k.share_conns, k.epoch], [limit, epoch]))
        )
        if not counted and self._rewritten_since(epoch):
            # The rewrite's snapshot counted this socket as admitted (see ``resync``): take it back out.
            with contextlib.suppress(StateUnavailable):
                await self.remove_connection(app_id)
        return counted

    async def remove_connection(self, app_id: str) -> None:
        """Uncount a socket of this node."""
        epoch = await self._write_epoch()
        k = self._app(app_id)
        await self._run("remove_connection", self._remove_connection([k.conns, k.share_conns, k.epoch], [epoch]))

    # channels

    async def join_channel(self, app_id: str, channel: str) -> int:
        """Count a subscription; the total after (1 means the channel became occupied)."""
        epoch = await self._write_epoch()
        k = await self._share_of(app_id, epoch)
        keys = [k.channels, k.share_channels, k.epoch]
        return int(await self._run("join_channel", self._join_channel(keys, [channel, epoch])))

    async def leave_channel(self, app_id: str, channel: str) -> int:
        """Uncount a subscription of this node; the total after (0 means vacated)."""
        epoch = await self._write_epoch()
        k = self._app(app_id)
        keys = [k.channels, k.share_channels, k.epoch]
        return int(await self._run("leave_channel", self._leave_channel(keys, [channel, epoch])))

    async def channel_subscriptions(self, app_id: str, channel: str) -> int:
        """Subscribed sockets across the cluster."""
        value = await self._run("channel_subscriptions", self._client.hget(self._app(app_id).channels, channel))
        return int(value) if value is not None else 0

    async def channels(self, app_id: str, prefix: str = "") -> dict[str, int]:
        """Occupied channels starting with ``prefix`` and their counts (HSCAN: never blocks Redis on big apps)."""
        key = self._app(app_id).channels
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
        epoch = await self._write_epoch()
        k = await self._share_of(app_id, epoch)
        keys = [k.presence(channel), k.members(channel), k.share_presence, k.epoch]
        args: list[str | int] = [user_id, _json(user_info), max_members, f"{channel}\n{user_id}", epoch]
        accepted, first, flat = await self._run("join_presence", self._join_presence(keys, args))
        if not accepted and self._rewritten_since(epoch):
            # The rewrite's snapshot counted this member as joined (see ``resync``): take it back out.
            with contextlib.suppress(StateUnavailable):
                await self.leave_presence(app_id, channel, user_id)
        members = {_text(flat[i]): json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}
        return PresenceJoin(accepted=bool(accepted), first=bool(first), members=members)

    async def leave_presence(self, app_id: str, channel: str, user_id: str) -> bool:
        """Remove a socket of the user on this node; True when it was the user's last in the cluster."""
        epoch = await self._write_epoch()
        k = self._app(app_id)
        keys = [k.presence(channel), k.members(channel), k.share_presence, k.epoch]
        args: list[str | int] = [user_id, f"{channel}\n{user_id}", epoch]
        return bool(await self._run("leave_presence", self._leave_presence(keys, args)))

    async def presence_members(self, app_id: str, channel: str) -> dict[str, Any]:
        """Members of the presence channel: user id -> user_info."""
        flat = await self._run("presence_members", self._client.hgetall(self._app(app_id).members(channel)))
        return {_text(user): json.loads(info) for user, info in flat.items()}

    # signed-in users

    async def user_signed_in(self, app_id: str, user_id: str) -> bool:
        """Count a signed-in socket; True when the user just came online."""
        epoch = await self._write_epoch()
        k = await self._share_of(app_id, epoch)
        keys = [k.users, k.share_users, k.epoch]
        return bool(await self._run("user_signed_in", self._user_signed_in(keys, [user_id, epoch])))

    async def user_signed_out(self, app_id: str, user_id: str) -> bool:
        """Uncount a signed-in socket of this node; True when the user just went offline."""
        epoch = await self._write_epoch()
        k = self._app(app_id)
        keys = [k.users, k.share_users, k.epoch]
        return bool(await self._run("user_signed_out", self._user_signed_out(keys, [user_id, epoch])))

    async def users_online(self, app_id: str, user_ids: Iterable[str]) -> set[str]:
        """The subset of ``user_ids`` with a signed-in socket anywhere."""
        wanted = list(dict.fromkeys(user_ids))
        if not wanted:
            return set()
        counts = await self._run("users_online", self._client.hmget(self._app(app_id).users, wanted))
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
        return bool(await self._run("heartbeat", self._heartbeat([self._alive_key], [self.node_id])))

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
            keys = [self._alive_key, self._reaping_key, self._epochs_key]
            args: list[str | int] = [int(silence * 1000), self.node_id, max(ABANDONED_REAP_MS, int(silence * 1000))]
            flat = [_text(v) for v in await self._run("reap_claim", self._claim_dead(keys, args))]
            for i in range(0, len(flat), 2):
                node, epoch = flat[i], int(flat[i + 1])
                self._log.warning("state_reaping_node", dead_node=node, silence=silence)
                if not await self._drain(node, epoch, set(), departures):
                    break
        finally:
            # Best effort: if this fails the lock simply expires after REAPER_LOCK_MS.
            try:
                await self._run("reap_unlock", self._release_lock([self._lock_key], [token]))
            except StateUnavailable:
                self._log.warning("state_reaper_lock_not_released")
        return departures

    async def resync(self, snapshot: NodeSnapshot) -> None:
        """Replace this node's whole share by ``snapshot``, app by app, under a new epoch; register it alive.

        The new epoch is recorded first, so a reaper that claimed this node earlier leaves each app alone
        from the moment its first resync batch ran (its app epoch is then newer than the claim).

        Writes around it (the ClusterState contract): ``snapshot`` counts every write begun before this call.
        A write begun earlier that Redis applies after the rewrite would count twice; it carries its older
        epoch, and the scripts drop it (``stale`` in redis_lua). Writes begun from this call on wait until
        the rewrite is done, then apply on top of it with the new epoch. A pending admission or presence join
        that Redis then refused was counted by the snapshot as accepted; its caller takes it back out.
        """
        rebuilding = asyncio.get_running_loop().create_future()
        self._rebuilding = rebuilding
        try:
            await self._rewrite(snapshot)
        except BaseException as exc:
            failure = exc if isinstance(exc, StateUnavailable) else StateUnavailable(f"resync did not finish: {exc!r}")
            rebuilding.set_exception(failure)
            rebuilding.exception()  # retrieved: writes that waited for it raise it themselves
            raise
        else:
            rebuilding.set_result(self._epoch)
        finally:
            if self._rebuilding is rebuilding:
                self._rebuilding = None

    async def _rewrite(self, snapshot: NodeSnapshot) -> None:
        self._failed_since_resync = False
        per_app: dict[str, NodeSnapshot] = {}

        def part(app_id: str) -> NodeSnapshot:
            return per_app.setdefault(app_id, NodeSnapshot())

        for app_id, n in snapshot.connections.items():
            part(app_id).connections[app_id] = n
        for (app_id, channel), n in snapshot.channels.items():
            part(app_id).channels[(app_id, channel)] = n
        for (app_id, channel), users in snapshot.presence.items():
            part(app_id).presence[(app_id, channel)] = users
        for (app_id, user_id), n in snapshot.users.items():
            part(app_id).users[(app_id, user_id)] = n

        keys = [self._alive_key, self._reaping_key, self._epochs_key, self._apps_key(self.node_id)]
        begun = [_text(v) for v in await self._run("resync", self._resync_begin(keys, [self.node_id, *per_app]))]
        self._epoch = int(begun[0])
        self._registered = set()
        self._touched.update(per_app)
        for app_id in sorted(set(begun[1:]) | self._touched):
            await self._resync_one(app_id, per_app.get(app_id, NodeSnapshot()))
            self._registered.add(app_id)

    async def _resync_one(self, app_id: str, snapshot: NodeSnapshot) -> None:
        """Set this node's share of one app to ``snapshot`` in batches of RESYNC_APP."""
        k = self._app(app_id)
        pipe = self._client.pipeline(transaction=False)
        pipe.hgetall(k.share_channels)
        pipe.hgetall(k.share_presence)
        pipe.hgetall(k.share_users)
        old_channels, old_presence, old_users = await self._run("resync_read", pipe.execute())

        channels = {channel: n for (_, channel), n in snapshot.channels.items()}
        channels.update({_text(c): 0 for c in old_channels if _text(c) not in channels})
        presence: dict[str, tuple[str, int, str]] = {}
        for (_, channel), users in snapshot.presence.items():
            for user_id, (n, info) in users.items():
                presence[f"{channel}\n{user_id}"] = (channel, n, _json(info))
        for raw in old_presence:
            field = _text(raw)
            if field not in presence:
                presence[field] = (field.split("\n", 1)[0], 0, "")
        signed_in = {user_id: n for (_, user_id), n in snapshot.users.items()}
        signed_in.update({_text(u): 0 for u in old_users if _text(u) not in signed_in})

        entries: list[tuple[str, Any]] = [
            *(("c", item) for item in channels.items()),
            *(("p", item) for item in presence.items()),
            *(("u", item) for item in signed_in.items()),
        ]
        conns = snapshot.connections.get(app_id, 0)
        for start in range(0, max(1, len(entries)), DRAIN_BATCH):
            batch = entries[start : start + DRAIN_BATCH]
            pkeys = _PresenceKeys(k, k.fixed())
            c_args: list[str | int] = []
            p_args: list[str | int] = []
            u_args: list[str | int] = []
            for kind, (name, value) in batch:
                if kind == "c":
                    c_args += [name, value]
                elif kind == "p":
                    channel, n, info = value
                    p_args += [name, pkeys.index(channel), n, info]
                else:
                    u_args += [name, value]
            args: list[str | int] = [self._epoch, conns if start == 0 else -1]
            args += [len(c_args) // 2, *c_args, len(p_args) // 4, *p_args, len(u_args) // 2, *u_args]
            await self._run("resync", self._resync_app(pkeys.keys, args))

    async def withdraw(self) -> Departures:
        """Remove this node's whole share (graceful shutdown) and report the transitions it caused.

        If Redis fails midway, the transitions made so far are returned and a reaper removes the rest.
        """
        departures = Departures()
        keys = [self._alive_key, self._reaping_key, self._epochs_key]
        epoch = int(_text(await self._run("withdraw", self._claim_self(keys, [self.node_id, self._epoch]))))
        await self._drain(self.node_id, epoch, set(self._touched), departures)
        return departures

    async def _drain(self, node: str, epoch: int, known: set[str], out: Departures) -> bool:
        """Subtract a claimed node's share from the totals app by app, collecting the transitions into ``out``.

        ``known`` adds apps to those of the node's app index. Returns False if Redis failed midway. The
        transitions applied so far are in ``out`` and must still be announced, so the failure is logged
        rather than raised; the node stays claimed in the reaping zset and a later reaper finishes it (see
        ABANDONED_REAP_MS).
        """
        try:
            members = await self._run("drain_apps", self._client.smembers(self._apps_key(node)))
            pending = sorted({_text(app) for app in members} | known)
            drained: list[str] = []
            while True:
                for app_id in pending:
                    if not await self._drain_one(node, epoch, app_id, out):
                        self._log.info("state_reap_cancelled", dead_node=node, app_id=app_id, reason="node resynced")
                    drained.append(app_id)
                keys = [self._reaping_key, self._epochs_key, self._apps_key(node)]
                done = [
                    _text(v) for v in await self._run("drain_finish", self._finish_drain(keys, [node, epoch, *drained]))
                ]
                if done[0] != "0":
                    if done[0] == "-1":
                        self._log.info("state_reap_cancelled", dead_node=node, reason="node resynced")
                    return True
                pending = done[1:]
        except StateUnavailable:
            self._log.warning("state_drain_interrupted", drained_node=node, hint="a later reaper finishes it")
            return False

    async def _drain_one(self, node: str, epoch: int, app_id: str, out: Departures) -> bool:
        """Drain node ``node``'s share of one app; False when the node resynced the app since the claim."""
        k = _AppKeys(self._prefix, app_id, node)
        for _ in range(DRAIN_ROUNDS):
            cursors = {"c": 0, "p": 0, "u": 0}
            shares = {"c": k.share_channels, "p": k.share_presence, "u": k.share_users}
            while True:
                # One page of each share hash per script call: HSCAN keeps each read short on big shares.
                pipe = self._client.pipeline(transaction=False)
                kinds = [kind for kind, cursor in cursors.items() if cursor >= 0]
                for kind in kinds:
                    pipe.hscan(shares[kind], cursors[kind], count=DRAIN_BATCH)
                pages = await self._run("drain_read", pipe.execute()) if kinds else []
                fields: dict[str, list[str]] = {"c": [], "p": [], "u": []}
                for kind, (cursor, page) in zip(kinds, pages, strict=True):
                    cursors[kind] = int(cursor) or -1
                    fields[kind] = [_text(f) for f in page]
                pkeys = _PresenceKeys(k, k.fixed())
                p_args: list[str | int] = []
                for field in fields["p"]:
                    p_args += [field, pkeys.index(field.split("\n", 1)[0])]
                args: list[str | int] = [epoch, len(fields["c"]), *fields["c"], len(p_args) // 2, *p_args]
                args += [len(fields["u"]), *fields["u"]]
                result = await self._run("drain", self._drain_app(pkeys.keys, args))
                if int(result[0]) == -1:
                    return False
                _collect(app_id, result[1:], out)
                if all(cursor < 0 for cursor in cursors.values()):
                    break
            if int(result[0]) == 1:
                return True
        self._log.warning("state_drain_incomplete", drained_node=node, app_id=app_id, rounds=DRAIN_ROUNDS)
        return True

    @property
    def needs_resync(self) -> bool:
        """A Redis round trip failed since the last resync began (see ClusterState.needs_resync)."""
        return self._failed_since_resync

    @property
    def healthy(self) -> bool:
        """Whether the last Redis round trip succeeded."""
        return self._healthy


def _collect(app_id: str, result: list[Any], out: Departures) -> None:
    """Fold one DRAIN_APP batch's transitions into ``out``."""
    channels, members, users = result
    for i in range(0, len(channels), 2):
        key = (app_id, _text(channels[i]))
        total = int(channels[i + 1])
        out.counts[key] = total
        if total == 0:
            out.vacated.append(key)
    for field in members:
        channel, user_id = _text(field).split("\n", 1)
        out.members_removed.append((app_id, channel, user_id))
    for user_id in users:
        out.users_offline.append((app_id, _text(user_id)))
