"""Assembling a node from Settings: broker and state, the roles' routes, health, metrics, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from aiohttp import web

from hub.apps import AppRegistry
from hub.broker.base import Broker
from hub.broker.memory import MemoryBroker
from hub.config import Settings
from hub.ingest.node import IngestNode
from hub.metrics import Metrics
from hub.state.base import ClusterState
from hub.state.memory import MemoryClusterState
from hub.ws.context import NodeContext
from hub.ws.liveness import run_liveness
from hub.ws.maintenance import run_maintenance
from hub.ws.node import WsNode

log = structlog.get_logger("hub.server")


def make_backends(settings: Settings, metrics: Metrics) -> tuple[Broker, ClusterState]:
    """Memory broker and state for a lone ``hub serve``; Redis ones when a Redis URL is given."""
    if not settings.redis_url:
        return MemoryBroker(), MemoryClusterState(settings.node_id)
    from hub.broker.redis import RedisBroker
    from hub.state.redis import RedisClusterState

    return (
        RedisBroker(settings.redis_url, settings.redis_prefix, settings.node_id, metrics),
        RedisClusterState(settings.redis_url, settings.redis_prefix, settings.node_id),
    )


class Node:
    """One hub process: serves its role on ``port`` and metrics on ``metrics_port``."""

    def __init__(self, settings: Settings, apps: AppRegistry) -> None:
        self.settings = settings
        self.apps = apps
        self.metrics = Metrics()
        self.broker, self.state = make_backends(settings, self.metrics)
        self.ws: WsNode | None = None
        self.draining = False
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task[None]] = []
        if settings.role.websocket:
            self.ws = WsNode(NodeContext(settings, self.broker, self.state, self.metrics), apps)
        self.ingest = (
            IngestNode(settings, apps, self.broker, self.state, self.metrics) if settings.role.http_api else None
        )
        self.metrics.info.labels(settings.node_id, settings.role.value).set(1)

    @property
    def ready(self) -> bool:
        """Accepting traffic: not draining and the broker and state are reachable."""
        return not self.draining and self.broker.healthy and self.state.healthy

    def application(self) -> web.Application:
        """The main port's aiohttp application for this node's role."""
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_get("/", self._health)
        app.router.add_get("/ready", self._readiness)
        if self.ws is not None:
            app.router.add_get("/app/{key}", self.ws.handle)
        if self.ingest is not None:
            app.router.add_routes(self.ingest.routes())
        return app

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def _readiness(self, request: web.Request) -> web.Response:
        ready = self.ready
        self.metrics.ready.set(1 if ready else 0)
        if ready:
            return web.json_response({"ready": True})
        reason = "draining" if self.draining else "broker or state unavailable"
        return web.json_response({"ready": False, "reason": reason}, status=503)

    async def _metrics(self, request: web.Request) -> web.Response:
        self.metrics.ready.set(1 if self.ready else 0)
        return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8")

    async def start(self) -> None:
        """Connect the backends, then listen."""
        s = self.settings
        await self.state.start()
        handler = self.ws.on_envelope if self.ws is not None else _ignore
        await self.broker.start(handler, [app.id for app in self.apps])
        await self._listen(self.application(), s.host, s.port)
        if s.metrics_port:
            metrics_app = web.Application()
            metrics_app.router.add_get("/metrics", self._metrics)
            await self._listen(metrics_app, s.host, s.metrics_port)
        if self.ws is not None:
            loop = asyncio.get_running_loop()
            self._tasks.append(loop.create_task(run_liveness(self.ws)))
            self._tasks.append(loop.create_task(run_maintenance(self.ws)))
        self.metrics.ready.set(1 if self.ready else 0)
        log.info("node_started", role=s.role.value, port=s.port, node_id=s.node_id, redis=bool(s.redis_url))

    async def _listen(self, app: web.Application, host: str, port: int) -> None:
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_address=True).start()
        self._runners.append(runner)

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
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.state.withdraw()
        await self.broker.close()
        await self.state.close()
        log.info("node_stopped", node_id=self.settings.node_id)


def _ignore(envelope: Any) -> None:
    return None
