"""deploy/haproxy.cfg: valid as shipped, and routing the way `make cluster` and compose rely on.

The routing tests put haproxy in front of stand-in nodes (tiny aiohttp apps that answer with their
name), so they check the load balancer's rules alone; tests against real hub nodes come on top.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from tests.deploy.sources import DEPLOY
from tests.support.ports import LOOPBACK, free_port
from tests.support.processes import ManagedProcess, http_ready

CONFIG = str(DEPLOY / "haproxy.cfg")
COMPOSE_ENV = {"WS1_ADDR": "ws1:6001", "WS2_ADDR": "ws2:6001", "INGEST1_ADDR": "ingest1:6001", "LB_BIND": ":6001"}
# haproxy checks every 500 ms and takes a node out after one failure.
MARKED_DOWN_WITHIN = 1.5


@dataclass
class StandIn:
    """A node that answers every route with its name; its /ready and upgrades can be failed."""

    name: str
    port: int = field(default_factory=free_port)
    ready: bool = True
    refuse_upgrades: bool = False
    open_sockets: int = 0
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self.hello)
        app.router.add_get("/ready", self.readiness)
        app.router.add_get("/app/{key}", self.websocket)
        app.router.add_route("*", "/apps/{tail:.*}", self.hello)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, LOOPBACK, self.port).start()

    async def hello(self, request: web.Request) -> web.Response:
        return web.Response(text=self.name)

    async def readiness(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.ready else 503, text=self.name)

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_upgrades:
            return web.Response(status=503, text="not taking clients")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.open_sockets += 1
        try:
            await ws.send_str(self.name)
            async for message in ws:
                await ws.send_str(f"{self.name}:{message.data}")
        finally:
            self.open_sockets -= 1
        return ws


@dataclass
class Balancer:
    url: str
    nodes: dict[str, StandIn]
    session: aiohttp.ClientSession

    async def connect(self) -> tuple[str, aiohttp.ClientWebSocketResponse]:
        """A WebSocket through haproxy, and the name of the node it landed on."""
        ws = await self.session.ws_connect(f"{self.url}/app/app-key?protocol=7")
        greeting = await ws.receive_str(timeout=5)
        return greeting, ws

    async def get(self, path: str, method: str = "GET") -> tuple[int, str]:
        async with self.session.request(method, f"{self.url}{path}") as response:
            return response.status, await response.text()


@pytest.fixture
async def balancer(haproxy: str) -> AsyncIterator[Balancer]:
    nodes = {name: StandIn(name) for name in ("ws1", "ws2", "ingest1")}
    for node in nodes.values():
        await node.start()
    port = free_port()
    env = {
        "LB_BIND": f"{LOOPBACK}:{port}",
        "WS1_ADDR": f"{LOOPBACK}:{nodes['ws1'].port}",
        "WS2_ADDR": f"{LOOPBACK}:{nodes['ws2'].port}",
        "INGEST1_ADDR": f"{LOOPBACK}:{nodes['ingest1'].port}",
    }
    process = ManagedProcess([haproxy, "-db", "-f", CONFIG], env=env, name="haproxy").start()
    try:
        await process.wait_ready_async(http_ready(f"http://{LOOPBACK}:{port}/ready"))
        async with aiohttp.ClientSession() as session:
            yield Balancer(f"http://{LOOPBACK}:{port}", nodes, session)
    finally:
        await process.stop_async()
        process.close()
        for node in nodes.values():
            assert node.runner is not None
            await node.runner.cleanup()


def check_config(haproxy: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_ADDR") and k != "LB_BIND"}
    return subprocess.run(
        [haproxy, "-c", "-f", CONFIG], env={**clean, **env}, capture_output=True, text=True, timeout=30, check=False
    )


def test_config_is_valid_with_the_make_cluster_defaults(haproxy: str) -> None:
    result = check_config(haproxy, {})
    assert result.returncode == 0, result.stdout + result.stderr


def test_config_is_valid_with_compose_service_names_not_yet_resolvable(haproxy: str) -> None:
    # Compose may start haproxy before the nodes' names resolve; it must start anyway.
    result = check_config(haproxy, COMPOSE_ENV)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_http_api_paths_reach_the_ingest_node(balancer: Balancer) -> None:
    assert await balancer.get("/apps/1/events", method="POST") == (200, "ingest1")
    assert await balancer.get("/apps/1/channels") == (200, "ingest1")


async def test_health_paths_reach_a_ws_node(balancer: Balancer) -> None:
    status, body = await balancer.get("/ready")
    assert status == 200
    assert body in ("ws1", "ws2")


async def test_websocket_upgrades_on_app_path_reach_a_ws_node_and_stay_open(balancer: Balancer) -> None:
    node, ws = await balancer.connect()
    assert node in ("ws1", "ws2")
    await ws.send_str("ping")
    assert await ws.receive_str(timeout=5) == f"{node}:ping"
    await ws.close()


async def test_websockets_spread_evenly_by_least_connections(balancer: Balancer) -> None:
    sockets = [await balancer.connect() for _ in range(4)]
    assert sorted(node for node, _ in sockets) == ["ws1", "ws1", "ws2", "ws2"]
    for _, ws in sockets:
        await ws.close()


async def test_draining_node_gets_no_new_sockets_and_keeps_its_open_ones(balancer: Balancer) -> None:
    first, kept = await balancer.connect()
    other = "ws2" if first == "ws1" else "ws1"
    balancer.nodes[first].ready = False
    await asyncio.sleep(MARKED_DOWN_WITHIN)

    newcomers = [await balancer.connect() for _ in range(3)]

    assert [node for node, _ in newcomers] == [other] * 3
    await kept.send_str("still there")
    assert await kept.receive_str(timeout=5) == f"{first}:still there"
    for _, ws in [*newcomers, (first, kept)]:
        await ws.close()


async def test_connection_to_a_stopped_node_is_retried_on_the_other_one(balancer: Balancer) -> None:
    # A node that has just exited refuses connections before its health checks notice.
    stopped = balancer.nodes["ws1"]
    assert stopped.runner is not None
    await stopped.runner.cleanup()
    sockets = [await balancer.connect() for _ in range(4)]
    assert [node for node, _ in sockets] == ["ws2"] * 4
    for _, ws in sockets:
        await ws.close()


async def test_upgrade_answered_503_is_retried_on_the_other_node(balancer: Balancer) -> None:
    balancer.nodes["ws1"].refuse_upgrades = True
    sockets = [await balancer.connect() for _ in range(4)]
    assert [node for node, _ in sockets] == ["ws2"] * 4
    for _, ws in sockets:
        await ws.close()
