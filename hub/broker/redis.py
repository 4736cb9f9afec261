"""Redis pub/sub broker on a single Redis, a Sentinel-managed primary or a Redis Cluster (sharded pub/sub).

Topics (``{p}`` is the deployment prefix; each whole name is its own hash tag, see ``hub.broker.replay``):

- ``{p:app_id:channel}``: events of one Pusher channel; a node subscribes while it has local sockets.
  On a Redis Cluster the topic lives in its own slot, so one app's channels spread over every shard.
- ``{p:app_id:#control}``: the app's control messages (terminate user, watchlist); always subscribed.
- ``{p:#probe:node_id:k}``: this node's liveness probe of one shard, published and expected back.
- ``{...}:replay``: the topic's replay stream (capped, with a TTL), written by the publish script.

Each primary is a ``Shard`` (hub/broker/redis_shard.py) with its own pub/sub and command connections.
Single Redis and Sentinel have one; its primary is looked up again on every connect, so a Sentinel
failover is followed. A Redis Cluster has one per primary: each topic goes to the primary that serves its
slot (``SSUBSCRIBE``/``SPUBLISH``); the slot map is refreshed when a connection is lost, when Redis answers
MOVED or drops a subscription because its slot moved, and every few seconds. Topics whose slot moved are
unsubscribed at the old primary and subscribed at the new one, then caught up from their replay stream.

Delivery: every event is published together with its replay-stream entry in one script; a node delivers
each topic's events in stream order and drops one it already delivered (by entry id), so a resubscription
after any disruption neither loses nor doubles what was published meanwhile, within the replay window.
A publish is reported accepted only when the primary ran the script and, if it has a replica, a replica
confirmed it (WAIT), so a failover cannot lose an event that was answered 200.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from typing import Any

import structlog

from hub.broker.base import CONTROL_CHANNEL, Broker, BrokerUnavailable, MessageHandler, topic_of
from hub.broker.envelope import Envelope, EnvelopeError, Kind
from hub.broker.redis_shard import Redirect, Shard
from hub.broker.replay import StreamId, merge, split_frame, stream_entries, topic_name
from hub.metrics import Metrics
from hub.redis_connection import RedisTarget, open_connection
from hub.redis_resp import RespError, RespProtocol
from hub.redis_topology import (
    CLUSTER,
    SENTINEL,
    SLOTS,
    SlotRange,
    cluster_slots,
    discover_primary,
    key_slot,
    parse_topology,
)

# How often a cluster's slot map is read again without a reason (a reason triggers it at once).
TOPOLOGY_REFRESH_SECONDS = 5.0
INITIAL_WATCH_BACKOFF = 0.1
FAILOVER_REFRESH_SECONDS = 0.2


class RedisBroker(Broker):
    """Broker over Redis pub/sub on any topology; see the module docstring for the layout and guarantees."""

    def __init__(
        self,
        redis_url: str,
        prefix: str,
        node_id: str,
        metrics: Metrics | None = None,
        *,
        timeout: float = 2.0,
        unsubscribe_delay: float = 1.0,
        probe_interval: float = 5.0,
        probe_timeout: float = 3.0,
        max_backoff: float = 2.0,
        replay_seconds: float = 60.0,
        replay_max_events: int = 500,
        publish_acks: int = -1,
    ) -> None:
        """Configure; nothing connects until ``start``.

        ``timeout`` bounds every Redis round trip (a publish that takes longer raises BrokerUnavailable);
        ``probe_interval``/``probe_timeout`` pace each shard's pub/sub liveness probe; ``max_backoff`` caps
        the wait between reconnection attempts. ``replay_seconds``/``replay_max_events`` size each topic's
        replay stream (0 seconds: no stream, plain at-most-once PUBLISH). ``publish_acks`` is how many
        replicas must confirm a publish (-1: one when the primary has any, 0: none).
        """
        self.topology = parse_topology(redis_url)
        self.clustered = self.topology.kind == CLUSTER
        self.sentinel = self.topology.kind == SENTINEL
        self.publish_command = b"SPUBLISH" if self.clustered else b"PUBLISH"
        self._prefix = prefix
        self.node_id = node_id
        self.metrics = metrics
        self.timeout = timeout
        self._unsubscribe_delay = unsubscribe_delay
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.max_backoff = max_backoff
        self.replay = replay_seconds > 0
        self.replay_ttl_ms = b"%d" % max(1, int(replay_seconds * 1000))
        self.replay_max_events = b"%d" % max(1, replay_max_events)
        self.publish_acks = publish_acks
        self.log = structlog.get_logger("hub.broker.redis").bind(node_id=node_id, redis=self.topology.address)

        self._handler: MessageHandler | None = None
        self._permanent: set[bytes] = set()
        self._wanted: set[bytes] = set()
        self._assigned: dict[bytes, Shard] = {}
        self._shards: dict[tuple[str, int], Shard] = {}
        self._probes: dict[bytes, Shard] = {}
        # Cluster slot map: range starts (sorted) and the shard of each range.
        self._starts: list[int] = []
        self._owners: list[Shard] = []
        self._refresh = asyncio.Event()
        self._mapped = asyncio.Event()  # set once there is a shard to talk to
        self._background: set[asyncio.Future[None]] = set()
        # Replay: last delivered stream id per topic, and live messages held while a topic resyncs.
        self._floors: dict[bytes, StreamId] = {}
        self._syncing: dict[bytes, list[tuple[StreamId, bytes]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        if metrics is not None:
            metrics.redis_topology.labels(self.topology.kind).set(1)

    # Broker interface

    async def start(self, handler: MessageHandler, app_ids: list[str]) -> None:
        """Connect, subscribe the apps' control topics, and return once subscribed (or after ``timeout``).

        If Redis is unreachable the broker keeps trying in the background and reports unhealthy.
        """
        self._handler = handler
        for app_id in app_ids:
            self._permanent.add(self._topic(app_id, CONTROL_CHANNEL))
        self._wanted |= self._permanent
        if self.clustered:
            self._refresh.set()  # read the slot map at once
            self._tasks.append(asyncio.create_task(self._run_topology(), name="redis-broker-topology"))
        else:
            shard = Shard(self, None, self._primary)
            shard.probe_topic = f"{{{self._prefix}:#probe:{self.node_id}}}".encode()
            self._probes[shard.probe_topic] = shard
            self._shards[("", 0)] = shard
            for topic in self._wanted:
                self._assign(topic, shard)
            shard.start()
            self._mapped.set()
            if self.sentinel:
                self._tasks.append(asyncio.create_task(self._watch_sentinels(shard), name="redis-broker-sentinel"))
        try:
            async with asyncio.timeout(self.timeout):
                await self._mapped.wait()
                await asyncio.gather(*(s.wait_ready() for s in list(self._shards.values())))
        except TimeoutError:
            self.log.warning("broker_start_without_redis", hint="retrying in the background; node not ready")

    async def close(self) -> None:
        """Stop the background tasks and close every connection."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for shard in list(self._shards.values()):
            await shard.close()
        self._shards.clear()
        self._handler = None

    async def publish(self, envelope: Envelope) -> None:
        """Publish the packed envelope on its topic; raise BrokerUnavailable unless Redis accepted it."""
        app_id, channel = topic_of(envelope)
        try:
            # Console batches are at most once: a stream that missed some says so, and nothing replays them.
            replay = self.replay and envelope.kind is not Kind.CONSOLE_EVENTS
            await self._publish(self._topic(app_id, channel), envelope.pack(), replay=replay)
        except BrokerUnavailable as exc:
            if self.metrics is not None:
                self.metrics.broker_publish_failures.inc()
            self.log.warning("broker_publish_failed", app_id=app_id, channel=channel, error=str(exc))
            raise

    async def subscribe(self, app_id: str, channel: str) -> None:
        """Want the topic and return once Redis delivers it (at once while disconnected: applied on reconnect).

        Calls made in the same event-loop turn share one subscribe command per slot and one confirming PING,
        then one read of each topic's replay stream. A pending delayed unsubscribe is simply cancelled.
        """
        name = self._topic(app_id, channel)
        self._wanted.add(name)
        shard = self._owner(name)
        if shard is None:
            return  # no slot map yet: applied once the topology is known
        self._assigned[name] = shard
        batch = shard.add(name)
        if shard.sub is not None and batch is not None and not batch.done():
            # shield: one caller giving up must not cancel the batch the others wait for
            await asyncio.shield(batch)

    def unsubscribe(self, app_id: str, channel: str) -> None:
        """Stop wanting the topic; the unsubscribe goes out after ``unsubscribe_delay`` unless re-wanted."""
        name = self._topic(app_id, channel)
        if name in self._permanent:
            return
        self._wanted.discard(name)
        shard = self._assigned.get(name)
        if shard is not None:
            shard.remove(name, self._unsubscribe_delay)

    @property
    def healthy(self) -> bool:
        """At least one primary is reachable (on a cluster the slot map is known too) and not closing.

        A cluster shard that is down (failover in progress) makes only its own channels' publishes fail;
        every node shares that view, so taking nodes out of a load balancer would not help anyone.
        """
        if self._closing or not self._shards:
            return False
        if self.clustered and not self._owners:
            return False
        return any(shard.healthy for shard in self._shards.values())

    # extras beyond the Broker interface

    async def sync(self) -> None:
        """Wait until every subscribe and unsubscribe requested so far is in effect in Redis.

        Delayed unsubscribes still pending count as not requested yet. Raises BrokerUnavailable if Redis
        is not reachable within ``timeout``.
        """
        try:
            async with asyncio.timeout(self.timeout):
                for shard in list(self._shards.values()):
                    await shard.sync()
        except (TimeoutError, OSError) as exc:
            raise BrokerUnavailable(f"Redis pub/sub not reachable: {exc!r}") from exc

    @property
    def primaries(self) -> list[str]:
        """Addresses of the primaries this node holds connections to."""
        return sorted(f"{s.target.host}:{s.target.port}" for s in self._shards.values() if s.target is not None)

    # what shards call

    def on_message(self, channel: bytes, payload: bytes) -> None:
        """Every pushed message of every shard. Hot path: once per received message."""
        stream_id, body = split_frame(payload)
        if stream_id is not None:
            held = self._syncing.get(channel)
            if held is not None:
                held.append((stream_id, body))
                return
            floor = self._floors.get(channel)
            if floor is not None:
                if stream_id <= floor:
                    return  # delivered already (a resync read it from the stream first)
                self._floors[channel] = stream_id
            elif channel in self._wanted:  # not a late message of a topic already given up
                self._floors[channel] = stream_id
        elif channel in self._probes:
            self._probes[channel].probe_received()
            return
        self._dispatch(channel, body)

    def floor(self, topic: bytes) -> StreamId | None:
        """The last stream id delivered on ``topic`` (None before its first resync)."""
        return self._floors.get(topic)

    def begin_sync(self, topic: bytes) -> None:
        """Hold ``topic``'s live messages until ``end_sync``."""
        self._syncing.setdefault(topic, [])

    def end_sync(self, topic: bytes, reply: Any) -> None:
        """Deliver what the stream read (``reply``) and the held live messages add, in order, once each."""
        live = self._syncing.pop(topic, [])
        if topic not in self._wanted:
            return
        floor = self._floors.get(topic)
        stored = stream_entries(reply)
        if floor is None:
            # Just subscribed: the stream's entries predate the subscription, its newest is the floor.
            bodies, newest = merge(None, (), live)
            tip = stored[0][0] if stored else (0, 0)
            self._floors[topic] = max(tip, newest) if newest is not None else tip
        else:
            bodies, newest = merge(floor, stored, live)
            if newest is not None:
                self._floors[topic] = newest
            seen = {i for i, _ in live}
            replayed = sum(1 for i, _ in stored if i > floor and i not in seen)
            if replayed:
                self.log.info("broker_replayed", channel=topic.decode("utf-8", "replace"), events=replayed)
                if self.metrics is not None:
                    self.metrics.broker_replayed.inc(replayed)
        for body in bodies:
            self._dispatch(topic, body)

    def forget(self, topics: list[bytes]) -> None:
        """Topics unsubscribed for good: drop their replay bookkeeping."""
        for topic in topics:
            if topic not in self._wanted:
                self._floors.pop(topic, None)
                self._syncing.pop(topic, None)
                self._assigned.pop(topic, None)

    def topology_changed(self) -> None:
        """A shard saw a sign that slots moved: read the slot map again soon."""
        self._refresh.set()

    def shard_unreachable(self, shard: Shard) -> None:
        """A shard's primary did not answer: on a cluster, a failover may be under way."""
        if self.clustered:
            self._refresh.set()

    def shard_health_changed(self, shard: Shard) -> None:
        """Keep the connection metrics true."""
        if self.metrics is None:
            return
        self.metrics.broker_connected.set(1 if self.healthy else 0)
        if shard.target is not None:
            self.metrics.redis_primary_up.labels(f"{shard.target.host}:{shard.target.port}").set(
                1 if shard.healthy else 0
            )

    def subscription_count_changed(self) -> None:
        """A shard's subscription count changed."""
        if self.metrics is not None:
            self.metrics.broker_subscribed_channels.set(sum(s.subscribed_count for s in self._shards.values()))

    # internals

    def _topic(self, app_id: str, channel: str) -> bytes:
        return topic_name(self._prefix, app_id, channel)

    def _dispatch(self, channel: bytes, body: bytes) -> None:
        try:
            envelope = Envelope.unpack(body)
        except EnvelopeError as exc:
            self.log.warning("broker_bad_envelope", channel=channel.decode("utf-8", "replace"), error=str(exc))
            return
        handler = self._handler
        if handler is None:
            return
        try:
            handler(envelope)
        except Exception:
            self.log.exception("broker_handler_failed", app_id=envelope.app_id, channel=envelope.channel)

    async def _primary(self) -> RedisTarget:
        return await discover_primary(self.topology, self.timeout)

    def _owner(self, topic: bytes) -> Shard | None:
        """The shard that serves ``topic``: the only one, or the owner of its slot on a cluster."""
        if not self.clustered:
            return next(iter(self._shards.values()), None)
        if not self._starts:
            return None
        index = bisect.bisect_right(self._starts, key_slot(topic)) - 1
        if index < 0 or self._owners[index] is _NO_SHARD:
            return None
        return self._owners[index]

    def _assign(self, topic: bytes, shard: Shard) -> None:
        self._assigned[topic] = shard
        shard.add(topic)

    async def _publish(self, topic: bytes, payload: bytes, *, replay: bool) -> Any:
        """Publish at the owner of the topic, following one MOVED (after a map refresh) or ASK redirect."""
        for _ in range(3):
            shard = self._owner(topic)
            if shard is None:
                raise BrokerUnavailable("the Redis Cluster's slot map is not known yet")
            try:
                return await shard.publish(topic, payload, replay=replay)
            except Redirect as redirect:
                if redirect.ask:
                    target = self._shard_at(redirect.host, redirect.port)
                    try:
                        return await target.publish(topic, payload, replay=replay, asking=True)
                    except Redirect:
                        pass
                await self._refresh_slots()
        raise BrokerUnavailable("the channel's slot kept moving between Redis Cluster nodes")

    def _shard_at(self, host: str, port: int) -> Shard:
        """The shard of the primary at host:port, created (unsubscribed) if the map did not list it yet."""
        shard = self._shards.get((host, port))
        if shard is None:
            shard = Shard(self, self.topology.at(host, port), self._primary)
            self._shards[(host, port)] = shard
            shard.start()
        return shard

    async def _watch_sentinels(self, shard: Shard) -> None:
        """Sentinel only: follow ``+switch-master`` so a promotion moves the connections at once.

        Without it the shard still finds the new primary, but only once its connections to the old one
        fail or answer READONLY; a demoted primary that stays up keeps a pub/sub connection quiet.
        """
        service = (self.topology.service or "").encode()
        backoff = INITIAL_WATCH_BACKOFF

        def on_message(channel: bytes, payload: bytes) -> None:
            fields = payload.split()
            if channel == b"+switch-master" and fields and fields[0] == service:
                self.log.warning("broker_sentinel_switch", new_primary=b":".join(fields[3:5]).decode())
                shard.abort()

        while True:
            for target in self.topology.sentinels:
                try:
                    _, conn = await open_connection(
                        target, lambda: RespProtocol(on_message), connect_timeout=self.timeout
                    )
                except (OSError, TimeoutError) as exc:
                    self.log.info(
                        "broker_sentinel_unreachable", sentinel=f"{target.host}:{target.port}", error=repr(exc)
                    )
                    continue
                try:
                    async with asyncio.timeout(self.timeout):
                        await conn.authenticate(target.username, target.password)
                        conn.send(b"SUBSCRIBE", b"+switch-master")
                        await conn.request(b"PING")
                except (OSError, TimeoutError, RespError) as exc:
                    self.log.info(
                        "broker_sentinel_unreachable", sentinel=f"{target.host}:{target.port}", error=repr(exc)
                    )
                    conn.abort()
                    continue
                backoff = INITIAL_WATCH_BACKOFF
                await conn.closed
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _run_topology(self) -> None:
        """Cluster only: keep the slot map current and the topics on the shards that serve them."""
        while True:
            # While a primary is unreachable a failover may be under way: look again often, so the
            # channels move to the promoted replica within a fraction of a second of its promotion.
            degraded = any(not shard.healthy for shard in self._shards.values())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FAILOVER_REFRESH_SECONDS if degraded else TOPOLOGY_REFRESH_SECONDS):
                    await self._refresh.wait()
            await self._refresh_slots()
            await asyncio.sleep(0.05)  # let a burst of reasons collapse into one refresh

    async def _refresh_slots(self) -> None:
        self._refresh.clear()
        known = [s.target for s in self._shards.values() if s.target is not None and s.healthy]
        try:
            ranges = await cluster_slots(self.topology, self.timeout, known)
        except ConnectionError as exc:
            self.log.warning("broker_topology_unknown", error=str(exc))
            return
        if self.metrics is not None:
            self.metrics.redis_topology_refreshes.inc()
        self._apply(ranges)

    def _apply(self, ranges: list[SlotRange]) -> None:
        """Adopt a slot map: open shards of new primaries, move topics whose owner changed, close idle shards."""
        starts: list[int] = []
        owners: list[Shard] = []
        for i, r in enumerate(ranges):
            starts.append(r.start)
            owners.append(self._shard_at(r.primary.host, r.primary.port))
            following = ranges[i + 1].start if i + 1 < len(ranges) else SLOTS
            if r.end + 1 < following:
                # A gap in the map (slots nobody serves): route them nowhere rather than to this range's owner.
                starts.append(r.end + 1)
                owners.append(_NO_SHARD)
        changed = (starts, owners) != (self._starts, self._owners)
        self._starts, self._owners = starts, owners
        if changed:
            self.log.info("broker_topology", primaries=sorted({s.label for s in owners if s is not _NO_SHARD}))
        moved: dict[Shard, list[bytes]] = {}
        for topic in self._wanted:
            owner = self._owner(topic)
            current = self._assigned.get(topic)
            if owner is current or owner is None:
                continue
            if current is not None:
                moved.setdefault(current, []).append(topic)
            self._assign(topic, owner)
        for shard, topics in moved.items():
            shard.release(topics)
        serving = {owner for owner in owners if owner is not _NO_SHARD}
        for key, shard in list(self._shards.items()):
            if shard not in serving and not shard.topics:
                del self._shards[key]
                self._probes.pop(shard.probe_topic, None)
                closing = asyncio.ensure_future(shard.close())
                self._background.add(closing)
                closing.add_done_callback(self._background.discard)
        for shard in self._shards.values():
            self._place_probe(shard)
            shard.resubscribe_missing()
        self._mapped.set()

    def _place_probe(self, shard: Shard) -> None:
        """Give a cluster shard a probe topic in one of its own slots (the first k whose slot it serves)."""
        if shard.probe_topic and self._owner(shard.probe_topic) is shard:
            return
        self._probes.pop(shard.probe_topic, None)
        for k in range(4 * SLOTS):
            topic = f"{{{self._prefix}:#probe:{self.node_id}:{k}}}".encode()
            if self._owner(topic) is shard:
                self._probes[topic] = shard
                shard.set_probe(topic)
                return
        shard.set_probe(b"")


class _Unserved:
    """Marks slots no primary serves in the slot map."""

    label = "-"


_NO_SHARD: Any = _Unserved()
