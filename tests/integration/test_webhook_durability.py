"""Webhooks that survive bad days: a node killed during a hold, a receiver down long enough to back off.

Real hub processes (one `hub serve`, or Redis + two `hub ws` + `hub ingest`), real pusher-js clients and
the real receiver of tests/support/webhook_receiver.py, which verifies each request with the `pusher` SDK.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.support.auth_server import AuthServer
from tests.support.js_clients import JsClients
from tests.support.names import unique
from tests.support.polling import eventually
from tests.support.topology import TOPOLOGIES, Topology, running_topology, start_ws_node
from tests.support.webhook_receiver import WebhookReceiver

HOLD_SECONDS = 3.0
OCCUPANCY = ["channel_occupied", "channel_vacated", "member_added", "member_removed"]
HOOKS: dict[str, Any] = {"id": "31", "key": "durable-key", "secret": "durable-secret", "enable_client_messages": True}


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    """The app's webhook endpoint, started before the hub so its URL is in the apps file."""
    with WebhookReceiver({HOOKS["key"]: (HOOKS["id"], HOOKS["secret"])}) as running:
        yield running


@pytest.fixture(scope="module", params=TOPOLOGIES)
def topology(request: pytest.FixtureRequest, receiver: WebhookReceiver) -> Iterator[Topology]:
    """A deployment whose one app sends occupancy webhooks to /occupancy and client events to /outage."""
    app = {
        **HOOKS,
        "webhooks": [
            {"url": receiver.url("/occupancy"), "event_types": OCCUPANCY},
            {"url": receiver.url("/outage"), "event_types": ["client_event"]},
        ],
    }
    with running_topology(request.param, [app]) as running:
        yield running


@pytest.fixture
async def auth() -> AsyncIterator[AuthServer]:
    """Channel auth for the app."""
    async with AuthServer(app_id=HOOKS["id"], key=HOOKS["key"], secret=HOOKS["secret"]) as server:
        yield server


async def subscribed(
    js: JsClients, topology: Topology, auth: AuthServer, cid: str, node: int, channel: str, **params: Any
) -> None:
    """A pusher-js client on ws node `node`, subscribed to `channel`."""
    await js.connect(cid, port=topology.ws_port(node), key=auth.key, auth_url=auth.channel_auth_url, auth_params=params)
    await js.subscribe(cid, channel)


async def held_in_redis(topology: Topology, *needles: str) -> int:
    """How many held webhooks mentioning every needle wait in the cluster's Redis queue."""
    client = topology.redis_client()
    try:
        ids = await client.zrange("{hub:webhooks}:held", 0, -1)
    finally:
        await client.aclose()
    return sum(all(n.encode() in job_id for n in needles) for job_id in ids)


async def kill_and_replace_ws_node(topology: Topology, node: int) -> float:
    """`kill -9` ws node `node`; return when it died. A fresh node takes its port for later tests."""
    victim = topology.ws_processes[node]
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.time()
    await asyncio.to_thread(victim.stop)
    topology.processes.remove(victim)
    victim.close()
    topology.ws_processes[node] = await asyncio.to_thread(start_ws_node, topology, topology.ws_port(node))
    return killed_at


@pytest.mark.parametrize("topology", ["cluster"], indirect=True)
async def test_channel_vacated_held_by_a_node_killed_during_the_hold_is_still_sent_once(
    topology: Topology, js: JsClients, auth: AuthServer, receiver: WebhookReceiver
) -> None:
    channel = unique("orphan")
    await subscribed(js, topology, auth, "leaver", 0, channel)
    await receiver.wait_for_events(1, path="/occupancy", name="channel_occupied", channel=channel)

    await js.unsubscribe("leaver", channel)
    left_at = time.time()
    await eventually(lambda: held_in_redis(topology, channel), 1)
    killed_at = await kill_and_replace_ws_node(topology, 0)
    assert killed_at - left_at < HOLD_SECONDS, "the node must die inside the hold for this test to mean anything"

    [vacated] = await receiver.wait_for_events(
        1, timeout=HOLD_SECONDS + 10, path="/occupancy", name="channel_vacated", channel=channel
    )
    assert vacated.request.valid
    assert vacated.request.received_at - left_at >= HOLD_SECONDS - 0.1, "still held for the whole window"
    await receiver.expect_exactly(1, within=1.0, path="/occupancy", name="channel_vacated", channel=channel)
    await js.disconnect("leaver")


