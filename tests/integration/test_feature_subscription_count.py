"""Subscription counts with real pusher-js: `pusher:subscription_count` and the `subscription_count` webhook.

For apps with `enable_subscription_count`, subscribers of non-presence channels are told the
cluster-wide count when it changes, at most once a second per channel (pusher-js sets
`channel.subscriptionCount` and emits `pusher:subscription_count`). Each test runs on one `hub serve`
and on the Redis cluster, with subscribers on both ws nodes.
"""

# ruff: noqa: ASYNC109  -- `count_reaches` takes a per-call timeout in seconds

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.auth_server import AuthServer
from tests.support.js_clients import JsClients
from tests.support.names import unique
from tests.support.topology import TOPOLOGIES, Topology, running_topology
from tests.support.webhook_receiver import WebhookReceiver

COUNTED: dict[str, Any] = {
    "id": "51",
    "key": "counted-key",
    "secret": "counted-secret",
    "enable_subscription_count": True,
}
UNCOUNTED: dict[str, Any] = {"id": "52", "key": "uncounted-key", "secret": "uncounted-secret"}
INTERVAL_SECONDS = 1.0  # at most one report per channel per second


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    """The apps' webhook endpoint, started before the hub so its URL is in the apps file."""
    with WebhookReceiver({app["key"]: (app["id"], app["secret"]) for app in (COUNTED, UNCOUNTED)}) as running:
        yield running


@pytest.fixture(scope="module", params=TOPOLOGIES)
def topology(request: pytest.FixtureRequest, receiver: WebhookReceiver) -> Iterator[Topology]:
    """A deployment serving the two apps, both with a subscription_count webhook."""
    apps = [
        {**app, "webhooks": [{"url": receiver.url(f"/counts/{app['id']}"), "event_types": ["subscription_count"]}]}
        for app in (COUNTED, UNCOUNTED)
    ]
    with running_topology(request.param, apps) as running:
        yield running


async def subscribed(js: JsClients, topology: Topology, cid: str, node: int, channel: str, app: dict[str, Any]) -> None:
    """A pusher-js client of `app` on ws node `node` subscribed to `channel`."""
    await js.connect(cid, port=topology.ws_port(node), key=app["key"])
    await js.subscribe(cid, channel)


async def count_reaches(js: JsClients, cid: str, channel: str, count: int, *, timeout: float = 5.0) -> None:
    """Wait until pusher-js reports `count` for the channel (what `channel.subscriptionCount` then holds)."""
    await js.wait_for(
        cid,
        source="channel",
        channel=channel,
        event="pusher:subscription_count",
        data=lambda d: d == {"subscription_count": count},
        timeout=timeout,
    )


async def test_subscription_count_reaches_pusher_js_on_every_node_as_sockets_come_and_go(
    topology: Topology, js: JsClients
) -> None:
    channel = unique("counted")
    await subscribed(js, topology, "a", 0, channel, COUNTED)
    await count_reaches(js, "a", channel, 1)

    await subscribed(js, topology, "b", 1, channel, COUNTED)
    await count_reaches(js, "a", channel, 2)
    await count_reaches(js, "b", channel, 2)

    await js.unsubscribe("b", channel)
    await count_reaches(js, "a", channel, 1)


async def test_subscription_count_webhook_reports_the_cluster_wide_count_in_pushers_body(
    topology: Topology, js: JsClients, receiver: WebhookReceiver
) -> None:
    channel = unique("counted-hook")
    path = f"/counts/{COUNTED['id']}"
    await subscribed(js, topology, "a", 0, channel, COUNTED)
    await subscribed(js, topology, "b", 1, channel, COUNTED)

    [*_, last] = await receiver.wait_for_events(1, path=path, channel=channel, subscription_count=2)

    assert last.request.valid
    assert last.request.headers["X-Pusher-Key"] == COUNTED["key"]
    body = json.loads(last.request.body)
    assert body == {
        "time_ms": body["time_ms"],
        "events": [{"name": "subscription_count", "channel": channel, "subscription_count": 2}],
    }


async def test_subscription_counts_of_a_burst_are_coalesced_to_one_report_a_second(
    topology: Topology, js: JsClients, receiver: WebhookReceiver
) -> None:
    channel = unique("counted-burst")
    path = f"/counts/{COUNTED['id']}"
    for i in range(6):
        await subscribed(js, topology, f"c{i}", i % 2, channel, COUNTED)

    await count_reaches(js, "c0", channel, 6)
    await receiver.wait_for_events(1, path=path, channel=channel, subscription_count=6)

    reports = [r.data["subscription_count"] for r in js.events("c0", event="pusher:subscription_count")]
    assert len(reports) < 6, f"one report per subscribe, not coalesced: {reports}"
    sent = sorted(json.loads(e.request.body)["time_ms"] for e in receiver.events(path=path, channel=channel))
    gaps = [(later - earlier) / 1000 for earlier, later in itertools.pairwise(sent)]
    assert all(gap >= INTERVAL_SECONDS - 0.1 for gap in gaps), f"reports closer than a second apart: {gaps}"


async def test_no_subscription_count_for_apps_without_it_or_for_presence_channels(
    topology: Topology, js: JsClients, receiver: WebhookReceiver
) -> None:
    channel, presence = unique("uncounted"), unique("presence-counted")
    await subscribed(js, topology, "a", 0, channel, UNCOUNTED)
    await subscribed(js, topology, "b", 1, channel, UNCOUNTED)
    async with AuthServer(app_id=COUNTED["id"], key=COUNTED["key"], secret=COUNTED["secret"]) as auth:
        for cid, node in (("p", 0), ("q", 1)):
            await js.connect(
                cid,
                port=topology.ws_port(node),
                key=COUNTED["key"],
                auth_url=auth.channel_auth_url,
                auth_params={"user_id": cid},
            )
            await js.subscribe(cid, presence)

    await js.expect_none("a", event="pusher:subscription_count", within=INTERVAL_SECONDS + 0.5)
    await js.expect_none("p", event="pusher:subscription_count", within=0.1)
    assert not receiver.events(path=f"/counts/{UNCOUNTED['id']}", channel=channel)
    assert not receiver.events(path=f"/counts/{COUNTED['id']}", channel=presence)
