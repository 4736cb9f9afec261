"""`make cluster` (deploy/cluster.sh): one haproxy port serving pusher clients and the pusher SDK,
drained nodes started again, and Ctrl-C stopping exactly what it started."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pusher
import pytest

from tests.deploy.lb_cluster import NAMES, LoadBalancedCluster, alive
from tests.support.ports import LOOPBACK, port_is_open
from tests.support.processes import http_ready

pytestmark = pytest.mark.cluster

APP = {"PUSHER_APP_ID": "1", "PUSHER_APP_KEY": "app-key", "PUSHER_APP_SECRET": "app-secret"}


def new_cluster(directory: Path, haproxy: str, redis_server: str) -> LoadBalancedCluster:
    cluster = LoadBalancedCluster(directory, haproxy=haproxy, redis_server=redis_server, app=APP, drain_seconds=1)
    try:
        cluster.start()
    except BaseException:
        cluster.stop(signal.SIGTERM)
        raise
    return cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, haproxy: str, redis_server: str) -> Iterator[LoadBalancedCluster]:
    running = new_cluster(tmp_path_factory.mktemp("cluster"), haproxy, redis_server)
    yield running
    running.stop()


async def subscribe(session: aiohttp.ClientSession, url: str, channel: str) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(f"{url}/app/{APP['PUSHER_APP_KEY']}?protocol=7&client=py&version=1")
    established = json.loads(await ws.receive_str(timeout=5))
    assert established["event"] == "pusher:connection_established"
    await ws.send_str(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
    succeeded = json.loads(await ws.receive_str(timeout=5))
    assert succeeded["event"] == "pusher_internal:subscription_succeeded"
    return ws


async def test_balancer_port_serves_websocket_clients_and_the_pusher_sdk(cluster: LoadBalancedCluster) -> None:
    backend = pusher.Pusher(
        app_id=APP["PUSHER_APP_ID"],
        key=APP["PUSHER_APP_KEY"],
        secret=APP["PUSHER_APP_SECRET"],
        host=LOOPBACK,
        port=cluster.ports["LB_PORT"],
        ssl=False,
    )
    async with aiohttp.ClientSession() as session:
        # Two clients: leastconn puts them on different ws nodes, so the event crosses Redis.
        clients = [await subscribe(session, cluster.url, "news") for _ in range(2)]
        await asyncio.to_thread(backend.trigger, "news", "headline", {"title": "hello"})
        for ws in clients:
            event = json.loads(await ws.receive_str(timeout=5))
            assert (event["event"], event["channel"], json.loads(event["data"])) == (
                "headline",
                "news",
                {"title": "hello"},
            )
            await ws.close()


def test_balancer_answers_ready(cluster: LoadBalancedCluster) -> None:
    with urllib.request.urlopen(f"{cluster.url}/ready", timeout=5) as response:
        assert response.status == 200


def test_drained_node_is_started_again_and_serves(cluster: LoadBalancedCluster) -> None:
    old = cluster.pid("ws1")
    os.kill(old, signal.SIGTERM)
    cluster.wait_for_new_pid("ws1", old, timeout=cluster.drain_seconds + 20)
    assert not alive(old)
    ready = http_ready(f"http://{LOOPBACK}:{cluster.ports['WS1_PORT']}/ready")
    deadline = time.monotonic() + 15
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ready(), cluster.log("ws1")


def test_ctrl_c_stops_every_process_it_started(tmp_path: Path, haproxy: str, redis_server: str) -> None:
    cluster = new_cluster(tmp_path, haproxy, redis_server)
    pids = {name: cluster.pid(name) for name in NAMES}
    assert all(alive(pid) for pid in pids.values())

    status = cluster.stop(signal.SIGINT)

    assert status == 130
    assert {name for name, pid in pids.items() if alive(pid)} == set()
    assert not any(port_is_open(port) for port in cluster.ports.values())
    assert not (tmp_path / "ready").exists()
