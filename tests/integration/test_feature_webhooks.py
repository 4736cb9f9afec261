"""Webhooks as a Pusher app backend receives them: a real HTTP receiver, real pusher-js clients, the SDK.

Each test runs on one `hub serve` and on the Redis cluster (two `hub ws` nodes, one `hub ingest`), with
clients spread over both ws nodes so occupancy and membership are decided cluster-wide. The receiver
(tests/support/webhook_receiver.py) verifies every request with the `pusher` SDK's `validate_webhook`,
and can fail or go down to exercise the retrying, durable queue.

Cache miss and subscription count webhooks are checked with their features, in
test_feature_cache_channels.py and test_feature_subscription_count.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from tests.support.auth_server import AuthServer
from tests.support.js_clients import JsClients
from tests.support.names import unique
from tests.support.polling import eventually
from tests.support.topology import TOPOLOGIES, Topology, running_topology, start_ingest_node, start_ws_node
from tests.support.webhook_receiver import ReceivedEvent, WebhookReceiver

ALL_TYPES = [
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "client_event",
    "cache_miss",
    "subscription_count",
]
HOLD_SECONDS = 3.0  # Pusher delays channel_vacated and member_removed by this much
# How long after the hold a held webhook may take to arrive (sender poll, HTTP, a busy 2-core machine).
DELIVERY_SLACK = 1.0

HOOKS: dict[str, Any] = {"id": "21", "key": "hooks-key", "secret": "hooks-secret", "enable_client_messages": True}
# Only client events, to a path the delivery tests fail or take down without disturbing other tests.
FLAKY: dict[str, Any] = {"id": "22", "key": "flaky-key", "secret": "flaky-secret", "enable_client_messages": True}


def apps(receiver: WebhookReceiver) -> list[dict[str, Any]]:
    """This module's apps, their webhooks pointing at the receiver."""
    return [
        {
            **HOOKS,
            "webhooks": [
                {"url": receiver.url("/hooks"), "event_types": ALL_TYPES},
                {"url": receiver.url("/occupied-only"), "event_types": ["channel_occupied"]},
            ],
        },
        {**FLAKY, "webhooks": [{"url": receiver.url("/flaky"), "event_types": ["client_event"]}]},
    ]


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    """The apps' webhook endpoint, started before the hub so its URL is in the apps file."""
    credentials = {app["key"]: (app["id"], app["secret"]) for app in (HOOKS, FLAKY)}
    with WebhookReceiver(credentials) as running:
        yield running


@pytest.fixture(scope="module", params=TOPOLOGIES)
def topology(request: pytest.FixtureRequest, receiver: WebhookReceiver) -> Iterator[Topology]:
    """A deployment serving this module's apps (overrides the suite's shared topology)."""
    with running_topology(request.param, apps(receiver)) as running:
        yield running


@pytest.fixture
async def auth() -> AsyncIterator[AuthServer]:
    """Channel auth for the hooks app."""
    async with AuthServer(app_id=HOOKS["id"], key=HOOKS["key"], secret=HOOKS["secret"]) as server:
        yield server


@pytest.fixture
async def flaky_auth() -> AsyncIterator[AuthServer]:
    """Channel auth for the app whose webhook endpoint the tests break."""
    async with AuthServer(app_id=FLAKY["id"], key=FLAKY["key"], secret=FLAKY["secret"]) as server:
        yield server


def subscription_count(topology: Topology, channel: str) -> Callable[[], Awaitable[int]]:
    """A reader of the channel's cluster-wide subscription count, from the HTTP API."""
    sdk = topology.sdk(app_id=HOOKS["id"], key=HOOKS["key"], secret=HOOKS["secret"])

    async def read() -> int:
        info = await asyncio.to_thread(sdk.channel_info, channel, ["subscription_count"])
        return int(info.get("subscription_count", 0))

    return read


async def subscribed(
    js: JsClients, topology: Topology, auth: AuthServer, cid: str, node: int, channel: str, **params: Any
) -> str:
    """A pusher-js client on ws node `node` subscribed to `channel`; returns its socket id."""
    socket_id = await js.connect(
        cid, port=topology.ws_port(node), key=auth.key, auth_url=auth.channel_auth_url, auth_params=params
    )
    await js.subscribe(cid, channel)
    return socket_id


