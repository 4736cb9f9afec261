"""Redis pub/sub broker: one Redis channel per (app, channel) topic, so each node gets only what it serves.

Layout (``{p}`` is the deployment prefix):

- ``{p}:{app_id}:{channel}``: events of one Pusher channel; a node subscribes while it has local sockets.
- ``{p}:{app_id}:#control``: the app's control messages (terminate user, watchlist); always subscribed.
- ``{p}:#probe:{node_id}``: this node's liveness probe, published and expected back every few seconds.

Payloads are ``Envelope.pack()`` bytes. Each node holds two raw RESP connections (see ``redis_resp``):
a dedicated pub/sub connection, and a command connection on which every PUBLISH is pipelined (written
at once, its reply awaited), which also keeps the node's publishes in order. Subscribes made in one
event-loop turn share one SUBSCRIBE command and return once Redis confirmed it. Unsubscribes are applied by a
background task in batches; an unsubscribe waits ``unsubscribe_delay`` seconds and is cancelled by a
re-subscribe meanwhile, so a socket that leaves and rejoins (page reload) costs no Redis commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque

import structlog

from hub.broker.base import CONTROL_CHANNEL, Broker, BrokerUnavailable, MessageHandler, topic_of
from hub.broker.envelope import Envelope, EnvelopeError
from hub.broker.redis_resp import ConnectionClosed, MessageCallback, RespError, RespProtocol
from hub.metrics import Metrics
from hub.redis_connection import open_connection, parse_redis_url

# Channels per SUBSCRIBE/UNSUBSCRIBE command: big enough to resubscribe thousands of channels in a few
# round trips, small enough that one command never blocks Redis noticeably (centrifuge uses 512 too).
BATCH = 512
INITIAL_BACKOFF = 0.05
# A connection that lived this long (seconds) was a success: the next loss starts the backoff afresh.
STABLE_CONNECTION = 1.0

_REDIS_ERRORS = (OSError, TimeoutError, RespError)  # ConnectionClosed is an OSError


class RedisBroker(Broker):
    """Broker over Redis pub/sub; see the module docstring for the channel layout."""

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
    ) -> None:
        """Configure; nothing connects until ``start``.

        ``timeout`` bounds every Redis round trip (a publish that takes longer raises BrokerUnavailable);
        ``probe_interval``/``probe_timeout`` pace the pub/sub liveness probe; ``max_backoff`` caps the
        wait between reconnection attempts.
        """
        self._target = parse_redis_url(redis_url)
        self._prefix = prefix
        self.node_id = node_id
        self._metrics = metrics
        self._timeout = timeout
        self._unsubscribe_delay = unsubscribe_delay
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._max_backoff = max_backoff
        self._log = structlog.get_logger("hub.broker.redis").bind(node_id=node_id, redis=self._target.address)

        self._probe_channel = f"{prefix}:#probe:{node_id}".encode()
        self._handler: MessageHandler | None = None
        self._command: RespProtocol | None = None  # the PUBLISH connection, opened on first use
        self._command_lock = asyncio.Lock()

        # Subscription bookkeeping; "active" means SUBSCRIBE was written on the current connection.
        self._permanent: set[bytes] = {self._probe_channel}
        self._wanted: set[bytes] = set()
        self._active: set[bytes] = set()
        self._to_subscribe: set[bytes] = set()
        self._to_unsubscribe: dict[bytes, float] = {}  # name -> due time (monotonic)
        self._unsubscribe_queue: deque[tuple[float, bytes]] = deque()  # due times ascend: the delay is fixed

        self._conn: RespProtocol | None = None  # set only while connected and subscribed
        # subscribe() callers wait on a batch future: the next one to be written, or the last one written
        # (a topic already written may still await Redis's confirmation).
        self._next_batch: asyncio.Future[None] | None = None
        self._written_batch: asyncio.Future[None] | None = None
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._probe_seen = asyncio.Event()
        self._command_ok = True
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []

    # Broker interface

    async def start(self, handler: MessageHandler, app_ids: list[str]) -> None:
        """Connect, subscribe the apps' control topics, and return once subscribed (or after ``timeout``).

        If Redis is unreachable the broker keeps trying in the background and reports unhealthy.
        """
        self._handler = handler
        for app_id in app_ids:
            self._permanent.add(self._topic(app_id, CONTROL_CHANNEL))
        self._wanted |= self._permanent
        self._tasks = [
            asyncio.create_task(self._run_connection(), name="redis-broker-connection"),
            asyncio.create_task(self._run_flusher(), name="redis-broker-flusher"),
            asyncio.create_task(self._run_probe(), name="redis-broker-probe"),
        ]
        try:
            async with asyncio.timeout(self._timeout):
                await self._ready.wait()
        except TimeoutError:
            self._log.warning("broker_start_without_redis", hint="retrying in the background; node not ready")

    async def close(self) -> None:
        """Stop the background tasks and close both connections."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for conn in (self._conn, self._command):
            if conn is not None:
                conn.abort()  # outstanding publishes fail with ConnectionClosed
        self._command = None
        self._set_disconnected()
        self._handler = None

    async def publish(self, envelope: Envelope) -> None:
        """PUBLISH the packed envelope on its topic; raise BrokerUnavailable unless Redis accepted it."""
        app_id, channel = topic_of(envelope)
        try:
            await self._publish(self._topic(app_id, channel), envelope.pack())
        except BrokerUnavailable as exc:
            if self._metrics is not None:
                self._metrics.broker_publish_failures.inc()
            self._log.warning("broker_publish_failed", app_id=app_id, channel=channel, error=str(exc))
            raise

    async def subscribe(self, app_id: str, channel: str) -> None:
        """Want the topic and return once Redis delivers it (at once while disconnected: applied on reconnect).

        Calls made in the same event-loop turn share one SUBSCRIBE command and one confirming PING. A
        pending delayed unsubscribe of the topic is simply cancelled: no Redis command at all.
        """
        name = self._topic(app_id, channel)
        self._wanted.add(name)
        self._to_unsubscribe.pop(name, None)
        if name in self._active:
            batch = self._written_batch  # written already; wait only if its confirmation is still due
        else:
            if not self._to_subscribe:
                self._next_batch = asyncio.get_running_loop().create_future()
                self._wake.set()
            self._to_subscribe.add(name)
            batch = self._next_batch
        if self._conn is not None and batch is not None and not batch.done():
            # shield: one caller giving up must not cancel the batch the others wait for
            await asyncio.shield(batch)

    def unsubscribe(self, app_id: str, channel: str) -> None:
        """Stop wanting the topic; the UNSUBSCRIBE goes out after ``unsubscribe_delay`` unless re-wanted."""
        name = self._topic(app_id, channel)
        if name in self._permanent:
            return
        self._wanted.discard(name)
        self._to_subscribe.discard(name)
        if name in self._active and name not in self._to_unsubscribe:
            due = time.monotonic() + self._unsubscribe_delay
            self._to_unsubscribe[name] = due
            self._unsubscribe_queue.append((due, name))
            if len(self._unsubscribe_queue) == 1:
                self._wake.set()  # the flusher may be sleeping without a deadline

    @property
    def healthy(self) -> bool:
        """Subscribed on a live pub/sub connection and the last publish (or probe) went through."""
        return self._conn is not None and self._command_ok and not self._closing

    # extras beyond the Broker interface

    async def sync(self) -> None:
        """Wait until every subscribe and unsubscribe requested so far is in effect in Redis.

        Delayed unsubscribes still pending count as not requested yet. Redis answers one connection's
        commands in order, so once a PING sent after the pending SUBSCRIBEs returns they are all applied.
        Raises BrokerUnavailable if Redis is not reachable within ``timeout``.
        """
        try:
            async with asyncio.timeout(self._timeout):
                await self._ready.wait()
                conn = self._conn
                assert conn is not None
                self._flush(conn)
                await conn.request(b"PING")
        except (TimeoutError, ConnectionClosed, RespError) as exc:
            raise BrokerUnavailable(f"Redis pub/sub not reachable: {exc!r}") from exc

    # internals

    def _topic(self, app_id: str, channel: str) -> bytes:
        return f"{self._prefix}:{app_id}:{channel}".encode()

    def _on_message(self, channel: bytes, payload: bytes) -> None:
        # Hot path, once per received message: decode and hand over synchronously (fan-out measures the lag).
        if channel == self._probe_channel:
            self._probe_seen.set()
            return
        try:
            envelope = Envelope.unpack(payload)
        except EnvelopeError as exc:
            self._log.warning("broker_bad_envelope", channel=channel.decode("utf-8", "replace"), error=str(exc))
            return
        handler = self._handler
        if handler is None:
            return
        try:
            handler(envelope)
        except Exception:
            self._log.exception("broker_handler_failed", app_id=envelope.app_id, channel=envelope.channel)

    def _on_count(self, count: int) -> None:
        if self._metrics is not None:
            self._metrics.broker_subscribed_channels.set(count)

    def _send_batched(self, conn: RespProtocol, command: bytes, names: list[bytes]) -> None:
        for i in range(0, len(names), BATCH):
            conn.send(command, *names[i : i + BATCH])

    def _flush(self, conn: RespProtocol) -> None:
        """Write pending SUBSCRIBEs and due UNSUBSCRIBEs on ``conn`` (synchronous: nothing interleaves)."""
        if self._to_subscribe:
            names = list(self._to_subscribe)
            self._to_subscribe.clear()
            batch, self._next_batch = self._next_batch, None
            self._send_batched(conn, b"SUBSCRIBE", names)
            self._active.update(names)
            # Redis answers in order: the PING's reply means every SUBSCRIBE before it is in effect.
            confirmed = conn.send_request(b"PING")
            if batch is not None:
                confirmed.add_done_callback(lambda _: _resolve(batch))
                self._written_batch = batch
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

    async def _publish(self, name: bytes, payload: bytes) -> int:
        """PUBLISH on the command connection within ``timeout``; the number of receivers Redis reports.

        The command is written at once, so concurrent publishes pipeline on the one connection without
        waiting for each other's replies, and Redis applies them in the order they were made.
        """
        if self._closing:
            raise BrokerUnavailable("Redis broker is closed")
        conn = self._command
        try:
            async with asyncio.timeout(self._timeout):
                if conn is None or not conn.is_open:
                    conn = await self._command_connection()
                receivers = await conn.send_request(b"PUBLISH", name, payload)
        except _REDIS_ERRORS as exc:
            self._command_ok = False
            if isinstance(exc, TimeoutError) and conn is not None and conn is self._command:
                conn.abort()  # no reply within the timeout: treat the connection as dead, reconnect next time
            raise BrokerUnavailable(f"Redis did not accept the publish: {exc!r}") from exc
        self._command_ok = True
        return int(receivers)

    async def _command_connection(self) -> RespProtocol:
        """The open command connection, connecting first if needed (one attempt at a time)."""
        async with self._command_lock:
            conn = self._command
            if conn is None or not conn.is_open:
                conn = await self._open(None, "hub-pub")
                self._command = conn
            return conn

    async def _open(self, on_message: MessageCallback | None, role: str) -> RespProtocol:
        """Connect, authenticate and name a raw connection (CLIENT LIST shows which node holds it)."""
        on_count = self._on_count if on_message is not None else None
        _, conn = await open_connection(
            self._target, lambda: RespProtocol(on_message, on_count), connect_timeout=self._timeout
        )
        try:
            async with asyncio.timeout(self._timeout):
                if self._target.password is not None:
                    auth = [self._target.username.encode()] if self._target.username else []
                    await conn.request(b"AUTH", *auth, self._target.password.encode())
                await conn.request(b"CLIENT", b"SETNAME", _client_name(role, self.node_id).encode())
        except BaseException:
            conn.abort()
            raise
        return conn

    async def _run_flusher(self) -> None:
        """Apply (un)subscribe requests in batches whenever woken or an unsubscribe falls due."""
        while True:
            timeout: float | None = None
            if self._conn is not None and self._unsubscribe_queue:
                timeout = max(0.0, self._unsubscribe_queue[0][0] - time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            conn = self._conn
            if conn is not None:
                # On ConnectionClosed the connection task notices the loss and resubscribes everything on reconnect.
                with contextlib.suppress(ConnectionClosed):
                    self._flush(conn)

    async def _connect(self) -> RespProtocol:
        """Open the pub/sub connection and subscribe every wanted topic; return once Redis confirmed it all."""
        conn = await self._open(self._on_message, "hub-sub")
        try:
            async with asyncio.timeout(self._timeout):
                # A fresh connection holds no subscriptions: everything wanted is subscribed again, and
                # delayed unsubscribes pending on the old connection have nothing left to undo.
                self._to_subscribe.clear()
                # Nobody waits on these: subscribe() returns at once while disconnected.
                self._next_batch = self._written_batch = None
                self._to_unsubscribe.clear()
                self._unsubscribe_queue.clear()
                self._active = set(self._wanted)
                self._send_batched(conn, b"SUBSCRIBE", list(self._active))
                await conn.request(b"PING")
        except BaseException:
            conn.abort()
            raise
        return conn

    async def _run_connection(self) -> None:
        """Keep one subscribed pub/sub connection: reconnect with capped exponential backoff after a loss.

        A connection that is lost soon after it was made does not reset the backoff, so a server that
        accepts and then drops connections is not hammered.
        """
        backoff = INITIAL_BACKOFF
        connected_before = False
        while True:
            try:
                conn = await self._connect()
            except (*_REDIS_ERRORS, ConnectionClosed) as exc:
                delay = backoff * random.uniform(0.5, 1.0)  # jitter: nodes must not reconnect in lockstep
                self._log.warning("broker_connect_failed", error=repr(exc), retry_in=round(delay, 3))
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            connected_at = time.monotonic()
            self._conn = conn
            self._ready.set()
            self._wake.set()  # flush what was requested while connecting
            if self._metrics is not None:
                self._metrics.broker_connected.set(1)
                if connected_before:
                    self._metrics.broker_reconnects.inc()
            self._log.info("broker_reconnected" if connected_before else "broker_connected", channels=len(self._active))
            connected_before = True
            await conn.closed
            self._set_disconnected()
            self._log.warning("broker_connection_lost", channels=len(self._wanted))
            if time.monotonic() - connected_at < STABLE_CONNECTION:
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, self._max_backoff)
            else:
                backoff = INITIAL_BACKOFF

    def _set_disconnected(self) -> None:
        self._conn = None
        self._ready.clear()
        # Waiting subscribers return: their wish is in _wanted and is applied on reconnect.
        for batch in (self._next_batch, self._written_batch):
            if batch is not None:
                _resolve(batch)
        if self._metrics is not None:
            self._metrics.broker_connected.set(0)

    async def _run_probe(self) -> None:
        """Every ``probe_interval`` publish on our probe channel and expect it back; else force a reconnect.

        Catches a subscription that is dead without the TCP connection saying so (e.g. after a failover
        the connection may hang on to a server that no longer receives publishes).
        """
        while True:
            await asyncio.sleep(self._probe_interval)
            conn = self._conn
            if conn is None:
                continue
            self._probe_seen.clear()
            try:
                receivers = await self._publish(self._probe_channel, b"probe")
            except BrokerUnavailable as exc:
                self._log.warning("broker_probe_publish_failed", error=str(exc))
                continue
            if receivers == 0:
                self._log.warning("broker_probe_unsubscribed", hint="Redis lost our subscription; reconnecting")
                conn.abort()
                continue
            try:
                async with asyncio.timeout(self._probe_timeout):
                    await self._probe_seen.wait()
            except TimeoutError:
                if conn is self._conn:
                    self._log.warning("broker_probe_timeout", timeout=self._probe_timeout, hint="reconnecting")
                    conn.abort()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _client_name(role: str, node_id: str) -> str:
    """A CLIENT SETNAME value (no spaces allowed) that shows in CLIENT LIST which node holds a connection."""
    return f"{role}-" + "".join(c if c.isalnum() or c in "-_.:" else "_" for c in node_id)
