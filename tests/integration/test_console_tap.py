"""The console's event tap on a real 2-node cluster: silent while nobody watches, cluster-wide and bounded when someone does.

A raw Redis client pattern-subscribes to everything the nodes publish, so the tests see exactly what
the tap puts on the wire; the console stream is read over HTTP as a browser would read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pusher
import pytest
import redis.asyncio as aioredis

from hub.broker.envelope import Envelope, EnvelopeError, Kind
from hub.broker.replay import split_frame
from hub.tap import WATCH_TTL
from tests.support.console_cluster import TOKEN, ConsoleCluster, running_console_cluster
from tests.support.js_clients import JsClients, require_js_harness
from tests.support.ports import LOOPBACK

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[ConsoleCluster]:
    """redis-server, two `hub ws`, one `hub ingest`, every node with its admin port; a low console rate."""
    with running_console_cluster(None, "--console-max-events", "20") as running:
        yield running


@pytest.fixture
async def js() -> AsyncIterator[JsClients]:
    """Real pusher-js clients."""
    require_js_harness()
    async with JsClients() as clients:
        yield clients


@dataclass
class Wire:
    """Every console envelope published on the cluster's Redis since the wire was tapped."""

    console: list[Envelope] = field(default_factory=list)


@contextlib.asynccontextmanager
async def tapped_wire(cluster: ConsoleCluster) -> AsyncIterator[Wire]:
    client = aioredis.Redis.from_url(cluster.topology.redis.url)
    pubsub = client.pubsub()
    await pubsub.psubscribe("*")
    wire = Wire()

    async def read() -> None:
        async for message in pubsub.listen():
            if message["type"] != "pmessage":
                continue
            try:
                envelope = Envelope.unpack(split_frame(message["data"])[1])
            except (EnvelopeError, ValueError):
                continue
            if envelope.kind in (Kind.CONSOLE_WATCH, Kind.CONSOLE_EVENTS):
                wire.console.append(envelope)

    reader = asyncio.create_task(read())
    try:
        await asyncio.sleep(0.2)
        yield wire
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()


@dataclass
class Stream:
    """What one console stream received."""

    hello: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    not_shown: int = 0


@contextlib.asynccontextmanager
async def console_stream(cluster: ConsoleCluster, node: int, query: str = "") -> AsyncIterator[Stream]:
    url = f"http://{LOOPBACK}:{cluster.admin_ports[node]}/api/apps/1/stream{query}"
    stream = Stream()
    opened = asyncio.Event()

    async def read(session: aiohttp.ClientSession) -> None:
        async with session.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status == 200
            name = ""
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if name == "hello":
                        stream.hello = data
                        opened.set()
                    elif name == "events":
                        stream.events.extend(data)
                    elif name == "dropped":
                        stream.not_shown += data["count"]

    async with aiohttp.ClientSession() as session:
        reader = asyncio.create_task(read(session))
        await asyncio.wait_for(opened.wait(), 10)
        try:
            yield stream
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def until(check: Any, what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {within} s")
        await asyncio.sleep(0.05)


def sdk(cluster: ConsoleCluster) -> pusher.Pusher:
    return pusher.Pusher(
        app_id="1", key="app-key", secret="app-secret", host=LOOPBACK, port=cluster.api_port, ssl=False
    )


async def test_nothing_goes_on_the_wire_for_the_console_while_nobody_watches(
    cluster: ConsoleCluster, js: JsClients
) -> None:
    async with tapped_wire(cluster) as wire:
        await js.connect("quiet", port=cluster.ws_port(1), key="app-key")
        await js.subscribe("quiet", "tap-quiet")
        for n in range(10):
            await asyncio.to_thread(sdk(cluster).trigger, "tap-quiet", "e", {"n": n})
        await js.wait_for("quiet", event="e", data={"n": 9})
        await asyncio.sleep(0.5)

    assert wire.console == []


async def test_a_stream_on_one_node_shows_what_happens_on_the_others_then_the_tap_goes_quiet(
    cluster: ConsoleCluster, js: JsClients
) -> None:
    async with tapped_wire(cluster) as wire:
        async with console_stream(cluster, 0) as stream:
            socket_id = await js.connect("watched", port=cluster.ws_port(1), key="app-key")
            await js.subscribe("watched", "tap-watched")
            await asyncio.to_thread(sdk(cluster).trigger, "tap-watched", "seen", {"ok": True})
            await until(lambda: any(e["kind"] == "api_event" for e in stream.events), "the API publish")
            await until(lambda: any(e["kind"] == "subscribed" for e in stream.events), "the subscription")

        by_kind = {e["kind"]: e for e in stream.events}
        assert by_kind["connected"]["socket_id"] == socket_id
        assert by_kind["connected"]["node"] == "ws-b"
        assert by_kind["subscribed"]["channel"] == "tap-watched"
        assert (by_kind["api_event"]["node"], by_kind["api_event"]["event"]) == ("ingest-a", "seen")
        assert {e.origin_node for e in wire.console if e.kind is Kind.CONSOLE_WATCH} == {"ws-a"}

        # Once the watching node stops announcing, every node forgets the app and taps nothing more.
        await asyncio.sleep(WATCH_TTL + 1.5)
        before = len(wire.console)
        await asyncio.to_thread(sdk(cluster).trigger, "tap-watched", "unseen", {})
        await js.disconnect("watched")
        await asyncio.sleep(1.0)
        assert wire.console[before:] == []


async def test_a_flood_is_cut_to_the_rate_and_the_rest_is_counted_as_not_shown(cluster: ConsoleCluster) -> None:
    client = sdk(cluster)
    async with console_stream(cluster, 1, "?channel=tap-flood") as stream:
        assert stream.hello["rate"] == 20
        started = time.monotonic()
        batches = [[{"channel": "tap-flood", "name": f"e{i}-{n}", "data": "{}"} for n in range(10)] for i in range(10)]
        await asyncio.gather(*(asyncio.to_thread(client.trigger_batch, batch) for batch in batches))
        await until(lambda: len(stream.events) + stream.not_shown >= 100, "every event shown or counted", 10)
        elapsed = time.monotonic() - started

    assert stream.not_shown > 0
    assert len(stream.events) <= 20 * (elapsed + 1), "never more than the rate"
    assert len(stream.events) + stream.not_shown == 100