def assert_pusher_webhook(received: ReceivedEvent, app: dict[str, Any], event: dict[str, Any]) -> None:
    """The request is Pusher's: signed for the app, JSON, exactly `{"time_ms", "events": [event]}`."""
    request = received.request
    assert request.valid, "X-Pusher-Signature did not verify with the pusher SDK"
    assert request.headers["X-Pusher-Key"] == app["key"]
    assert request.headers["Content-Type"] == "application/json"
    body = json.loads(request.body)
    assert body == {"time_ms": body["time_ms"], "events": [event]}
    assert isinstance(body["time_ms"], int)
    assert abs(body["time_ms"] / 1000 - request.received_at) < 5.0


# --- bodies ----------------------------------------------------------------------------------------


async def test_channel_occupied_is_sent_once_in_pushers_signed_body_when_the_first_socket_subscribes(
    topology: Topology, js: JsClients, auth: AuthServer, receiver: WebhookReceiver
) -> None:
    channel = unique("news")

    await subscribed(js, topology, auth, "a", 0, channel)
    await subscribed(js, topology, auth, "b", 1, channel)

    [occupied] = await receiver.wait_for_events(1, path="/hooks", name="channel_occupied", channel=channel)
    assert_pusher_webhook(occupied, HOOKS, {"name": "channel_occupied", "channel": channel})
    await receiver.expect_exactly(1, within=0.5, path="/hooks", name="channel_occupied", channel=channel)


async def test_channel_vacated_waits_while_a_subscriber_remains_on_another_node_then_follows_the_hold(
    topology: Topology, js: JsClients, auth: AuthServer, receiver: WebhookReceiver
) -> None:
    channel = unique("room")
    await subscribed(js, topology, auth, "a", 0, channel)
    await subscribed(js, topology, auth, "b", 1, channel)
    await receiver.wait_for_events(1, path="/hooks", name="channel_occupied", channel=channel)

    await js.unsubscribe("a", channel)
    await eventually(subscription_count(topology, channel), 1)
    await receiver.expect_no_events(
        within=HOLD_SECONDS + DELIVERY_SLACK, path="/hooks", name="channel_vacated", channel=channel
    )

    await js.unsubscribe("b", channel)
    left_at = time.time()
    [vacated] = await receiver.wait_for_events(
        1, timeout=HOLD_SECONDS + 5, path="/hooks", name="channel_vacated", channel=channel
    )
    assert_pusher_webhook(vacated, HOOKS, {"name": "channel_vacated", "channel": channel})
    assert vacated.request.received_at - left_at >= HOLD_SECONDS - 0.1
    assert len(receiver.events(path="/hooks", name="channel_occupied", channel=channel)) == 1


async def test_channel_reoccupied_within_the_hold_sends_no_vacated_and_no_second_occupied(
    topology: Topology, js: JsClients, auth: AuthServer, receiver: WebhookReceiver
) -> None:
    channel = unique("flap")
    await subscribed(js, topology, auth, "a", 0, channel)
    await receiver.wait_for_events(1, path="/hooks", name="channel_occupied", channel=channel)

    await js.unsubscribe("a", channel)
    await eventually(subscription_count(topology, channel), 0)
    await subscribed(js, topology, auth, "b", 1, channel)

    await receiver.expect_no_events(
        within=HOLD_SECONDS + DELIVERY_SLACK, path="/hooks", name="channel_vacated", channel=channel
    )
    assert len(receiver.events(path="/hooks", name="channel_occupied", channel=channel)) == 1


async def test_member_added_and_removed_are_sent_once_per_user_whatever_its_sockets_on_other_nodes(
    topology: Topology, js: JsClients, auth: AuthServer, receiver: WebhookReceiver
) -> None:
    channel = unique("presence-team")
    ann, bob = unique("ann"), unique("bob")
    await subscribed(js, topology, auth, "ann-0", 0, channel, user_id=ann)
    await subscribed(js, topology, auth, "ann-1", 1, channel, user_id=ann)
    await subscribed(js, topology, auth, "bob", 1, channel, user_id=bob)

    for user_id in (ann, bob):
        [added] = await receiver.wait_for_events(1, path="/hooks", name="member_added", user_id=user_id)
        assert_pusher_webhook(added, HOOKS, {"name": "member_added", "channel": channel, "user_id": user_id})

    await js.disconnect("ann-0")
    await eventually(subscription_count(topology, channel), 2)
    await js.disconnect("ann-1")
    left_at = time.time()
    [removed] = await receiver.wait_for_events(
        1, timeout=HOLD_SECONDS + 5, path="/hooks", name="member_removed", user_id=ann
    )
    assert_pusher_webhook(removed, HOOKS, {"name": "member_removed", "channel": channel, "user_id": ann})
    assert removed.request.received_at - left_at >= HOLD_SECONDS - 0.1
    await receiver.expect_exactly(1, within=0.3, path="/hooks", name="member_removed", user_id=ann)
    assert len(receiver.events(path="/hooks", name="member_added", user_id=ann)) == 1
    assert not receiver.events(path="/hooks", name="member_removed", user_id=bob)


