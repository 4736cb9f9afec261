"""Assembling a node from Settings: broker and state, the roles' routes, health, metrics, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from hub import tls
from hub.admin.node_report import NodeReporter
from hub.admin.routes import REGISTRARS
from hub.admin.server import AdminContext, build_admin_app
from hub.apps import AppChange, ConfigError
from hub.appstore.factory import make_app_store
from hub.broker.base import CONTROL_CHANNEL, Broker
from hub.broker.memory import MemoryBroker
from hub.config import Settings
from hub.guard.connections import ConnectionGuard, ConnectionLimits
from hub.guard.middleware import RequestLimits, guard_middleware
from hub.ingest.cors import cors_middleware
from hub.ingest.node import IngestNode
from hub.metrics import Metrics
from hub.state.base import ClusterState, StateUnavailable
from hub.state.coordination import Coordination, MemoryCoordination
from hub.state.memory import MemoryClusterState
from hub.state.node_stats import MemoryNodeStatsBoard, NodeStatsBoard
from hub.tap import Tap
from hub.webhooks.emitter import Webhooks
from hub.webhooks.queue import MemoryWebhookQueue, WebhookQueue
from hub.webhooks.sender import WebhookSender
from hub.ws.app_changes import apply_app_changes
from hub.ws.context import NodeContext
from hub.ws.front_door import FrontDoor
from hub.ws.liveness import run_liveness
from hub.ws.maintenance import run_maintenance
from hub.ws.node import WsNode
from hub.ws.subscription_count import SubscriptionCounts

log = structlog.get_logger("hub.server")

LISTEN_BACKLOG = 4096

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Backends:
    """Where a node's shared data lives: all in memory, or all in Redis."""

    broker: Broker
    state: ClusterState
    coordination: Coordination
    webhook_queue: WebhookQueue
    redis: Any = None
    node_stats: NodeStatsBoard = field(default_factory=MemoryNodeStatsBoard)

    async def close(self) -> None:
        """Disconnect everything."""
        await self.broker.close()
        await self.state.close()
        if self.redis is not None:
            await self.redis.aclose()


def make_backends(settings: Settings, metrics: Metrics) -> Backends:
    """Memory backends for a lone ``hub serve``; Redis ones when a Redis URL is given."""
    if not settings.redis_url:
        return Backends(
            MemoryBroker(), MemoryClusterState(settings.node_id), MemoryCoordination(), MemoryWebhookQueue()
        )
    from hub.broker.redis import RedisBroker
    from hub.redis_topology import parse_topology
    from hub.state.redis import RedisClusterState
    from hub.state.redis_coordination import RedisCoordination
    from hub.state.redis_node_stats import RedisNodeStatsBoard
    from hub.webhooks.redis_queue import RedisWebhookQueue

    # Single Redis, Sentinel or Cluster: the coordination and webhook-queue keys work on all three.
    client = parse_topology(settings.redis_url).command_client(timeout=2.0, name=f"hub-{settings.node_id}")
    broker = RedisBroker(
        settings.redis_url,
        settings.redis_prefix,
        settings.node_id,
        metrics,
        replay_seconds=settings.redis_replay_seconds,
        replay_max_events=settings.redis_replay_events,
        publish_acks=settings.redis_publish_acks,
    )
    return Backends(
        broker,
        RedisClusterState(settings.redis_url, settings.redis_prefix, settings.node_id),
        RedisCoordination(client, settings.redis_prefix),
        RedisWebhookQueue(client, settings.redis_prefix),
        client,
        RedisNodeStatsBoard(client, settings.redis_prefix),
    )


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer aiohttp's own HTTP errors (unknown path 404, wrong method 405, ...) with Pusher's JSON body."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if isinstance(exc, web.HTTPMethodNotAllowed):
            allowed = ", ".join(sorted(exc.allowed_methods))
            message = f"Method {request.method} is not allowed on {request.path}; use {allowed}."
        elif isinstance(exc, web.HTTPNotFound):
            message = f"No endpoint at {request.path}."
        else:
            message = exc.text or exc.reason
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return web.json_response({"error": message, "code": exc.status}, status=exc.status, headers=headers)


