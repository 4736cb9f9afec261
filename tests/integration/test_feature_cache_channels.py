"""Cache channels with real pusher-js: the last event arrives right after subscribing, else `pusher:cache_miss`.

Each test runs on one `hub serve` (cache in memory) and on the Redis cluster (cache in Redis), where the
event is published through the ingest node and the subscriber sits on the other ws node. The `cache_miss`
webhook goes to a real receiver (tests/support/webhook_receiver.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pusher
import pytest

from tests.support.auth_server import AuthServer
from tests.support.js_clients import JsClients
from tests.support.names import unique
from tests.support.ports import LOOPBACK
from tests.support.topology import TOPOLOGIES, Topology, running_topology
from tests.support.webhook_receiver import WebhookReceiver

MASTER_KEY = base64.b64encode(bytes(range(32))).decode()
CACHE: dict[str, Any] = {
    "id": "41",
    "key": "cache-key",
    "secret": "cache-secret",
    "enable_client_messages": True,
    "encryption_master_key_base64": MASTER_KEY,
}
CACHE_TTL_SECONDS = 1800  # the default: Pusher keeps the last event "up to 30 minutes"


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    """The app's webhook endpoint, started before the hub so its URL is in the apps file."""
    with WebhookReceiver({CACHE["key"]: (CACHE["id"], CACHE["secret"])}) as running:
        yield running


@pytest.fixture(scope="module", params=TOPOLOGIES)
def topology(request: pytest.FixtureRequest, receiver: WebhookReceiver) -> Iterator[Topology]:
    """A deployment serving the cache app (overrides the suite's shared topology)."""
    apps = [{**CACHE, "webhooks": [{"url": receiver.url("/cache"), "event_types": ["cache_miss"]}]}]
    with running_topology(request.param, apps) as running:
        yield running


@pytest.fixture
async def auth() -> AsyncIterator[AuthServer]:
    """Channel auth for the cache app, including encrypted channels' shared secrets."""
    async with AuthServer(
        app_id=CACHE["id"], key=CACHE["key"], secret=CACHE["secret"], encryption_master_key_base64=MASTER_KEY
    ) as server:
        yield server


def sdk(topology: Topology) -> pusher.Pusher:
    """The official SDK for the cache app (it encrypts for private-encrypted- channels)."""
    return pusher.Pusher(
        app_id=CACHE["id"],
        key=CACHE["key"],
        secret=CACHE["secret"],
        host=LOOPBACK,
        port=topology.api_port,
        ssl=False,
        encryption_master_key_base64=MASTER_KEY,
    )


async def trigger(topology: Topology, channel: str, event: str, data: Any) -> None:
    """Publish through the HTTP API with the SDK."""
    await asyncio.to_thread(sdk(topology).trigger, channel, event, data)


async def connect(js: JsClients, topology: Topology, auth: AuthServer, cid: str, node: int, **params: Any) -> None:
    """A pusher-js client of the cache app on ws node `node`."""
    await js.connect(
        cid, port=topology.ws_port(node), key=CACHE["key"], auth_url=auth.channel_auth_url, auth_params=params
    )


@pytest.mark.parametrize("prefix", ["cache-", "private-cache-", "presence-cache-", "private-encrypted-cache-"])
async def test_subscriber_gets_the_last_cached_event_right_after_subscription_succeeded(
    topology: Topology, js: JsClients, auth: AuthServer, prefix: str
) -> None:
    channel = unique(f"{prefix}score")
    await trigger(topology, channel, "score", {"home": 1, "away": 0})
    await trigger(topology, channel, "score", {"home": 2, "away": 0})
    await connect(js, topology, auth, "late", 1, user_id="late-user")

    await js.subscribe("late", channel)

    cached = await js.wait_for("late", source="channel", channel=channel, event="score")
    assert cached.data == {"home": 2, "away": 0}
    await js.wait_for("late", source="message", channel=channel, event="score")
    frames = [r.event for r in js.events("late", source="message", channel=channel)]
    assert frames[:2] == ["pusher_internal:subscription_succeeded", "score"]
    assert not js.events("late", source="channel", channel=channel, event="pusher:cache_miss")


async def test_subscriber_to_an_empty_cache_channel_gets_pusher_cache_miss(
    topology: Topology, js: JsClients, auth: AuthServer
) -> None:
    channel = unique("cache-empty")
    await connect(js, topology, auth, "first", 0)

    await js.subscribe("first", channel)

    await js.wait_for("first", source="message", channel=channel, event="pusher:cache_miss")
    frames = [r.event for r in js.events("first", source="message", channel=channel)]
    assert frames[:2] == ["pusher_internal:subscription_succeeded", "pusher:cache_miss"]
    # No data, as Pusher documents it: a handler bound on the channel is handed nothing, not {}.
    handed = await js.wait_for("first", source="channel", channel=channel, event="pusher:cache_miss")
    assert handed.data is None


async def test_cache_miss_webhook_is_sent_once_for_a_burst_of_subscribers_on_every_node(
    topology: Topology, js: JsClients, auth: AuthServer, receiver: WebhookReceiver
) -> None:
    channel = unique("cache-burst")
    clients = [f"c{i}" for i in range(4)]
    for i, cid in enumerate(clients):
        await connect(js, topology, auth, cid, i % 2)

    await asyncio.gather(*(js.subscribe(cid, channel) for cid in clients))

    for cid in clients:
        await js.wait_for(cid, source="channel", channel=channel, event="pusher:cache_miss")
    [miss] = await receiver.expect_exactly(1, within=1.0, path="/cache", channel=channel)
    assert miss.request.valid
    assert miss.request.headers["X-Pusher-Key"] == CACHE["key"]
    body = json.loads(miss.request.body)
    assert body == {"time_ms": body["time_ms"], "events": [{"name": "cache_miss", "channel": channel}]}


async def test_client_events_are_not_cached(topology: Topology, js: JsClients, auth: AuthServer) -> None:
    channel = unique("private-cache-chat")
    await connect(js, topology, auth, "talker", 0)
    await js.subscribe("talker", channel)
    assert await js.trigger("talker", channel, "client-said", {"text": "hi"})
    await connect(js, topology, auth, "listener", 1)
    await js.subscribe("listener", channel)
    await js.wait_for("listener", source="channel", channel=channel, event="pusher:cache_miss")

    await connect(js, topology, auth, "late", 1)
    await js.subscribe("late", channel)

    await js.wait_for("late", source="channel", channel=channel, event="pusher:cache_miss")
    assert not js.events("late", source="channel", event="client-said")


async def test_channel_info_cache_returns_the_cached_data_and_its_ttl(topology: Topology) -> None:
    channel = unique("cache-info")
    await trigger(topology, channel, "status", {"up": True})

    info = await asyncio.to_thread(sdk(topology).channel_info, channel, ["cache"])

    assert json.loads(info["cache"]["data"]) == {"up": True}
    assert CACHE_TTL_SECONDS - 5 <= info["cache"]["ttl"] <= CACHE_TTL_SECONDS
