"""One Redis primary as the broker uses it: a pub/sub connection, a command connection, the topics it carries.

A single Redis or a Sentinel deployment is one shard (its primary is looked up again on every connect);
a Redis Cluster has one shard per primary, each carrying the topics whose slots that primary serves. A
shard keeps its subscriptions alive: it reconnects with jittered backoff, resubscribes everything, and
resyncs every topic from the replay buffer (``hub.broker.replay``) so nothing published meanwhile is
lost. Subscribes made in one event-loop turn share one command per slot and return once Redis confirmed
them and the topic's replay floor is known; unsubscribes wait ``unsubscribe_delay`` and are cancelled by
a re-subscribe meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from hub.broker.base import BrokerUnavailable
from hub.broker.replay import PUBLISH_SCRIPT, format_id, stream_key
from hub.redis_connection import RedisTarget, open_connection
from hub.redis_resp import ConnectionClosed, RespError, RespProtocol
from hub.redis_topology import key_slot

if TYPE_CHECKING:
    from hub.broker.redis import RedisBroker

# Channels per (S)SUBSCRIBE/(S)UNSUBSCRIBE command: big enough to resubscribe thousands of channels in a
# few round trips, small enough that one command never blocks Redis noticeably (centrifuge uses 512 too).
BATCH = 512
INITIAL_BACKOFF = 0.05
# A connection that lived this long (seconds) was a success: the next loss starts the backoff afresh.
STABLE_CONNECTION = 1.0
# How long a publish waits for a replica to confirm it has the event (WAIT), in milliseconds. A replica
# usually answers within a millisecond; right after it synced, Redis 7.0 was seen taking up to 0.9 s.
REPLICA_ACK_MS = 1000

_REDIS_ERRORS = (OSError, TimeoutError, RespError)  # ConnectionClosed is an OSError


class Redirect(Exception):
    """Redis Cluster answered MOVED or ASK: the slot is served elsewhere."""

    def __init__(self, error: RespError) -> None:
        kind, _, rest = str(error).partition(" ")
        slot, _, address = rest.partition(" ")
        host, _, port = address.rpartition(":")
        super().__init__(str(error))
        self.ask = kind == "ASK"
        self.slot = int(slot)
        self.host = host
        self.port = int(port)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def client_name(role: str, node_id: str) -> str:
    """A CLIENT SETNAME value (no spaces allowed) that shows in CLIENT LIST which node holds a connection."""
    return f"{role}-" + "".join(c if c.isalnum() or c in "-_.:" else "_" for c in node_id)


class Shard:
    """The connections to one primary and the subscriptions held there."""

    def __init__(
        self, broker: RedisBroker, target: RedisTarget | None, resolve: Callable[[], Awaitable[RedisTarget]]
    ) -> None:
        """``target`` is the primary (a cluster node), or None when ``resolve`` finds it on each connect."""
        self._b = broker
        self._resolve_target = resolve
        self.target = target
        self.label = f"{target.host}:{target.port}" if target is not None else "primary"
        self.topics: set[bytes] = set()  # wanted here
        self.probe_topic = b""
        self._active: set[bytes] = set()  # (S)SUBSCRIBE written on the current connection
        self._to_subscribe: set[bytes] = set()
        self._to_unsubscribe: dict[bytes, float] = {}  # topic -> due time (monotonic)
        self._unsubscribe_queue: deque[tuple[float, bytes]] = deque()  # due times ascend: the delay is fixed
        self._next_batch: asyncio.Future[None] | None = None
        self._written_batch: asyncio.Future[None] | None = None
        self.sub: RespProtocol | None = None  # set only while connected and subscribed
        self._cmd: RespProtocol | None = None
        self._cmd_lock = asyncio.Lock()
        self._script_sha = b""
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._probe_seen = asyncio.Event()
        self.command_ok = True
        self.replicas = 0
        self.subscribed_count = 0
        self._wait_waiter: asyncio.Future[Any] | None = None
        self._wait_conn: RespProtocol | None = None
        self._lost_at: float | None = None
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Future[None]] = set()

    # lifecycle

    def start(self) -> None:
        """Start connecting, flushing and probing in the background."""
        self._tasks = [
            asyncio.create_task(self._run_connection(), name=f"redis-shard-{self.label}"),
            asyncio.create_task(self._run_flusher(), name=f"redis-shard-flusher-{self.label}"),
            asyncio.create_task(self._run_probe(), name=f"redis-shard-probe-{self.label}"),
        ]

    async def wait_ready(self) -> None:
        """Return once subscribed on a live connection."""
        await self._ready.wait()

    async def close(self) -> None:
        """Stop the background tasks and drop both connections."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for conn in (self.sub, self._cmd):
            if conn is not None:
                conn.abort()  # outstanding publishes fail with ConnectionClosed
        self._cmd = None
        self._set_disconnected()
        self._b.shard_health_changed(self)

    @property
    def healthy(self) -> bool:
        """Subscribed on a live pub/sub connection and the last publish (or probe) went through."""
        return self.sub is not None and self.command_ok and not self._closing

    def abort(self) -> None:
        """Drop both connections (e.g. the primary was demoted): the shard reconnects and resubscribes."""
        for conn in (self.sub, self._cmd):
            if conn is not None:
                conn.abort()

    # topics

    def add(self, topic: bytes) -> asyncio.Future[None] | None:
        """Want ``topic`` here; the batch future to await for its confirmation (None when nothing to wait)."""
        self.topics.add(topic)
        self._to_unsubscribe.pop(topic, None)
        if topic in self._active:
            return self._written_batch  # written already; its confirmation may still be due
        if not self._to_subscribe:
            self._next_batch = asyncio.get_running_loop().create_future()
            self._wake.set()
        self._to_subscribe.add(topic)
        return self._next_batch if self.sub is not None else None

    def remove(self, topic: bytes, delay: float) -> None:
        """Stop wanting ``topic``; the unsubscribe goes out after ``delay`` unless it is wanted again."""
        self.topics.discard(topic)
        self._to_subscribe.discard(topic)
        if topic in self._active and topic not in self._to_unsubscribe:
            due = time.monotonic() + delay
            self._to_unsubscribe[topic] = due
            self._unsubscribe_queue.append((due, topic))
            if len(self._unsubscribe_queue) == 1:
                self._wake.set()  # the flusher may be sleeping without a deadline

    def release(self, topics: Iterable[bytes]) -> None:
        """Hand ``topics`` to another shard (their slot moved): unsubscribe here at once, keep nothing."""
        gone = [t for t in topics if t in self.topics]
        for topic in gone:
            self.topics.discard(topic)
            self._to_subscribe.discard(topic)
            self._to_unsubscribe.pop(topic, None)
        written = [t for t in gone if t in self._active]
        self._active.difference_update(gone)
        if written and self.sub is not None:
            with contextlib.suppress(ConnectionClosed):
                self._send_batched(self.sub, b"UNSUBSCRIBE", written)

    def orphan(self, topics: Iterable[bytes]) -> None:
        """Redis dropped these subscriptions (slot moved or MOVED answered): subscribe them again on wake."""
        for topic in topics:
            self._active.discard(topic)

    def resubscribe_missing(self) -> None:
        """Subscribe every wanted topic that is neither active nor pending (after a topology change)."""
        missing = self.topics - self._active - self._to_subscribe
        if missing and self.sub is not None:
            if not self._to_subscribe:
                self._next_batch = asyncio.get_running_loop().create_future()
            self._to_subscribe |= missing
            self._wake.set()

    def set_probe(self, topic: bytes) -> None:
        """Use ``topic`` (in one of this shard's slots) for the liveness probe; subscribe it if connected."""
        if topic == self.probe_topic:
            return
        self.probe_topic = topic
        if topic and self.sub is not None:
            if not self._to_subscribe:
                self._next_batch = asyncio.get_running_loop().create_future()
            self._to_subscribe.add(topic)
            self._wake.set()

    async def sync(self) -> None:
        """Wait until this shard is connected and every (un)subscribe requested so far is in effect."""
        await self._ready.wait()
        conn = self.sub
        if conn is None:
            raise ConnectionClosed("Redis pub/sub connection lost")
        self._flush(conn)
        await conn.request(b"PING")

    def topics_in_slot(self, slot: int) -> list[bytes]:
        """The wanted topics whose slot is ``slot``."""
        return [t for t in self.topics if key_slot(t) == slot]

    # publishing

    async def publish(self, topic: bytes, payload: bytes, *, replay: bool, asking: bool = False) -> Any:
        """Publish on the command connection within the broker's timeout; the script's or PUBLISH's reply.

        Commands are written at once, so concurrent publishes pipeline on the one connection and Redis
        applies them in the order they were made. With replicas to wait for, a WAIT written after the
        publishes of one event-loop turn confirms them all together. Raises Redirect for MOVED/ASK and
        BrokerUnavailable for anything else that failed.
        """
        if self._closing:
            raise BrokerUnavailable("Redis broker is closed")
        b = self._b
        conn = self._cmd
        try:
            async with asyncio.timeout(b.timeout):
                if conn is None or not conn.is_open:
                    conn = await self.command_connection()
                if asking:
                    conn.send_request(b"ASKING").add_done_callback(_consume)
                if replay:
                    reply = conn.send_request(
                        b"EVALSHA",
                        self._script_sha,
                        b"1",
                        stream_key(topic),
                        topic,
                        payload,
                        b.replay_max_events,
                        b.replay_ttl_ms,
                        b.publish_command,
                    )
                else:
                    reply = conn.send_request(b.publish_command, topic, payload)
                required = self.required_acks() if replay else 0
                acked = self._replica_ack(conn, required) if required else None
                result = await reply
                if acked is not None:
                    acks = int(await asyncio.shield(acked))
                    if acks < required and not await self._replicas_gone(conn, required):
                        raise BrokerUnavailable(
                            f"Redis primary {self.label} accepted the event but no replica confirmed it within "
                            f"{REPLICA_ACK_MS} ms; not reporting success for an event a failover could lose"
                        )
        except RespError as exc:
            text = str(exc)
            if text.startswith(("MOVED ", "ASK ")):
                raise Redirect(exc) from exc
            if text.startswith("READONLY"):
                # The server we publish to was demoted (Sentinel failover): find the new primary.
                b.log.warning("broker_primary_demoted", shard=self.label)
                self.abort()
            self.command_ok = False
            raise BrokerUnavailable(f"Redis refused the publish: {text}") from exc
        except (OSError, TimeoutError) as exc:
            self.command_ok = False
            if isinstance(exc, TimeoutError) and conn is not None and conn is self._cmd:
                conn.abort()  # no reply within the timeout: treat the connection as dead, reconnect next time
            b.shard_health_changed(self)
            raise BrokerUnavailable(f"Redis did not accept the publish: {exc!r}") from exc
        if not self.command_ok:
            self.command_ok = True
            b.shard_health_changed(self)
        return result

    def required_acks(self) -> int:
        """Replicas that must confirm a publish before it is reported accepted."""
        wanted = self._b.publish_acks
        return min(1, self.replicas) if wanted < 0 else wanted

    async def _replicas_gone(self, conn: RespProtocol, required: int) -> bool:
        """After a WAIT fell short: whether the replicas it waited for are gone (then there is none to wait for).

        With the automatic policy a primary whose replica died is treated like a primary without one, as
        it would be after the next probe anyway, instead of refusing every publish until then.
        """
        self.replicas = _connected_replicas(await conn.request(b"INFO", b"replication"))
        return self._b.publish_acks < 0 and self.replicas == 0

    def _replica_ack(self, conn: RespProtocol, required: int) -> asyncio.Future[Any]:
        """The WAIT that will follow this event-loop turn's publishes on ``conn`` (written once per turn)."""
        if self._wait_waiter is None or self._wait_conn is not conn:
            self._wait_waiter = asyncio.get_running_loop().create_future()
            self._wait_conn = conn
            asyncio.get_running_loop().call_soon(self._send_wait, required)
        return self._wait_waiter

    def _send_wait(self, required: int) -> None:
        waiter, conn = self._wait_waiter, self._wait_conn
        self._wait_waiter = self._wait_conn = None
        if waiter is None or conn is None:
            return
        try:
            reply = conn.send_request(b"WAIT", b"%d" % required, b"%d" % REPLICA_ACK_MS)
        except ConnectionClosed as exc:
            if not waiter.done():
                waiter.set_exception(exc)
            return
        reply.add_done_callback(lambda done: _transfer(done, waiter))

    async def command_connection(self) -> RespProtocol:
        """The open command connection, connecting first if needed (one attempt at a time)."""
        async with self._cmd_lock:
            conn = self._cmd
            if conn is None or not conn.is_open:
                conn = await self._open(await self._where(), "hub-pub", subscriber=False)
                try:
                    async with asyncio.timeout(self._b.timeout):
                        self._script_sha = await conn.request(b"SCRIPT", b"LOAD", PUBLISH_SCRIPT)
                        self.replicas = _connected_replicas(await conn.request(b"INFO", b"replication"))
                except BaseException:
                    conn.abort()
                    raise
                self._cmd = conn
            return conn

    # internals

    async def _where(self) -> RedisTarget:
        """The primary to connect to: a cluster node's fixed address, or the one the sentinels name now."""
        if self._b.clustered and self.target is not None:
            return self.target
        return await self._resolve_target()

    async def _open(self, target: RedisTarget, role: str, *, subscriber: bool) -> RespProtocol:
        """Connect, authenticate and name a raw connection (CLIENT LIST shows which node holds it)."""
        b = self._b
        if subscriber:
            factory: Callable[[], RespProtocol] = lambda: RespProtocol(  # noqa: E731
                b.on_message, self._on_subscription, self._on_error
            )
        else:
            factory = RespProtocol
        _, conn = await open_connection(target, factory, connect_timeout=b.timeout)
        try:
            async with asyncio.timeout(b.timeout):
                await conn.authenticate(target.username, target.password)
                await conn.request(b"CLIENT", b"SETNAME", client_name(role, b.node_id).encode())
                if b.sentinel:
                    role_reply = await conn.request(b"ROLE")
                    if not role_reply or role_reply[0] != b"master":
                        raise ConnectionClosed(f"{target.host}:{target.port} is not the primary (yet)")
        except BaseException:
            conn.abort()
            raise
        return conn

    def _on_subscription(self, kind: bytes, channel: bytes, count: int) -> None:
        self.subscribed_count = count
        self._b.subscription_count_changed()
        if kind == b"sunsubscribe" and channel in self.topics and channel in self._active:
            # Not ours: Redis Cluster moved the channel's slot to another node and dropped our subscription.
            self._b.log.info("broker_slot_moved", shard=self.label, channel=channel.decode("utf-8", "replace"))
            self._active.discard(channel)
            self._b.topology_changed()

    def _on_error(self, error: RespError) -> None:
        text = str(error)
        if text.startswith("MOVED "):
            # An SSUBSCRIBE reached a node that no longer serves the slot: look the owner up again.
            self.orphan(self.topics_in_slot(Redirect(error).slot))
            self._b.topology_changed()
            return
        self._b.log.warning("broker_subscription_refused", shard=self.label, error=text)
        if self.sub is not None:
            self.sub.abort()  # subscription state unknown: start over on a fresh connection

    def _send_batched(self, conn: RespProtocol, command: bytes, names: list[bytes]) -> None:
        """Write (UN)SUBSCRIBE for ``names`` in batches; on a cluster, one sharded command per slot."""
        if self._b.clustered:
            by_slot: dict[int, list[bytes]] = {}
            for name in names:
                by_slot.setdefault(key_slot(name), []).append(name)
            sharded = b"S" + command
            for group in by_slot.values():
                for i in range(0, len(group), BATCH):
                    conn.send(sharded, *group[i : i + BATCH])
            return
        for i in range(0, len(names), BATCH):
            conn.send(command, *names[i : i + BATCH])

    def _flush(self, conn: RespProtocol) -> None:
        """Write pending subscribes and due unsubscribes on ``conn`` (synchronous: nothing interleaves)."""
        if self._to_subscribe:
            names = list(self._to_subscribe)
            self._to_subscribe.clear()
            batch, self._next_batch = self._next_batch, None
            self._hold(names)
            self._send_batched(conn, b"SUBSCRIBE", names)
            self._active.update(names)
            # Redis answers in order: the PING's reply means every SUBSCRIBE before it is in effect.
            confirmed = conn.send_request(b"PING")
            if batch is not None:
                self._written_batch = batch
            confirmed.add_done_callback(lambda done: self._confirmed(done, names, batch))
        queue = self._unsubscribe_queue
        if queue and queue[0][0] <= time.monotonic():
            now = time.monotonic()
            due: list[bytes] = []
            while queue and queue[0][0] <= now:
                deadline, name = queue.popleft()
                # Skip entries cancelled by a re-subscribe (or superseded by a later unsubscribe).
                if self._to_unsubscribe.get(name) == deadline:
                    del self._to_unsubscribe[name]
                    due.append(name)
            if due:
                self._send_batched(conn, b"UNSUBSCRIBE", due)
                self._active.difference_update(due)
                self._b.forget(due)

    def _hold(self, names: list[bytes]) -> None:
        """Hold live messages of topics about to be (re)subscribed until their resync ran.

        Without this, a live message arriving between the subscription and the stream read would move the
        topic's floor past events that were published while it was not subscribed, and they would be lost.
        """
        if self._b.replay:
            for name in names:
                if name != self.probe_topic:
                    self._b.begin_sync(name)

    def _confirmed(self, done: asyncio.Future[Any], names: list[bytes], batch: asyncio.Future[None] | None) -> None:
        """A subscribe batch is in effect: learn each topic's replay floor, then let its callers return."""
        if done.cancelled() or done.exception() is not None:
            if batch is not None:
                _resolve(batch)  # the reconnect applies the wish; subscribe() never raises
            return
        task = asyncio.ensure_future(self.resync(names))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        if batch is not None:
            task.add_done_callback(lambda _: _resolve(batch))

    async def resync(self, names: list[bytes]) -> None:
        """Read each topic's replay stream and deliver what pub/sub missed (see RedisBroker.end_sync).

        Live messages of these topics are held meanwhile. A PING on the pub/sub connection after the reads
        guarantees every message published before them has arrived, so nothing between is lost or doubled.
        A failure drops the connection: the reconnect resubscribes and resyncs everything.
        """
        b = self._b
        names = [name for name in names if name != self.probe_topic]
        if not b.replay or not names:
            return
        self._hold(names)
        sub = self.sub
        try:
            cmd = await self.command_connection()
            async with asyncio.timeout(b.timeout):
                replies = []
                for name in names:
                    floor = b.floor(name)
                    key = stream_key(name)
                    if floor is None:
                        replies.append(cmd.send_request(b"XREVRANGE", key, b"+", b"-", b"COUNT", b"1"))
                    else:
                        start = b"(" + format_id(floor)
                        replies.append(cmd.send_request(b"XRANGE", key, start, b"+", b"COUNT", b.replay_max_events))
                results = await asyncio.gather(*replies)
                if sub is None or sub is not self.sub:
                    raise ConnectionClosed("pub/sub connection changed during resync")
                await sub.request(b"PING")
        except _REDIS_ERRORS as exc:
            b.log.warning("broker_resync_failed", shard=self.label, channels=len(names), error=repr(exc))
            if sub is not None:
                sub.abort()
            return
        for name, reply in zip(names, results, strict=True):
            b.end_sync(name, reply)

    async def _run_flusher(self) -> None:
        """Apply (un)subscribe requests in batches whenever woken or an unsubscribe falls due."""
        while True:
            timeout: float | None = None
            if self.sub is not None and self._unsubscribe_queue:
                timeout = max(0.0, self._unsubscribe_queue[0][0] - time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            conn = self.sub
            if conn is not None:
                # On ConnectionClosed the connection task notices the loss and resubscribes everything on reconnect.
                with contextlib.suppress(ConnectionClosed):
                    self._flush(conn)

    async def _connect(self) -> RespProtocol:
        """Open the pub/sub connection and subscribe every wanted topic; return once Redis confirmed it all."""
        b = self._b
        target = await self._where()
        conn = await self._open(target, "hub-sub", subscriber=True)
        try:
            async with asyncio.timeout(b.timeout):
                # A fresh connection holds no subscriptions: everything wanted is subscribed again, and
                # delayed unsubscribes pending on the old connection have nothing left to undo.
                self._to_subscribe.clear()
                self._next_batch = self._written_batch = None  # nobody waits: subscribe() returned at once
                for _, name in self._unsubscribe_queue:
                    if name in self._to_unsubscribe:
                        b.forget([name])
                self._to_unsubscribe.clear()
                self._unsubscribe_queue.clear()
                wanted = set(self.topics)
                if self.probe_topic:
                    wanted.add(self.probe_topic)
                self._active = wanted
                self._hold(list(self.topics))
                self._send_batched(conn, b"SUBSCRIBE", list(wanted))
                await conn.request(b"PING")
        except BaseException:
            conn.abort()
            raise
        if not b.clustered and self.target != target:
            self.target = target
            self._cmd_target_changed()
        return conn

    def _cmd_target_changed(self) -> None:
        """The primary moved (Sentinel failover): the command connection must follow."""
        if self._cmd is not None:
            self._cmd.abort()
            self._cmd = None

    async def _run_connection(self) -> None:
        """Keep one subscribed pub/sub connection: reconnect with capped exponential backoff after a loss.

        A connection that is lost soon after it was made does not reset the backoff, so a server that
        accepts and then drops connections is not hammered.
        """
        b = self._b
        backoff = INITIAL_BACKOFF
        connected_before = False
        while True:
            try:
                conn = await self._connect()
            except (*_REDIS_ERRORS, ConnectionClosed) as exc:
                delay = backoff * random.uniform(0.5, 1.0)  # jitter: nodes must not reconnect in lockstep
                b.log.warning("broker_connect_failed", shard=self.label, error=repr(exc), retry_in=round(delay, 3))
                b.shard_unreachable(self)
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, b.max_backoff)
                continue
            connected_at = time.monotonic()
            self.sub = conn
            self._wake.set()  # flush what was requested while connecting
            b.shard_health_changed(self)
            if connected_before and b.metrics is not None:
                b.metrics.broker_reconnects.inc()
            b.log.info(
                "broker_reconnected" if connected_before else "broker_connected",
                shard=self.label,
                channels=len(self._active),
            )
            await self.resync(list(self.topics))
            # Ready only once caught up: start() and sync() then mean "everything subscribed is delivered".
            self._ready.set()
            if connected_before and self._lost_at is not None and b.metrics is not None:
                b.metrics.broker_resubscribe_seconds.observe(time.monotonic() - self._lost_at)
            self._lost_at = None
            connected_before = True
            await conn.closed
            self._lost_at = time.monotonic()
            self._set_disconnected()
            b.shard_health_changed(self)
            b.log.warning("broker_connection_lost", shard=self.label, channels=len(self.topics))
            b.shard_unreachable(self)
            if time.monotonic() - connected_at < STABLE_CONNECTION:
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, b.max_backoff)
            else:
                backoff = INITIAL_BACKOFF

    def _set_disconnected(self) -> None:
        self.sub = None
        self._ready.clear()
        # Waiting subscribers return: their wish is in topics and is applied on reconnect.
        for batch in (self._next_batch, self._written_batch):
            if batch is not None:
                _resolve(batch)

    def probe_received(self) -> None:
        """Our probe came back through pub/sub."""
        self._probe_seen.set()

    async def _run_probe(self) -> None:
        """Every ``probe_interval`` publish on our probe channel and expect it back; else force a reconnect.

        Catches a subscription that is dead without the TCP connection saying so (e.g. after a failover
        the connection may hang on to a server that no longer receives publishes). Also refreshes how many
        replicas the primary has, which decides whether publishes wait for one.
        """
        b = self._b
        while True:
            await asyncio.sleep(b.probe_interval)
            conn = self.sub
            if conn is None or not self.probe_topic:
                continue
            self._probe_seen.clear()
            try:
                receivers = await self.publish(self.probe_topic, b"probe", replay=False)
                cmd = self._cmd
                if cmd is not None:
                    async with asyncio.timeout(b.timeout):
                        self.replicas = _connected_replicas(await cmd.request(b"INFO", b"replication"))
            except (BrokerUnavailable, Redirect, *_REDIS_ERRORS) as exc:
                b.log.warning("broker_probe_publish_failed", shard=self.label, error=str(exc))
                continue
            if int(receivers) == 0:
                b.log.warning("broker_probe_unsubscribed", shard=self.label, hint="Redis lost our subscription")
                conn.abort()
                continue
            try:
                async with asyncio.timeout(b.probe_timeout):
                    await self._probe_seen.wait()
            except TimeoutError:
                if conn is self.sub:
                    b.log.warning("broker_probe_timeout", shard=self.label, timeout=b.probe_timeout)
                    conn.abort()


def _connected_replicas(info: Any) -> int:
    """Replicas in sync (``state=online``) in an ``INFO replication`` reply: only those can confirm a WAIT.

    A replica that is still loading its first copy of the data (``wait_bgsave``, ``send_bulk``) is
    connected but cannot acknowledge anything yet, so waiting for it would refuse every publish.
    """
    text = info.decode() if isinstance(info, bytes) else str(info)
    return sum(1 for line in text.splitlines() if line.startswith("slave") and ":" in line and "state=online" in line)


def _transfer(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())  # type: ignore[arg-type]
    else:
        target.set_result(source.result())


def _consume(future: asyncio.Future[Any]) -> None:
    """Retrieve a reply nobody awaits (ASKING's OK), so asyncio does not warn about it."""
    if not future.cancelled():
        future.exception()