class Node:
    """One hub process: serves its role on ``port`` and metrics on ``metrics_port``."""

    def __init__(self, settings: Settings, env: Mapping[str, str]) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.backends = make_backends(settings, self.metrics)
        self.store = make_app_store(settings, env, self.metrics, self.backends.redis)
        # Empty until start() loads it; every part below keeps this one registry, which the store updates.
        self.apps = apps = self.store.apps
        self.broker, self.state = self.backends.broker, self.backends.state
        self.tap = Tap(settings.node_id, settings.console_max_events, metrics=self.metrics)
        self.tap.attach_broker(self.broker)
        self.webhooks = Webhooks(
            self.backends.webhook_queue,
            self.backends.coordination,
            self.metrics,
            batch_seconds=settings.webhook_batch_ms / 1000,
            on_queued=lambda: self.sender.wake(),
        )
        self.sender = WebhookSender(
            self.backends.webhook_queue,
            apps,
            self.metrics,
            tap=self.tap,
            dead_letter_ttl=settings.webhook_dead_letter_ttl,
            window=settings.webhook_retry_window,
        )
        self.ws: WsNode | None = None
        self.draining = False
        self._runners: list[web.AppRunner] = []
        self._servers: list[asyncio.Server] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribing: set[asyncio.Task[None]] = set()
        if settings.role.websocket:
            ctx = NodeContext(
                settings, self.broker, self.state, self.metrics, self.backends.coordination, self.webhooks
            )
            ctx.counts = SubscriptionCounts(ctx, self.backends.coordination, self.webhooks)
            ctx.tap = self.tap
            self.ws = WsNode(ctx, apps)
        self.ingest = (
            IngestNode(settings, apps, self.broker, self.state, self.metrics, self.backends.coordination, self.tap)
            if settings.role.http_api
            else None
        )
        self.metrics.info.labels(settings.node_id, settings.role.value).set(1)
        self.guard = ConnectionGuard(
            ConnectionLimits(
                settings.max_pending_connections,
                settings.http_request_timeout,
                settings.max_api_connections,
                settings.max_connects_per_ip,
            ),
            self.metrics,
        )
        # Built here, before anything listens, so unusable TLS files stop start-up with a ConfigError.
        self.tls = tls.server_context(settings.tls) if settings.tls is not None else None

    @property
    def ready(self) -> bool:
        """Accepting traffic: not draining and the broker and state are reachable."""
        return not self.draining and self.broker.healthy and self.state.healthy

    def application(self) -> web.Application:
        """The main port's aiohttp application for this node's role."""
        limits = RequestLimits(self.settings.http_request_timeout, self.settings.max_bad_signatures_per_second)
        cors = cors_middleware(self.settings.cors_origins)
        middlewares = [json_errors, guard_middleware(self.guard, limits)]
        app = web.Application(
            client_max_size=self.settings.max_http_body_kb * 1024,
            middlewares=middlewares if cors is None else [cors, *middlewares],
        )
        app.router.add_get("/", self._health)
        app.router.add_get("/ready", self._readiness)
        routes: list[web.RouteDef] = []
        if self.ws is not None:
            routes.append(web.get("/app/{key}", self.ws.handle))
        if self.ingest is not None:
            routes.extend(self.ingest.routes())
        # With --path-prefix everything is served under it; health stays at the root too, for load balancers.
        prefix = self.settings.path_prefix
        if prefix:
            routes = [web.get("/", self._health), web.get("/ready", self._readiness), *routes]
        for route in routes:
            web.RouteDef(route.method, prefix + route.path, route.handler, route.kwargs).register(app.router)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def _recheck_state(self) -> None:
        """One cheap read when the state store was last seen failing.

        ``state.healthy`` only changes with a Redis round trip. A ws node makes them all the time
        (heartbeats); an ingest node makes none unless asked a channel query, so after an outage it would
        answer 503 here forever, and a load balancer following /ready would never send it that query.
        """
        if self.state.healthy or self.draining:
            return
        with contextlib.suppress(StateUnavailable):
            await self.state.channel_subscriptions("#ready-probe", "#ready-probe")

    async def _readiness(self, request: web.Request) -> web.Response:
        await self._recheck_state()
        ready = self.ready
        self.metrics.ready.set(1 if ready else 0)
        if ready:
            return web.json_response({"ready": True})
        reason = "draining" if self.draining else "broker or state unavailable"
        return web.json_response({"ready": False, "reason": reason}, status=503)

    async def _metrics(self, request: web.Request) -> web.Response:
        await self._recheck_state()
        self.metrics.ready.set(1 if self.ready else 0)
        return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8")

    async def start(self) -> None:
        """Load the apps (ConfigError if they do not load), connect the backends, then listen."""
        s = self.settings
        await self.store.start()
        self.apps.listen(self._on_app_changes)
        self.metrics.apps.set(len(self.apps))
        await self.state.start()
        handler = self.ws.on_envelope if self.ws is not None else self.tap.receive
        await self.broker.start(handler, [app.id for app in self.apps])
        await self._listen(self.application(), s.host, s.port, front_door=self.ws, guard=self.guard)
        if s.metrics_port:
            metrics_app = web.Application()
            metrics_app.router.add_get("/metrics", self._metrics)
            await self._listen(metrics_app, s.host, s.metrics_port)
        if s.admin_enabled:
            await self._listen(self.admin_application(), s.host, s.admin_port)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self.sender.run()))
        self._tasks.append(loop.create_task(self.tap.run()))
        self._tasks.append(loop.create_task(self._reporter().run(self.backends.node_stats)))
        if self.ws is not None:
            self._tasks.append(loop.create_task(run_liveness(self.ws)))
            self._tasks.append(loop.create_task(run_maintenance(self.ws)))
        if isinstance(self.broker, MemoryBroker):
            self.metrics.broker_connected.set(1)  # nothing to lose: the in-process broker is always there
        self.metrics.ready.set(1 if self.ready else 0)
        log.info(
            "node_started",
            role=s.role.value,
            port=s.port,
            node_id=s.node_id,
            redis=bool(s.redis_url),
            admin_port=s.admin_port if s.admin_enabled else None,
        )

    def _on_app_changes(self, changes: Sequence[AppChange]) -> None:
        """Apply an app change to live traffic: control topics of new apps, sockets of changed ones."""
        for change in changes:
            if change.before is None:
                # A new app's control topic (terminate user, watchlist) must reach this node like the others'.
                task = asyncio.get_running_loop().create_task(self.broker.subscribe(change.app_id, CONTROL_CHANNEL))
                self._subscribing.add(task)
                task.add_done_callback(self._subscribing.discard)
            elif change.after is None:
                self.broker.unsubscribe(change.app_id, CONTROL_CHANNEL)
        if self.ws is not None:
            apply_app_changes(self.ws, changes)
        self.metrics.apps.set(len(self.apps))

    def admin_application(self) -> web.Application:
        """The admin port's application: every registrar of ``hub.admin.routes`` over this node's parts."""
        assert self.settings.admin_token is not None
        ctx = AdminContext(
            self.settings,
            self.metrics,
            self.store,
            self.apps,
            self.broker,
            self.state,
            self.backends.webhook_queue,
            self.ws,
            self.tap,
            self.backends.node_stats,
        )
        return build_admin_app(self.settings.admin_token, ctx, REGISTRARS)

    def _reporter(self) -> NodeReporter:
        def redis() -> str:
            if not self.settings.redis_url:
                return "none"
            return "ok" if self.broker.healthy and self.state.healthy else "down"

        return NodeReporter(self.settings.node_id, self.settings.role.value, self.metrics, lambda: self.ready, redis)

    async def _listen(
        self,
        app: web.Application,
        host: str,
        port: int,
        *,
        front_door: WsNode | None = None,
        guard: ConnectionGuard | None = None,
    ) -> None:
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        self._runners.append(runner)
        # aiohttp's default accept queue (128) overflows when thousands of clients reconnect at once: the
        # storm benchmark measured 10,800 overflows and SYN retries of 1-3 s with it, none with 4096.
        if guard is None:
            site = web.TCPSite(runner, host, port, reuse_address=True, backlog=LISTEN_BACKLOG, ssl_context=self.tls)
            await site.start()
            return
        aiohttp_server = runner.server
        assert aiohttp_server is not None
        # Every connection is watched until its first request head (hub/guard/connections.py); WebSocket
        # upgrades are then answered by the front door before aiohttp sees them, the rest is aiohttp's.
        served = guard.tracked(aiohttp_server)
        if front_door is not None:
            ws_node, prefix = front_door, self.settings.path_prefix
            handed_on = guard.watched(served, admit=False)
            first: Callable[[], asyncio.Protocol] = lambda: FrontDoor(ws_node, handed_on, prefix)  # noqa: E731
        else:
            first = served
        server = await asyncio.get_running_loop().create_server(
            guard.watched(first),
            host,
            port,
            reuse_address=True,
            backlog=LISTEN_BACKLOG,
            ssl=self.tls,
            ssl_handshake_timeout=guard.limits.request_timeout if self.tls is not None else None,
        )
        self._servers.append(server)

    def reload_tls(self) -> None:
        """Re-read the TLS files (SIGHUP): new handshakes get the new certificate, open connections stay."""
        files = self.settings.tls
        if self.tls is None or files is None:
            log.info("tls_reload_skipped", reason="TLS is not configured")
            return
        try:
            tls.reload(self.tls, files)
        except ConfigError as exc:
            log.error("tls_reload_failed", error=str(exc))
            return
        log.info("tls_reloaded", cert=files.cert)

    async def drain(self) -> None:
        """Graceful shutdown: readiness 503 at once, close clients over the drain period, leave the cluster."""
        self.draining = True
        self.metrics.ready.set(0)
        log.info("drain_requested", seconds=self.settings.drain_seconds)
        if self.ws is not None:
            await self.ws.drain(self.settings.drain_seconds)
        await self.stop()

    async def stop(self) -> None:
        """Stop listening (in-flight HTTP requests finish), withdraw from the cluster, disconnect."""
        await self.store.close()
        if self.ws is not None and self.ws.ctx.counts is not None:
            await self.ws.ctx.counts.close()
        await self.webhooks.close()
        await self.tap.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for server in self._servers:
            server.close()
        self._servers.clear()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        with contextlib.suppress(Exception):
            await self.backends.node_stats.withdraw(self.settings.node_id)
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.state.withdraw()
        await self.backends.close()
        log.info("node_stopped", node_id=self.settings.node_id)