async def test_member_back_within_the_hold_sends_no_member_removed_and_no_second_member_added(
    topology: Topology, js: JsClients, auth: AuthServer, receiver: WebhookReceiver
) -> None:
    channel = unique("presence-reload")
    cat = unique("cat")
    await subscribed(js, topology, auth, "before-reload", 0, channel, user_id=cat)
    await receiver.wait_for_events(1, path="/hooks", name="member_added", user_id=cat)

    await js.disconnect("before-reload")
    await eventually(subscription_count(topology, channel), 0)
    await subscribed(js, topology, auth, "after-reload", 1, channel, user_id=cat)

    await receiver.expect_no_events(
        within=HOLD_SECONDS + DELIVERY_SLACK, path="/hooks", name="member_removed", user_id=cat
    )
    assert len(receiver.events(path="/hooks", name="member_added", user_id=cat)) == 1


@pytest.mark.parametrize("kind", ["private", "presence"])
async def test_client_event_webhook_carries_channel_event_data_socket_and_presence_user(
    topology: Topology, js: JsClients, auth: AuthServer, receiver: WebhookReceiver, kind: str
) -> None:
    channel = unique(f"{kind}-chat")
    sender = await subscribed(js, topology, auth, "sender", 0, channel, user_id="sender-user")
    await subscribed(js, topology, auth, "peer", 1, channel, user_id="peer-user")

    assert await js.trigger("sender", channel, "client-typing", {"typing": True})

    [received] = await receiver.wait_for_events(1, path="/hooks", name="client_event", channel=channel)
    expected: dict[str, Any] = {
        "name": "client_event",
        "channel": channel,
        "event": "client-typing",
        "data": received.event["data"],
        "socket_id": sender,
    }
    if kind == "presence":
        expected["user_id"] = "sender-user"
    assert_pusher_webhook(received, HOOKS, expected)
    assert isinstance(received.event["data"], str)
    assert json.loads(received.event["data"]) == {"typing": True}


async def test_each_webhook_url_gets_only_its_event_types(
    topology: Topology, js: JsClients, auth: AuthServer, receiver: WebhookReceiver
) -> None:
    channel = unique("private-filtered")
    await subscribed(js, topology, auth, "a", 0, channel)
    await subscribed(js, topology, auth, "b", 1, channel)
    assert await js.trigger("a", channel, "client-hello", {"n": 1})

    await receiver.wait_for_events(1, path="/hooks", name="client_event", channel=channel)
    await receiver.wait_for_events(1, path="/occupied-only", name="channel_occupied", channel=channel)
    await receiver.wait_for_events(1, path="/hooks", name="channel_occupied", channel=channel)
    assert not receiver.events(path="/occupied-only", name=lambda n: n != "channel_occupied", channel=channel)


# --- delivery --------------------------------------------------------------------------------------


