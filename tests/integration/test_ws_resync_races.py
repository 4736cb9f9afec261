"""A node rewriting its share (resync) while its sockets churn leaves the cluster state exact.

An in-process `hub serve` over a real redis-server resyncs every few milliseconds, as after an outage,
while sockets connect, subscribe, unsubscribe and drop. Between the node and Redis sits a proxy that
holds each connection's traffic for its own random delay, so one connection's commands overtake
another's, as they do when a command that timed out during a partition is delivered after the heal.
Each resync's snapshot counts the joins and leaves begun before it (ClusterState.resync); a join that
reaches Redis after the rewrite that counted it, or one recorded before its write was issued, leaves a
channel occupied after every socket is gone. (`make chaos` once left a churn channel occupied.)
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
from collections.abc import Callable, Iterator

import pytest
import redis.asyncio as aioredis

from benchmarks.wsclient import masked_frame
from hub.config import parse_settings
from hub.server import Node
from hub.ws.node import WsNode
from tests.stress.faults import DelayProxy
from tests.support.ports import LOOPBACK, free_port
from tests.support.redis_server import RedisServer
from tests.support.requirements import require_executable

SOCKETS = 60
ROUNDS = 20


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    require_executable("redis-server")
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


class JitterProxy(DelayProxy):
    """Forwards to Redis, holding each connection's chunks for that connection's own delay (order kept)."""

    def __init__(self, target_port: int, seed: int) -> None:
        super().__init__(target_port)
        self._random = random.Random(seed)

    def connection_delay(self) -> Callable[[], float]:
        held = self._random.choice((0.0, 0.005, 0.02, 0.05))
        return lambda: held


async def _read_until(reader: asyncio.StreamReader, marker: bytes, seen: bytes = b"") -> bytes:
    while marker not in seen:
        chunk = await reader.read(4096)
        if not chunk:
            raise ConnectionError(f"closed before {marker!r}")
        seen += chunk
    return seen


async def churn(port: int, index: int, progress: Progress) -> None:
    """One client's rounds: connect, subscribe, then unsubscribe and close, or just drop the connection."""
    for round_number in range(ROUNDS):
        progress.round_done()
        channel = f"race-{(index + round_number) % 5}"
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: {LOOPBACK}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        seen = await _read_until(reader, b"connection_established")
        subscribe = {"event": "pusher:subscribe", "data": {"channel": channel}}
        writer.write(masked_frame(1, json.dumps(subscribe).encode()))
        await _read_until(reader, b"subscription_succeeded", seen)
        if round_number % 2:
            unsubscribe = {"event": "pusher:unsubscribe", "data": {"channel": channel}}
            writer.write(masked_frame(1, json.dumps(unsubscribe).encode()))
            writer.write(masked_frame(8, (1000).to_bytes(2, "big")))
            await asyncio.wait_for(reader.read(), 5)
            writer.close()
        else:
            writer.transport.abort()


class Progress:
    """Counts the churn's rounds; stops the resyncs with most of the churn behind and some still to come.

    A later resync would repair what an earlier one got wrong: the rounds after the last one are what
    keep a wrong rewrite visible at the end.
    """

    def __init__(self, rounds: int) -> None:
        self._left = int(rounds * 0.7)
        self.stop = asyncio.Event()

    def round_done(self) -> None:
        self._left -= 1
        if self._left <= 0:
            self.stop.set()


async def resync_while_churning(ws: WsNode, stop: asyncio.Event) -> int:
    """What run_maintenance does after an outage, again and again: snapshot and resync in one step."""
    done = 0
    while not stop.is_set():
        await ws.ctx.state.resync(ws.snapshot())
        done += 1
        await asyncio.sleep(0.002)
    return done


async def test_resyncs_racing_joins_and_leaves_leave_no_channel_occupied_and_no_socket_counted(
    redis_server: RedisServer,
) -> None:
    port = free_port()
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    proxy = await JitterProxy(redis_server.port, seed=15).start()
    try:
        argv = ["serve", "--host", LOOPBACK, "--port", str(port), "--metrics-port", "0"]
        node = Node(parse_settings([*argv, "--redis-url", f"redis://{LOOPBACK}:{proxy.port}"], {}), {})
        await node.start()
        ws = node.ws
        assert ws is not None
        try:
            progress = Progress(SOCKETS * ROUNDS)
            resyncer = asyncio.create_task(resync_while_churning(ws, progress.stop))
            await asyncio.gather(*(churn(port, i, progress) for i in range(SOCKETS)))
            async with asyncio.timeout(30):
                while ws.connections or ws._tasks:  # noqa: ASYNC110 (the node's own bookkeeping has no event)
                    await asyncio.sleep(0.05)
            resyncs = await resyncer
            await asyncio.sleep(0.2)  # whatever the proxy still holds reaches Redis
            # Read before the node stops: a graceful stop withdraws its share, which would hide a wrong one.
            occupied = {key: await client.hgetall(key) async for key in client.scan_iter(match="*channels")}
            counted = {key: await client.get(key) async for key in client.scan_iter(match="*conns")}
        finally:
            await node.stop()
    finally:
        await proxy.close()
        await client.aclose()
    assert resyncs > 20, f"only {resyncs} resyncs overlapped the churn"
    assert {key: value for key, value in occupied.items() if value} == {}
    assert counted == {}
