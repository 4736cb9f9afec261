"""Soketi's webhook `filter` and Pusher's batched webhooks, checked with a real receiver and pusher-js clients.

A webhook's `filter` (`channel_name_starts_with`, `channel_name_ends_with`) limits it to matching channels.
With `--webhook-batch-ms`, the events a webhook gets within that window arrive in one request, in Pusher's
body `{"time_ms", "events": [...]}`, signed (the receiver checks every request with the `pusher` SDK).
Each test runs on one `hub serve` and on the Redis cluster (two `hub ws` nodes, one `hub ingest`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.support.auth_server import AuthServer
from tests.support.js_clients import JsClients
from tests.support.names import unique
from tests.support.topology import TOPOLOGIES, Topology, running_topology
from tests.support.webhook_receiver import WebhookReceiver

FILTERED: dict[str, Any] = {"id": "41", "key": "filtered-key", "secret": "filtered-secret"}
BATCHED: dict[str, Any] = {"id": "42", "key": "batched-key", "secret": "batched-secret", "enable_client_messages": True}
BATCH_MS = 400


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    """The apps' webhook endpoint, started before the hub so its URL is in the apps file."""
    credentials = {app["key"]: (app["id"], app["secret"]) for app in (FILTERED, BATCHED)}
    with WebhookReceiver(credentials) as running:
        yield running


@pytest.fixture(scope="module", params=TOPOLOGIES)
def filtered(request: pytest.FixtureRequest, receiver: WebhookReceiver) -> Iterator[Topology]:
    """A deployment whose app has one webhook per filter, plus an unfiltered one."""
    hooks = [
        {
            "url": receiver.url("/chat"),
            "event_types": ["channel_occupied"],
            "filter": {"channel_name_starts_with": "private-chat."},
        },
        {"url": receiver.url("/eu"), "event_types": ["channel_occupied"], "filter": {"channel_name_ends_with": "-eu"}},
        {
            "url": receiver.url("/chat-eu"),
            "event_types": ["channel_occupied"],
            "filter": {"channel_name_starts_with": "private-chat.", "channel_name_ends_with": "-eu"},
        },
        {"url": receiver.url("/all"), "event_types": ["channel_occupied"]},
    ]
    with running_topology(request.param, [{**FILTERED, "webhooks": hooks}]) as running:
        yield running


@pytest.fixture(scope="module", params=TOPOLOGIES)
def batched(request: pytest.FixtureRequest, receiver: WebhookReceiver) -> Iterator[Topology]:
    """A deployment that batches webhooks for BATCH_MS."""
    hooks = [{"url": receiver.url("/batched"), "event_types": ["channel_occupied", "client_event"]}]
    extra = ("--webhook-batch-ms", str(BATCH_MS))
    with running_topology(request.param, [{**BATCHED, "webhooks": hooks}], extra=extra) as running:
        yield running


@pytest.fixture
async def batched_auth() -> AsyncIterator[AuthServer]:
    """Channel auth for the batching app."""
    async with AuthServer(app_id=BATCHED["id"], key=BATCHED["key"], secret=BATCHED["secret"]) as server:
        yield server


async def test_webhook_filters_deliver_only_the_channels_they_match(
    filtered: Topology, js: JsClients, receiver: WebhookReceiver
) -> None:
    tag = uuid.uuid4().hex[:8]
    chat, chat_eu, news_eu, other = (f"chat.{tag}.1", f"chat.{tag}-eu", f"news-{tag}-eu", f"other-{tag}")
    channels = {"chat": f"private-{chat}", "chat_eu": f"private-{chat_eu}", "news_eu": news_eu, "other": other}
    async with AuthServer(app_id=FILTERED["id"], key=FILTERED["key"], secret=FILTERED["secret"]) as auth:
        for node, (cid, channel) in enumerate(channels.items()):
            await js.connect(cid, port=filtered.ws_port(node), key=FILTERED["key"], auth_url=auth.channel_auth_url)
            await js.subscribe(cid, channel)

        await receiver.wait_for_events(4, path="/all", channel=lambda c: tag in c)

    def delivered(path: str) -> set[str]:
        return {e.event["channel"] for e in receiver.events(path=path, channel=lambda c: tag in c)}

    assert delivered("/all") == set(channels.values())
    assert delivered("/chat") == {channels["chat"], channels["chat_eu"]}
    assert delivered("/eu") == {channels["chat_eu"], channels["news_eu"]}
    assert delivered("/chat-eu") == {channels["chat_eu"]}
    assert all(r.valid for r in receiver.requests() if tag in r.body.decode())


async def test_batched_webhooks_arrive_with_several_events_in_one_signed_pusher_body(
    batched: Topology, js: JsClients, batched_auth: AuthServer, receiver: WebhookReceiver
) -> None:
    channels = [unique(f"private-batch{i}") for i in range(3)]
    # One socket per channel on alternating nodes; the channels become occupied within one batch window.
    for i in range(len(channels)):
        await js.connect(f"c{i}", port=batched.ws_port(i), key=BATCHED["key"], auth_url=batched_auth.channel_auth_url)
    await js.connect("peer", port=batched.ws_port(1), key=BATCHED["key"], auth_url=batched_auth.channel_auth_url)
    for i, channel in enumerate(channels):
        await js.subscribe(f"c{i}", channel)
    await js.subscribe("peer", channels[0])
    for n in range(3):
        await js.trigger("c0", channels[0], "client-typing", {"n": n})

    events = await receiver.wait_for_events(6, path="/batched", channel=lambda c: c in channels)

    requests = {id(e.request): e.request for e in events}.values()
    assert len(requests) < len(events), "every event came in its own request"
    for request in requests:
        assert request.valid, "X-Pusher-Signature did not verify with the pusher SDK"
        body = json.loads(request.body)
        assert set(body) == {"time_ms", "events"} and isinstance(body["time_ms"], int)
    occupied = sorted(e.event["channel"] for e in events if e.name == "channel_occupied")
    typed = [json.loads(e.event["data"])["n"] for e in events if e.name == "client_event"]
    assert occupied == sorted(channels)
    assert sorted(typed) == [0, 1, 2]
    # Events of one node's window keep their order inside the body.
    in_c0_requests = [e.event for e in events if e.name == "client_event"]
    assert [json.loads(e["data"])["n"] for e in in_c0_requests] == [0, 1, 2]


async def test_a_batch_is_sent_within_its_window_not_held_for_more_events(
    batched: Topology, js: JsClients, batched_auth: AuthServer, receiver: WebhookReceiver
) -> None:
    channel = unique("lone")
    await js.connect("lone", port=batched.ws_port(0), key=BATCHED["key"])
    await js.subscribe("lone", channel)
    subscribed_at = time.time()

    [occupied] = await receiver.wait_for_events(1, path="/batched", channel=channel)

    assert json.loads(occupied.request.body)["events"] == [{"name": "channel_occupied", "channel": channel}]
    assert occupied.request.received_at - subscribed_at < BATCH_MS / 1000 + 1.5
