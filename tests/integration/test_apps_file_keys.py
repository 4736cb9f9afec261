"""Every apps-file key has an effect: the limits and webhook fields no other suite exercises end to end.

One app sets each of them to a small value; each test shows the value changing what a real client (the
`pusher` SDK, a raw WebSocket, a webhook receiver) gets, on one `hub serve` and on the Redis cluster.
The other keys are covered where their feature is: enabled/max_connections/max_channel_name_length
(test_ws_connection, test_ws_channels), client events and their rate and size (test_ws_client_events),
presence member limit (test_ws_presence), user authentication and watchlist events (test_feature_users),
subscription count (test_feature_subscription_count), backend and read rate limits
(test_feature_backend_rate_limit), webhooks and filters (test_feature_webhooks,
test_feature_webhook_filter_batching).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pusher
import pytest

from tests.support.names import unique
from tests.support.raw_ws import open_established
from tests.support.topology import TOPOLOGIES, Topology, running_topology, start_embedded
from tests.support.webhook_receiver import WebhookReceiver

TIGHT: dict[str, Any] = {
    "id": "61",
    "key": "tight-key",
    "secret": "tight-secret",
    "max_event_name_length": 12,
    "max_event_channels_at_once": 2,
    "max_event_batch_size": 2,
    "max_presence_member_size_in_kb": 1,
    "max_watchlist_size": 2,
}


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver({TIGHT["key"]: (TIGHT["id"], TIGHT["secret"])}) as running:
        yield running


@pytest.fixture(scope="module", params=TOPOLOGIES)
def topology(request: pytest.FixtureRequest, receiver: WebhookReceiver) -> Iterator[Topology]:
    hook = {"url": receiver.url("/tight"), "event_types": ["channel_occupied"], "headers": {"X-Backend-Token": "t0k"}}
    with running_topology(request.param, [{**TIGHT, "webhooks": [hook]}]) as running:
        yield running


def sdk(topology: Topology) -> pusher.Pusher:
    return topology.sdk(app_id=TIGHT["id"], key=TIGHT["key"], secret=TIGHT["secret"])


async def refused(call: Any, *args: Any) -> str:
    with pytest.raises(pusher.errors.PusherBadRequest) as error:
        await asyncio.to_thread(call, *args)
    return str(error.value)


async def test_max_event_name_length_limits_published_event_names(topology: Topology) -> None:
    channel = unique("names")
    assert await asyncio.to_thread(sdk(topology).trigger, channel, "e" * 12, "x") == {}
    assert "longer than 12 characters" in await refused(sdk(topology).trigger, channel, "e" * 13, "x")


async def test_max_event_channels_at_once_limits_the_channels_of_one_publish(topology: Topology) -> None:
    channels = [unique("many") for _ in range(3)]
    assert await asyncio.to_thread(sdk(topology).trigger, channels[:2], "e", "x") == {}
    assert "at most 2 channels" in await refused(sdk(topology).trigger, channels, "e", "x")


async def test_max_event_batch_size_limits_a_batch(topology: Topology) -> None:
    batch = [{"channel": unique("batch"), "name": "e", "data": "x"} for _ in range(3)]
    assert await asyncio.to_thread(sdk(topology).trigger_batch, batch[:2]) == {}
    assert "at most 2 events" in await refused(sdk(topology).trigger_batch, batch)


async def test_max_presence_member_size_in_kb_limits_user_info(topology: Topology) -> None:
    channel = unique("presence-sized")
    client = await open_established(topology.ws_port(1), TIGHT["key"])
    try:
        assert client.socket_id is not None
        big = {"user_id": "u1", "user_info": {"bio": "x" * 1100}}
        signed = sdk(topology).authenticate(channel, client.socket_id, big)
        answer = await client.subscribe(channel, auth=signed["auth"], channel_data=signed["channel_data"])
        assert answer.event == "pusher:subscription_error"
        assert "1024 bytes" in json.dumps(answer.data)
        fits = {"user_id": "u1", "user_info": {"bio": "x" * 900}}
        signed = sdk(topology).authenticate(channel, client.socket_id, fits)
        answer = await client.subscribe(channel, auth=signed["auth"], channel_data=signed["channel_data"])
        assert answer.event == "pusher_internal:subscription_succeeded"
    finally:
        await client.close()


async def test_max_watchlist_size_cuts_a_longer_watchlist_with_4302(topology: Topology) -> None:
    client = await open_established(topology.ws_port(0), TIGHT["key"])
    try:
        assert client.socket_id is not None
        since = client.mark()
        signed = sdk(topology).authenticate_user(
            client.socket_id, {"id": unique("watcher"), "watchlist": ["a", "b", "c"]}
        )
        await client.send_json({"event": "pusher:signin", "data": signed})
        await client.wait_event("pusher:signin_success", since=since)
        cut = await client.wait_event("pusher:error", since=since)
        assert cut.data["code"] == 4302 and "first 2" in cut.data["message"]
    finally:
        await client.close()


async def test_webhook_headers_are_sent_with_the_webhook(topology: Topology, receiver: WebhookReceiver) -> None:
    channel = unique("headed")
    client = await open_established(topology.ws_port(0), TIGHT["key"])
    try:
        await client.subscribe(channel)
        [occupied] = await receiver.wait_for_events(1, path="/tight", channel=channel)
    finally:
        await client.close()
    assert occupied.request.headers["X-Backend-Token"] == "t0k"
    assert occupied.request.valid


def test_encryption_master_key_is_accepted_and_named_at_start_as_unused_by_the_server(tmp_path: Path) -> None:
    # The contract accepts the key; the server has no use for it (it relays ciphertext), so it says so.
    key = base64.b64encode(b"k" * 32).decode()
    apps = [{"id": "62", "key": "enc-key", "secret": "enc-secret", "encryption_master_key_base64": key}, TIGHT]
    running = start_embedded(tmp_path, apps=apps)
    try:
        lines = [line for line in running.processes[0].output().splitlines() if "app_setting_not_used" in line]
    finally:
        running.close()
    [warning] = [json.loads(line) for line in lines]  # logs are JSON lines when not on a terminal
    assert (warning["setting"], warning["app_ids"]) == ("encryption_master_key_base64", ["62"])