async def test_receiver_answering_500_twice_then_200_gets_the_event_exactly_once(
    topology: Topology, js: JsClients, flaky_auth: AuthServer, receiver: WebhookReceiver
) -> None:
    channel = unique("private-retry")
    await subscribed(js, topology, flaky_auth, "a", 0, channel)
    receiver.fail_next(2, status=500, path="/flaky")

    assert await js.trigger("a", channel, "client-once", {"n": 1})

    await receiver.wait_for_events(1, timeout=10, path="/flaky", channel=channel)
    await receiver.expect_exactly(1, within=1.0, path="/flaky", channel=channel)
    attempts = [r for r in receiver.requests("/flaky") if any(e.get("channel") == channel for e in r.events)]
    assert [r.status for r in attempts] == [500, 500, 200]
    assert len({r.body for r in attempts}) == 1, "every retry carries the same body (and time_ms)"
    gaps = [later.received_at - earlier.received_at for earlier, later in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.9 and gaps[1] >= gaps[0], f"retries back off: {gaps}"


async def test_webhook_delivery_latency_from_event_to_receiver(
    topology: Topology, js: JsClients, auth: AuthServer, receiver: WebhookReceiver
) -> None:
    channel = unique("private-latency")
    await subscribed(js, topology, auth, "a", 0, channel)
    sent_at: dict[int, float] = {}

    for n in range(20):
        sent_at[n] = time.time()
        assert await js.trigger("a", channel, "client-tick", {"n": n})
        await asyncio.sleep(0.12)  # under the 10 client events per second a socket may send

    received = await receiver.wait_for_events(20, path="/hooks", name="client_event", channel=channel)
    latencies = sorted(r.request.received_at - sent_at[json.loads(r.event["data"])["n"]] for r in received)
    p50, p95 = statistics.median(latencies), latencies[int(0.95 * len(latencies)) - 1]
    print(
        f"\n[{topology.name}] webhook latency client event -> receiver: p50 {p50 * 1000:.0f} ms, "
        f"p95 {p95 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms over {len(latencies)} events"
    )
    assert p95 < 2.0


async def test_receiver_outage_loses_no_webhook_and_the_backlog_drains_after_it_returns(
    topology: Topology, js: JsClients, flaky_auth: AuthServer, receiver: WebhookReceiver
) -> None:
    outage = float(os.environ.get("HUB_TEST_WEBHOOK_OUTAGE_SECONDS", "20"))
    channel = unique("private-outage")
    await subscribed(js, topology, flaky_auth, "a", 0, channel)
    receiver.down()
    started = time.monotonic()
    n = 0
    try:
        while time.monotonic() - started < outage:
            assert await js.trigger("a", channel, "client-during-outage", {"n": n})
            n += 1
            await asyncio.sleep(0.5)
    finally:
        receiver.up()
    up_at = time.time()

    await receiver.wait_for_events(n, timeout=outage + 70, path="/flaky", channel=channel)
    received = await receiver.expect_exactly(n, within=0.5, path="/flaky", channel=channel)
    delivered = sorted(json.loads(r.event["data"])["n"] for r in received)
    drained = max(r.request.received_at for r in received) - up_at
    print(
        f"\n[{topology.name}] receiver down {outage:.0f} s while {n} webhooks were emitted: "
        f"{len(delivered)} delivered, backlog drained {drained:.1f} s after it came back"
    )
    assert delivered == list(range(n)), "each webhook exactly once"


# hub serve keeps its webhook queue in memory by design; the durable queue is the cluster's Redis.
@pytest.mark.parametrize("topology", ["cluster"], indirect=True)
async def test_queued_webhooks_survive_a_restart_of_every_node_while_the_receiver_is_down(
    topology: Topology, js: JsClients, flaky_auth: AuthServer, receiver: WebhookReceiver
) -> None:

    channel = unique("private-restart")
    await subscribed(js, topology, flaky_auth, "a", 0, channel)
    receiver.down()
    try:
        for n in range(5):
            assert await js.trigger("a", channel, "client-queued", {"n": n})
        client = topology.redis_client()
        try:

            async def queued() -> int:
                return sum(channel.encode() in job for job in await client.hvals("{hub:webhooks}:jobs"))

            await eventually(queued, 5)
        finally:
            await client.aclose()
        await js.disconnect("a")
        await restart_every_node(topology)
    finally:
        receiver.up()

    await receiver.wait_for_events(5, timeout=40, path="/flaky", channel=channel)
    received = await receiver.expect_exactly(5, within=0.5, path="/flaky", channel=channel)
    delivered = sorted(json.loads(r.event["data"])["n"] for r in received)
    assert delivered == [0, 1, 2, 3, 4]


async def restart_every_node(topology: Topology) -> None:
    """Crash both ws nodes (SIGKILL), stop the ingest node (SIGTERM), then start all three on their ports."""
    old = list(topology.processes)
    for process in old:
        await process.stop_async(sig=signal.SIGKILL if process in topology.ws_processes else signal.SIGTERM)
    topology.ws_processes.clear()
    for port in topology.ws_ports:
        topology.ws_processes.append(await asyncio.to_thread(start_ws_node, topology, port))
    await asyncio.to_thread(start_ingest_node, topology, topology.api_port)
    for process in old:
        topology.processes.remove(process)
        process.close()