@pytest.mark.parametrize("topology", ["cluster"], indirect=True)
async def test_member_removed_held_by_a_node_killed_during_the_hold_is_still_sent_once(
    topology: Topology, js: JsClients, auth: AuthServer, receiver: WebhookReceiver
) -> None:
    channel, user = unique("presence-orphan"), unique("user")
    await subscribed(js, topology, auth, "member", 0, channel, user_id=user)
    await receiver.wait_for_events(1, path="/occupancy", name="member_added", user_id=user)

    await js.disconnect("member")
    left_at = time.time()
    await eventually(lambda: held_in_redis(topology, channel, user), 1)
    killed_at = await kill_and_replace_ws_node(topology, 0)
    assert killed_at - left_at < HOLD_SECONDS

    [removed] = await receiver.wait_for_events(
        1, timeout=HOLD_SECONDS + 10, path="/occupancy", name="member_removed", user_id=user
    )
    assert json.loads(removed.request.body)["events"] == [
        {"name": "member_removed", "channel": channel, "user_id": user}
    ]
    await receiver.expect_exactly(1, within=1.0, path="/occupancy", name="member_removed", user_id=user)
    await receiver.wait_for_events(1, path="/occupancy", name="channel_vacated", channel=channel)


@pytest.mark.parametrize("topology", ["cluster"], indirect=True)
async def test_a_hold_cancelled_on_another_node_is_not_sent_after_the_node_that_placed_it_dies(
    topology: Topology, js: JsClients, auth: AuthServer, receiver: WebhookReceiver
) -> None:
    channel = unique("reload")
    await subscribed(js, topology, auth, "before", 0, channel)
    await receiver.wait_for_events(1, path="/occupancy", name="channel_occupied", channel=channel)

    await js.unsubscribe("before", channel)
    await eventually(lambda: held_in_redis(topology, channel), 1)
    await subscribed(js, topology, auth, "after", 1, channel)
    await eventually(lambda: held_in_redis(topology, channel), 0)
    await kill_and_replace_ws_node(topology, 0)

    await receiver.expect_no_events(within=HOLD_SECONDS + 2, path="/occupancy", name="channel_vacated", channel=channel)
    assert len(receiver.events(path="/occupancy", name="channel_occupied", channel=channel)) == 1
    await js.disconnect("before")
    await js.disconnect("after")


async def test_backlog_resumes_within_seconds_of_the_receiver_returning_without_new_events(
    topology: Topology, js: JsClients, auth: AuthServer, receiver: WebhookReceiver
) -> None:
    # 20 s of refusals back each job off to 16 s between attempts: without a probe the next one would
    # come 11 s after the receiver is back.
    outage = float(os.environ.get("HUB_TEST_WEBHOOK_QUIET_OUTAGE_SECONDS", "20"))
    channel = unique("private-quiet")
    await subscribed(js, topology, auth, "talker", 0, channel)
    receiver.down()
    try:
        for n in range(5):
            assert await js.trigger("talker", channel, "client-before-silence", {"n": n})
        await asyncio.sleep(outage)
    finally:
        receiver.up()
    up_at = time.time()

    received = await receiver.wait_for_events(5, timeout=outage + 70, path="/outage", channel=channel)
    resumed = min(r.request.received_at for r in received) - up_at
    drained = max(r.request.received_at for r in received) - up_at
    print(f"\n[{topology.name}] after a {outage:.0f} s outage: first {resumed:.1f} s, all {drained:.1f} s after return")
    assert sorted(json.loads(r.event["data"])["n"] for r in received) == [0, 1, 2, 3, 4]
    assert drained < 6.0, f"the backlog waited {drained:.1f} s after the receiver came back"
    await js.disconnect("talker")
