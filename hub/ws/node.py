"""The WebSocket node: accepts ``/app/{key}``, handles each socket's messages in order, and its cleanup.

A socket has a task only while it has work (admission, a message being handled, cleanup): an idle
socket is a ``Connection`` and its transport, nothing more (guarded by the idle benchmark).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import Counter

from hub.apps import App, AppRegistry
from hub.broker.envelope import Envelope, Kind
from hub.protocol import messages
from hub.protocol.channels import server_to_user_channel
from hub.protocol.errors import CloseCode, PusherError
from hub.protocol.messages import ClientMessage, InvalidMessage
from hub.protocol.socket_ids import new_socket_id
from hub.protocol.users import PresenceMember
from hub.state.base import NodeSnapshot, StateUnavailable
from hub.ws import client_events, subscriptions
from hub.ws.connection import Connection
from hub.ws.context import NodeContext
from hub.ws.deflate import Deflater
from hub.ws.fanout import Fanout
from hub.ws.frame_parser import ProtocolViolation
from hub.ws.frames import close_frame, text_frame
from hub.ws.handshake import Handshake, HandshakeError, accept
from hub.ws.receive_budget import receive_budget, throttled
from hub.ws.signin import signin, signout
from hub.ws.upgrade import Detached, Refused, take_over
from hub.ws.watchlist import Watchlists

log = structlog.get_logger("hub.ws")

SUPPORTED_PROTOCOLS = range(5, 8)
Handler = Callable[[Connection, ClientMessage], Awaitable[None]]
RequestHeaders = CIMultiDictProxy[str] | CIMultiDict[str]
# A client's queued messages beyond this stop its reads until the queue is back down.
INBOX_PAUSE, INBOX_RESUME = 64, 16
YIELD_EVERY = 32


class WsNode:
    """Owns this node's sockets; everything shared lives behind the context's broker and state."""

    def __init__(self, ctx: NodeContext, apps: AppRegistry) -> None:
        self.ctx = ctx
        self.apps = apps
        self.connections: dict[str, Connection] = {}
        # What a resync's snapshot counts besides ``connections`` (ClusterState.resync: every write begun):
        # sockets whose admission is pending, and sockets whose cleanup has not yet uncounted them.
        self._admitting: dict[str, int] = {}
        self._closing: dict[str, Connection] = {}
        self.draining = False
        settings = ctx.settings
        self._deflater = Deflater(settings.compression_min_bytes) if settings.compression == "on" else None
        self.fanout = Fanout(ctx.local, ctx.metrics, self._deflater)
        self.watchlists = Watchlists(ctx)
        self._handlers: dict[str, Handler] = {
            "pusher:ping": self._on_ping,
            "pusher:pong": self._on_pong,
            "pusher:subscribe": self._on_subscribe,
            "pusher:unsubscribe": self._on_unsubscribe,
            "pusher:signin": self._on_signin,
        }
        self._tasks: set[asyncio.Task[None]] = set()
        self._sent: dict[str, tuple[Counter, Counter]] = {}
        self._received: dict[str, tuple[Counter, Counter]] = {}
        self._all_closed = asyncio.Event()
        self._frozen = False

    # -- broker side -------------------------------------------------------------------------

    def on_envelope(self, envelope: Envelope) -> None:
        """Broker handler: deliver events, act on control messages."""
        if envelope.kind is Kind.EVENT:
            self.fanout.deliver(envelope)
        elif envelope.kind is Kind.TERMINATE_USER and envelope.user_id is not None:
            self._terminate_user(envelope.app_id, envelope.user_id)
        elif envelope.kind is Kind.USER_PRESENCE:
            self.watchlists.deliver(envelope)
        else:
            self.ctx.tap.receive(envelope)

    def _terminate_user(self, app_id: str, user_id: str) -> None:
        sockets = self.ctx.local.subscribers(app_id, server_to_user_channel(user_id))
        for conn in list((sockets or {}).values()):
            self.close_soon(conn, CloseCode.UNAUTHORIZED, "You got disconnected by the app.", "terminated")

    # -- connection lifecycle ----------------------------------------------------------------

    def _refusal(self, key: str, protocol: str | None) -> tuple[App | None, PusherError | None]:
        """The connection checks in Pusher's order (after draining, answered before the upgrade)."""
        app = self.apps.by_key(key)
        if app is None:
            return None, PusherError(CloseCode.APP_NOT_FOUND, f"App key {key} does not exist.", True)
        if not app.enabled:
            return app, PusherError(CloseCode.APP_DISABLED, "The app is not enabled.", True)
        # A missing protocol is taken as 7: some hand-written clients omit it (a documented deviation).
        if protocol is not None:
            try:
                version = int(protocol)
            except ValueError:
                version = -1
            if version not in SUPPORTED_PROTOCOLS:
                return app, PusherError(
                    CloseCode.UNSUPPORTED_PROTOCOL, f"Unsupported protocol version {protocol}.", True
                )
        return app, None

    def handshake(self, headers: RequestHeaders) -> Handshake:
        """Check an upgrade request's headers (``HandshakeError`` when it is not one we accept)."""
        return accept(
            headers.get(hdrs.UPGRADE),
            headers.get(hdrs.CONNECTION),
            headers.get(hdrs.SEC_WEBSOCKET_VERSION),
            headers.get(hdrs.SEC_WEBSOCKET_KEY),
            headers.getall(hdrs.SEC_WEBSOCKET_EXTENSIONS, ()),
            compression=self._deflater is not None,
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The ``/app/{key}`` WebSocket endpoint when aiohttp has the connection (see ``hub/ws/front_door.py``)."""
        if self.draining:
            # Refuse the upgrade itself: a load balancer retries a 503 on another node, whereas an accepted
            # socket closed with 4200 makes pusher-js reconnect at once, often to this same node.
            self.ctx.metrics.connection_errors.labels("503").inc()
            return web.json_response({"error": "Server is shutting down; reconnect shortly.", "code": 503}, status=503)
        try:
            handshake = self.handshake(request.headers)
        except HandshakeError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        if request.transport is not None:
            self.open_socket(
                request.match_info.get("key", ""),
                request.query.get("protocol"),
                handshake,
                request.transport,
                lambda protocol: take_over(request, protocol, handshake.response),
            )
        return Detached()

    def open_socket(
        self,
        key: str,
        protocol: str | None,
        handshake: Handshake,
        transport: asyncio.Transport,
        adopt: Callable[[asyncio.Protocol], object],
    ) -> Connection | None:
        """After an accepted handshake: ``adopt`` gives the transport to our protocol and sends the 101.

        Then either a refusal (pusher:error and close) or a Connection whose task admits it.
        """
        app, refusal = self._refusal(key, protocol)
        if refusal is not None or app is None:
            assert refusal is not None
            self.ctx.metrics.connection_errors.labels(str(refusal.code)).inc()
            refused = Refused()
            adopt(refused)
            refused.start(
                transport,
                text_frame(messages.error_frame(refusal).encode()) + close_frame(refusal.code, refusal.message[:120]),
            )
            return None
        settings = self.ctx.settings
        conn = Connection(
            new_socket_id(),
            app,
            transport,
            self,
            send_limit=settings.max_send_buffer_kb * 1024,
            max_message=settings.max_message_kb * 1024,
            deflater=self._deflater if handshake.deflate else None,
            sent=self._sent_counters(app.id),
        )
        adopt(conn)
        # Admission (the connection quota) is the first job of the socket's task; frames that arrive
        # meanwhile wait in its inbox.
        conn.inbox = []
        self._spawn(self._run(conn))
        return conn

    def _sent_counters(self, app_id: str) -> tuple[Counter, Counter]:
        counters = self._sent.get(app_id)
        if counters is None:
            metrics = self.ctx.metrics
            counters = self._sent[app_id] = (
                metrics.ws_messages_sent.labels(app_id),
                metrics.ws_sent_bytes.labels(app_id),
            )
        return counters

    def _received_counters(self, app_id: str) -> tuple[Counter, Counter]:
        counters = self._received.get(app_id)
        if counters is None:
            metrics = self.ctx.metrics
            counters = self._received[app_id] = (
                metrics.ws_messages_received.labels(app_id),
                metrics.ws_received_bytes.labels(app_id),
            )
        return counters

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _admit(self, conn: Connection) -> bool:
        """The connection quota, then ``connection_established``; False when the socket was refused."""
        app = conn.app
        admitting = self._admitting
        admitting[app.id] = admitting.get(app.id, 0) + 1
        try:
            admitted = await self.ctx.state.add_connection(app.id, app.max_connections)
        except StateUnavailable:
            admitted = True  # counted by resync once the store is back
        finally:
            admitting[app.id] -= 1
            if not admitting[app.id]:
                del admitting[app.id]
        if not admitted:
            refusal = PusherError(CloseCode.OVER_CONNECTION_QUOTA, "The app is over its connection quota.", True)
            self.ctx.metrics.connection_errors.labels(str(refusal.code)).inc()
            conn.begin_close(refusal.code, refusal.message)
            return False
        conn.admitted = True
        self.connections[conn.socket_id] = conn
        if not self._frozen:
            self._freeze()
        self._all_closed.clear()
        metrics = self.ctx.metrics
        metrics.connections.labels(app.id).inc()
        metrics.new_connections.labels(app.id).inc()
        if conn.deflate:
            metrics.deflate_connections.labels(app.id).inc()
        conn.send(messages.connection_established(conn.socket_id, self.ctx.settings.activity_timeout))
        if self.ctx.tap.watching(app.id):
            self.ctx.tap.emit(app.id, "connected", socket_id=conn.socket_id)
        return True

    def _freeze(self) -> None:
        """Keep start-up's objects (modules, the app, the routes) out of every later full collection.

        A full collection walks every tracked object; start-up's are most of them, and a connection burst
        triggers several (benchmarks/README.md, "Reconnect storm"). Only once, at the first admission:
        freezing live sockets would leak them, since a closed asyncio transport is freed by the cycle
        collector (it refers to itself through its read callback), which never visits frozen objects.
        """
        self._frozen = True
        gc.collect()
        gc.freeze()

    async def _run(self, conn: Connection) -> None:
        """The socket's task while it has work: admission, queued messages in order, cleanup once lost."""
        try:
            if not conn.admitted and not await self._admit(conn):
                return
            inbox = conn.inbox
            handled = 0
            while inbox:
                text = inbox.pop(0)
                if len(inbox) == INBOX_RESUME and not conn.lost and not throttled(conn.budget):
                    conn.transport.resume_reading()
                await self._on_text(conn, text)
                handled += 1
                if handled % YIELD_EVERY == 0:
                    # Most messages are handled without suspending: a client pipelining thousands of
                    # them must not hold the loop (and everyone's fan-out) for the whole batch.
                    await asyncio.sleep(0)
        finally:
            conn.inbox = None
            if conn.lost and conn.admitted:
                conn.admitted = False
                # A close the server decided (slow consumer, drain, pong timeout...) names its own reason.
                await self._cleanup(conn, conn.close_reason or "client")

    # -- SocketEvents: what a Connection reports ------------------------------------------------

    def on_text(self, conn: Connection, text: str) -> None:
        """Queue the message for the socket's task (started here when none runs)."""
        received, received_bytes = self._received_counters(conn.app.id)
        received.inc()
        received_bytes.inc(len(text))
        if conn.budget is None:
            conn.budget = receive_budget(self.ctx.settings)
        wait = conn.budget.spend(len(text), time.monotonic())
        if wait > 0 and not conn.lost:
            self._throttle(conn, wait)
        inbox = conn.inbox
        if inbox is None:
            conn.inbox = [text]
            self._spawn(self._run(conn))
            return
        inbox.append(text)
        if len(inbox) == INBOX_PAUSE:
            # A client sending faster than its messages are handled waits in the kernel, not in our memory.
            conn.transport.pause_reading()

    def _throttle(self, conn: Connection, wait: float) -> None:
        """Stop reading a socket that sent past its byte budget until the budget has refilled."""
        assert conn.budget is not None
        if conn.budget.paused:
            return  # a later frame of the same read: the timer already running re-checks the deficit
        self.ctx.metrics.limit_refusals.labels("client_bytes").inc()
        conn.budget.paused = True
        conn.transport.pause_reading()
        asyncio.get_running_loop().call_later(wait, self._end_throttle, conn)

    def _end_throttle(self, conn: Connection) -> None:
        budget = conn.budget
        assert budget is not None
        wait = budget.spend(0, time.monotonic())
        if wait > 0 and not conn.lost:
            asyncio.get_running_loop().call_later(wait, self._end_throttle, conn)
            return
        budget.paused = False
        if not conn.lost and (conn.inbox is None or len(conn.inbox) < INBOX_PAUSE):
            conn.transport.resume_reading()

    def on_binary(self, conn: Connection) -> None:
        """Pusher has no binary messages: say so and keep the socket."""
        conn.send_error(PusherError(CloseCode.RECONNECT, "Binary frames are not supported."))

    def on_violation(self, conn: Connection, violation: ProtocolViolation) -> None:
        """Log a client that broke RFC 6455; the connection fails itself."""
        log.info("socket_error", error=violation.reason, code=violation.code, **conn.describe())

    def on_lost(self, conn: Connection) -> None:
        """Undo the socket's subscriptions, in its task if one runs, else in a new one."""
        if conn.inbox is None and conn.admitted:
            conn.inbox = []
            self._spawn(self._run(conn))

    async def _on_text(self, conn: Connection, raw: str) -> None:
        try:
            message = messages.parse_client_message(raw)
            handler = self._handlers.get(message.event)
            if handler is not None:
                await handler(conn, message)
            elif message.event.startswith("pusher:"):
                log.debug("unknown_pusher_event", pusher_event=message.event, **conn.describe())
            else:
                await client_events.relay_client_event(self.ctx, conn, message)
        except InvalidMessage as exc:
            self.ctx.metrics.client_errors.labels(str(exc.error.code)).inc()
            conn.send_error(exc.error)
        except Exception:
            # A bug in one handler must cost one message, not the socket and every subscription on it.
            log.exception("message_handler_failed", **conn.describe())
            self.ctx.metrics.client_errors.labels("internal").inc()
            conn.send_error(PusherError(CloseCode.RECONNECT, "Internal server error while handling the message."))

    async def _on_ping(self, conn: Connection, message: ClientMessage) -> None:
        conn.send(messages.PONG)

    async def _on_pong(self, conn: Connection, message: ClientMessage) -> None:
        return None

    async def _on_subscribe(self, conn: Connection, message: ClientMessage) -> None:
        request = messages.parse_subscribe(message.data)
        await subscriptions.subscribe(self.ctx, conn, request.channel, request.auth, request.channel_data)

    async def _on_unsubscribe(self, conn: Connection, message: ClientMessage) -> None:
        request = messages.parse_subscribe(message.data)
        await subscriptions.unsubscribe(self.ctx, conn, request.channel)

    async def _on_signin(self, conn: Connection, message: ClientMessage) -> None:
        await signin(self.ctx, self.watchlists, conn, messages.parse_signin(message.data))

    async def _cleanup(self, conn: Connection, reason: str) -> None:
        """Undo everything the socket did: channels, presence, sign-in, the connection count."""
        conn.closing = True
        self.connections.pop(conn.socket_id, None)
        self._closing[conn.socket_id] = conn
        if not self.connections:
            self._all_closed.set()
        app_id = conn.app.id
        metrics = self.ctx.metrics
        metrics.connections.labels(app_id).dec()
        metrics.disconnections.labels(app_id, reason).inc()
        if self.ctx.tap.watching(app_id):
            self.ctx.tap.emit(app_id, "disconnected", socket_id=conn.socket_id, reason=reason)
        try:
            # Each channel leaves the socket's record in the step that issues its leave (ClusterState.resync).
            while conn.channels:
                channel, member = conn.channels.popitem()
                await subscriptions.leave(self.ctx, conn, channel, member)
            await signout(self.ctx, self.watchlists, conn)
        finally:
            # In the step that issues the uncount below; and never left behind by a failed or cancelled cleanup.
            self._closing.pop(conn.socket_id, None)
        try:
            await self.ctx.state.remove_connection(app_id)
        except StateUnavailable:
            log.warning("state_unavailable", op="remove_connection", **conn.describe())

    def on_slow(self, conn: Connection) -> None:
        """A slow consumer: close it (4100) without waiting for it."""
        # A close already decided (its task has not run yet) must not be counted or scheduled twice.
        if conn.closing or conn.close_reason is not None:
            return
        self.ctx.metrics.slow_consumer_disconnects.labels(conn.app.id).inc()
        log.warning("slow_consumer", buffered=conn.transport.get_write_buffer_size(), **conn.describe())
        # Not announced: a pusher:error would queue behind the backlog the client is not reading.
        self.close_soon(conn, CloseCode.OVER_CAPACITY, "Slow consumer: too many unsent messages.", "slow_consumer")

    def close_soon(self, conn: Connection, code: int, message: str, reason: str) -> None:
        """Close a socket from outside its handlers (fan-out, control messages, sweeps, drain)."""
        announce = reason != "slow_consumer"
        conn.close_reason = conn.close_reason or reason
        conn.begin_close(code, message, announce=announce)

    # -- whole-node operations -----------------------------------------------------------------

    def snapshot(self) -> NodeSnapshot:
        """This node's share of the cluster state, rebuilt from its sockets: every state write begun counts.

        Taken in the same step as the resync it is for (see ClusterState.resync).
        """
        snap = NodeSnapshot()
        snap.connections.update(self._admitting)

        def add_member(key: tuple[str, str], member: PresenceMember) -> None:
            users = snap.presence.setdefault(key, {})
            count, _ = users.get(member.user_id, (0, None))
            users[member.user_id] = (count + 1, member.user_info)

        for conn in itertools.chain(self.connections.values(), self._closing.values()):
            app_id = conn.app.id
            snap.connections[app_id] = snap.connections.get(app_id, 0) + 1
            for channel, member in conn.channels.items():
                if channel.startswith("#"):
                    continue
                key = (app_id, channel)
                snap.channels[key] = snap.channels.get(key, 0) + 1
                if member is not None:
                    add_member(key, member)
            if conn.presence_pending is not None:
                channel, member = conn.presence_pending
                add_member((app_id, channel), member)
            if conn.user is not None:
                ukey = (app_id, conn.user.user_id)
                snap.users[ukey] = snap.users.get(ukey, 0) + 1
        return snap

    async def drain(self, seconds: float) -> None:
        """Stop accepting sockets and close the open ones with 4200, spread evenly over ``seconds``."""
        self.draining = True
        conns = list(self.connections.values())
        if conns:
            log.info("drain_started", sockets=len(conns), seconds=seconds)
            step = seconds / len(conns)
            for index, conn in enumerate(conns):
                if index and step > 0:
                    await asyncio.sleep(step)
                self.close_soon(conn, CloseCode.RECONNECT, "Server is shutting down; reconnect shortly.", "drain")
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), timeout=5.0)
        if self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait(set(self._tasks), timeout=2.0)
        log.info("drain_finished", left=len(self.connections))
