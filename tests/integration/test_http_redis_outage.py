"""The HTTP API while Redis is gone: publishes answer 503 (never 200), every node reports not ready,
and after Redis returns, publishes succeed and still-connected pusher-js clients receive them.

The test starts its own cluster (redis-server, two `hub ws`, one `hub ingest`) because it stops Redis.
It measures the outage timeline and keeps it in `OUTAGE_FIGURES` (printed with `pytest -s`).
"""

# ruff: noqa: ASYNC109  -- `until` takes a per-call timeout in seconds

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pusher
import pytest

from tests.support.js_clients import JsClients
from tests.support.names import unique
from tests.support.ports import LOOPBACK
from tests.support.request_signing import signed_params
from tests.support.topology import APP_ID, APP_KEY, APP_SECRET, Topology, running_topology

# Bounds for a loaded 2-core machine: nodes notice the outage, and recover after Redis returns.
NOTICE_BOUND_SECONDS = 10.0
RECOVERY_BOUND_SECONDS = 15.0
OUTAGE_FIGURES: dict[str, float] = {}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Topology]:
    """A private cluster whose Redis this test may stop (the shared session topology stays intact)."""
    with running_topology("cluster", workdir=tmp_path) as topology:
        yield topology


async def until(check: Callable[[], Awaitable[bool]], *, timeout: float, what: str) -> float:
    """Poll `check` until true; return the seconds it took."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < timeout, f"{what} not within {timeout} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def ready_status(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/ready", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code


async def readiness(topology: Topology) -> list[int]:
    """GET /ready of every node: both ws nodes and the ingest node."""
    ports = [*topology.ws_ports, topology.api_port]
    return list(await asyncio.gather(*(asyncio.to_thread(ready_status, port) for port in ports)))


async def publish(topology: Topology, channel: str, event: str, data: Any) -> tuple[int, Any]:
    """A trigger signed as the SDK signs it; returns status and JSON body (the SDK hides 503 bodies)."""
    path = f"/apps/{APP_ID}/events"
    raw = json.dumps({"name": event, "data": json.dumps(data), "channels": [channel]}).encode()
    params = signed_params("POST", path, raw, key=APP_KEY, secret=APP_SECRET)
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(topology.api_url(path), params=params, data=raw) as response,
    ):
        return response.status, json.loads(await response.text())


async def test_publishes_answer_503_while_redis_is_down_and_reach_connected_clients_after_it_returns(
    cluster: Topology, js: JsClients
) -> None:
    channel = unique("outage")
    sockets = {}
    for cid, node in (("a", 0), ("b", 1)):
        sockets[cid] = await js.connect(cid, port=cluster.ws_port(node), key=APP_KEY)
        await js.subscribe(cid, channel)
    sdk: pusher.Pusher = cluster.sdk()
    assert await asyncio.to_thread(sdk.trigger, channel, "before", {"n": 0}) == {}
    for cid in sockets:
        await js.wait_for(cid, source="channel", channel=channel, event="before")

    await cluster.redis.stop_async()
    stopped_at = time.time()

    # Every publish from the first one on is refused: never a 200 for an event that went nowhere.
    answers = [await publish(cluster, channel, "during", {"n": i}) for i in range(5)]
    OUTAGE_FIGURES["first_publish_answer_s"] = time.time() - stopped_at
    for status, body in answers:
        assert status == 503, (status, body)
        assert body["code"] == 503
        assert "could not be published" in body["error"]
    with pytest.raises(pusher.errors.PusherBadStatus, match=r"^503"):
        await asyncio.to_thread(sdk.trigger_batch, [{"channel": channel, "name": "during", "data": "{}"}])
    with pytest.raises(pusher.errors.PusherBadStatus, match=r"^503"):
        await asyncio.to_thread(sdk.channel_info, channel, ["subscription_count"])

    async def none_ready() -> bool:
        return await readiness(cluster) == [503, 503, 503]

    OUTAGE_FIGURES["all_nodes_not_ready_s"] = await until(
        none_ready, timeout=NOTICE_BOUND_SECONDS, what="/ready 503 on every node"
    )
    for cid in sockets:
        state = await js.state(cid)
        assert (state.state, state.socket_id) == ("connected", sockets[cid]), "clients stay connected"

    await cluster.redis.start_async()
    restarted_at = time.time()

    async def publish_accepted() -> bool:
        status, _ = await publish(cluster, unique("probe"), "probe", {})
        assert status in (200, 503), status
        return status == 200

    async def all_ready() -> bool:
        return await readiness(cluster) == [200, 200, 200]

    OUTAGE_FIGURES["publish_accepted_after_restart_s"] = await until(
        publish_accepted, timeout=RECOVERY_BOUND_SECONDS, what="a 200 publish after Redis returned"
    )
    try:
        OUTAGE_FIGURES["all_nodes_ready_after_restart_s"] = await until(
            all_ready, timeout=RECOVERY_BOUND_SECONDS, what="/ready 200 on every node"
        )
    except AssertionError:
        raise AssertionError(f"/ready of ws, ws, ingest after the restart: {await readiness(cluster)}") from None

    # Recovered: one publish reaches both still-connected clients (same sockets, no reconnect).
    mark = js.mark()
    assert await asyncio.to_thread(sdk.trigger, channel, "after", {"n": 1}) == {}
    for cid in sockets:
        record = await js.wait_for(cid, source="channel", channel=channel, event="after", since=mark)
        assert record.data == {"n": 1}
        OUTAGE_FIGURES[f"delivery_{cid}_after_restart_s"] = record.time - restarted_at
        state = await js.state(cid)
        assert (state.state, state.socket_id) == ("connected", sockets[cid])
    assert not js.events("a", source="channel", event="during")
    print("\nRedis outage figures (seconds):", json.dumps({k: round(v, 3) for k, v in OUTAGE_FIGURES.items()}))


async def test_publishes_accepted_after_redis_returns_reach_clients_once_the_nodes_are_ready(
    cluster: Topology, js: JsClients
) -> None:
    """From the first 200 after the restart on, publish every 50 ms: count 200s that nobody received."""
    channel = unique("resume")
    await js.connect("a", port=cluster.ws_port(0), key=APP_KEY)
    await js.subscribe("a", channel)
    await js.connect("b", port=cluster.ws_port(1), key=APP_KEY)
    await js.subscribe("b", channel)
    await cluster.redis.stop_async()

    async def none_ready() -> bool:
        return await readiness(cluster) == [503, 503, 503]

    await until(none_ready, timeout=NOTICE_BOUND_SECONDS, what="/ready 503 on every node")
    await cluster.redis.start_async()
    restarted_at = time.monotonic()

    accepted: list[tuple[int, float]] = []
    ready_at: float | None = None
    last_before_ready = 0
    n = 0
    while time.monotonic() - restarted_at < RECOVERY_BOUND_SECONDS:
        n += 1
        status, _ = await publish(cluster, channel, "resume", {"n": n})
        if status == 200:
            accepted.append((n, time.monotonic() - restarted_at))
        if ready_at is None and await readiness(cluster) == [200, 200, 200]:
            ready_at = time.monotonic() - restarted_at
            last_before_ready = n
        if ready_at is not None and n >= last_before_ready + 5:
            break
        await asyncio.sleep(0.05)
    assert ready_at is not None, "the cluster did not become ready again"

    last = accepted[-1][0]
    for cid in ("a", "b"):
        await js.wait_for(cid, source="channel", channel=channel, event="resume", data={"n": last})
    received = {
        cid: {r.data["n"] for r in js.events(cid, source="channel", channel=channel, event="resume")}
        for cid in ("a", "b")
    }
    lost = {cid: sorted(n for n, _ in accepted if n not in got) for cid, got in received.items()}
    OUTAGE_FIGURES["first_200_after_restart_s"] = accepted[0][1]
    OUTAGE_FIGURES["ready_after_restart_s"] = ready_at
    OUTAGE_FIGURES["accepted_but_lost_a"] = len(lost["a"])
    OUTAGE_FIGURES["accepted_but_lost_b"] = len(lost["b"])
    print("\nRedis restart figures:", json.dumps({k: round(v, 3) for k, v in OUTAGE_FIGURES.items()}))
    # Every publish accepted once all nodes were ready again was delivered on both nodes.
    for cid in ("a", "b"):
        assert not [n for n in lost[cid] if n > last_before_ready], lost
