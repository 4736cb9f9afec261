"""The Broker contract (hub/broker/base.py), run against MemoryBroker and RedisBroker.

The first part holds for both: one node publishing and receiving. The memory broker lives in one
process, so behaviour across nodes (and Redis's own economy of commands) is specified for Redis alone
in the second part.
"""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from hub.broker.envelope import Envelope, Kind, event_envelope
from hub.broker.redis import RedisBroker
from hub.metrics import Metrics
from tests.contract.conftest import (
    UNSUBSCRIBE_DELAY,
    BrokerCluster,
    Inbox,
    calls_between,
    command_calls,
    eventually,
    settle_unsubscribes,
)

APP = "1"
OTHER_APP = "2"


def event(channel: str, name: str, data: object = "{}", *, app_id: str = APP, origin: str = "test") -> Envelope:
    """An EVENT envelope on ``channel``."""
    return event_envelope(app_id, channel, name, data, origin_node=origin)


def control(user_id: str, *, app_id: str = APP) -> Envelope:
    """A control (terminate user) envelope."""
    return Envelope(Kind.TERMINATE_USER, app_id, "", "", None, user_id=user_id)


# Every implementation (memory, single Redis, Redis Cluster, Sentinel): one node


async def test_started_broker_is_healthy(brokers: BrokerCluster) -> None:
    broker = await brokers.node("a", Inbox(), [APP])
    assert broker.healthy


async def test_subscribed_topic_is_delivered_as_soon_as_subscribe_returns(brokers: BrokerCluster) -> None:
    inbox = Inbox()
    broker = await brokers.node("a", inbox, [APP])
    for i in range(20):
        await broker.subscribe(APP, f"room-{i}")
        await broker.publish(event(f"room-{i}", f"ev-{i}"))
    await eventually(lambda: len(inbox.received) == 20, what="20 deliveries")
    assert inbox.events() == [f"ev-{i}" for i in range(20)]


async def test_topics_not_subscribed_are_not_delivered(brokers: BrokerCluster) -> None:
    inbox = Inbox()
    broker = await brokers.node("a", inbox, [APP])
    await broker.subscribe(APP, "wanted")
    await broker.publish(event("unwanted", "skip"))
    await broker.publish(event("wanted", "skip", app_id=OTHER_APP))
    await broker.publish(event("wanted", "marker"))
    await eventually(lambda: "marker" in inbox.events())
    assert inbox.events() == ["marker"]


async def test_control_messages_of_its_apps_are_delivered_without_subscribing(brokers: BrokerCluster) -> None:
    inbox = Inbox()
    broker = await brokers.node("a", inbox, [APP, OTHER_APP])
    await broker.publish(control("alice"))
    await broker.publish(control("bob", app_id=OTHER_APP))
    await eventually(lambda: len(inbox.received) == 2)
    # Order is kept per topic, not across the two apps' topics.
    assert sorted((e.kind, e.app_id, e.user_id) for e in inbox.received) == [
        (Kind.TERMINATE_USER, APP, "alice"),
        (Kind.TERMINATE_USER, OTHER_APP, "bob"),
    ]


async def test_envelope_arrives_with_every_field_intact(brokers: BrokerCluster) -> None:
    inbox = Inbox()
    broker = await brokers.node("a", inbox, [APP])
    await broker.subscribe(APP, "private-chat")
    sent = event_envelope(
        APP,
        "private-chat",
        "client-typing",
        {"text": "héllo", "n": [1, 2.5, None, True]},
        origin_node="node-x",
        except_socket="123.456",
        user_id="u1",
    )
    await broker.publish(sent)
    await eventually(lambda: len(inbox.received) == 1)
    assert inbox.received[0] == sent


async def test_deliveries_keep_publish_order(brokers: BrokerCluster) -> None:
    inbox = Inbox()
    broker = await brokers.node("a", inbox, [APP])
    await broker.subscribe(APP, "ordered")
    for i in range(200):
        await broker.publish(event("ordered", str(i)))
    await eventually(lambda: len(inbox.received) == 200)
    assert inbox.events() == [str(i) for i in range(200)]


async def test_unsubscribe_stops_delivery(brokers: BrokerCluster) -> None:
    inbox = Inbox()
    broker = await brokers.node("a", inbox, [APP])
    await broker.subscribe(APP, "leaving")
    await broker.subscribe(APP, "staying")
    broker.unsubscribe(APP, "leaving")
    await settle_unsubscribes(broker)
    await broker.publish(event("leaving", "late"))
    await broker.publish(event("staying", "marker"))
    await eventually(lambda: "marker" in inbox.events())
    assert inbox.events() == ["marker"]


async def test_leave_and_quick_rejoin_keeps_the_topic_delivered(brokers: BrokerCluster) -> None:
    inbox = Inbox()
    broker = await brokers.node("a", inbox, [APP])
    await broker.subscribe(APP, "flappy")
    for _ in range(5):
        broker.unsubscribe(APP, "flappy")
        await broker.subscribe(APP, "flappy")
    await settle_unsubscribes(broker)
    await broker.publish(event("flappy", "still-here"))
    await eventually(lambda: inbox.events() == ["still-here"])


async def test_control_topic_stays_delivered_after_unsubscribing_it(brokers: BrokerCluster) -> None:
    inbox = Inbox()
    broker = await brokers.node("a", inbox, [APP])
    broker.unsubscribe(APP, "#control")
    await settle_unsubscribes(broker)
    await broker.publish(control("alice"))
    await eventually(lambda: len(inbox.received) == 1)


# Redis: several nodes, and what it costs in Redis commands


async def test_publish_reaches_every_subscribed_node_and_no_other(redis_brokers: BrokerCluster) -> None:
    inboxes = [Inbox(), Inbox(), Inbox()]
    a, b, c = [await redis_brokers.node(name, inbox, [APP]) for name, inbox in zip("abc", inboxes, strict=True)]
    await a.subscribe(APP, "news")
    await b.subscribe(APP, "news")
    await c.publish(event("news", "headline", origin="c"))
    await c.publish(control("marker"))
    await eventually(lambda: all(len(inbox.received) == 2 for inbox in inboxes[:2]))
    await eventually(lambda: len(inboxes[2].received) == 1)
    assert [e.event for e in inboxes[0].received] == ["headline", ""]
    assert [e.event for e in inboxes[1].received] == ["headline", ""]
    assert [e.kind for e in inboxes[2].received] == [Kind.TERMINATE_USER]


async def test_subscribe_on_one_node_is_live_for_publishes_from_another_when_it_returns(
    redis_brokers: BrokerCluster,
) -> None:
    inbox = Inbox()
    a = await redis_brokers.node("a", inbox, [APP])
    b = await redis_brokers.node("b", Inbox(), [APP])
    for i in range(20):
        await a.subscribe(APP, f"fresh-{i}")
        await b.publish(event(f"fresh-{i}", f"ev-{i}"))
    await eventually(lambda: len(inbox.received) == 20)


async def test_concurrent_subscribes_share_one_subscribe_command(
    redis_brokers: BrokerCluster, redis_client: aioredis.Redis
) -> None:
    broker = await redis_brokers.node("a", Inbox(), [APP])
    before = await command_calls(redis_client)
    await asyncio.gather(*(broker.subscribe(APP, f"batch-{i}") for i in range(100)))
    after = await command_calls(redis_client)
    # One SUBSCRIBE and its confirming PING; then each topic's replay floor is read (pipelined) and a
    # PING on the pub/sub connection marks every message published before those reads as arrived.
    assert calls_between(before, after) == {"subscribe": 1, "ping": 2, "xrevrange": 100}


async def test_quick_leave_and_rejoin_costs_no_redis_command(
    redis_brokers: BrokerCluster, redis_client: aioredis.Redis
) -> None:
    broker = await redis_brokers.node("a", Inbox(), [APP])
    await broker.subscribe(APP, "reload")
    before = await command_calls(redis_client)
    for _ in range(10):
        broker.unsubscribe(APP, "reload")
        await broker.subscribe(APP, "reload")
    await asyncio.sleep(UNSUBSCRIBE_DELAY * 2)
    after = await command_calls(redis_client)
    assert calls_between(before, after) == {}


async def test_unsubscribes_falling_due_together_share_one_command(
    redis_brokers: BrokerCluster, redis_client: aioredis.Redis
) -> None:
    broker = await redis_brokers.node("a", Inbox(), [APP])
    await asyncio.gather(*(broker.subscribe(APP, f"bye-{i}") for i in range(50)))
    before = await command_calls(redis_client)
    for i in range(50):
        broker.unsubscribe(APP, f"bye-{i}")
    await asyncio.sleep(UNSUBSCRIBE_DELAY * 3)
    after = await command_calls(redis_client)
    assert calls_between(before, after) == {"unsubscribe": 1}
    numsub = dict(await redis_client.pubsub_numsub(*(f"{redis_brokers.prefix}:{APP}:bye-{i}" for i in range(50))))
    assert set(numsub.values()) == {0}


async def test_one_published_event_costs_one_redis_round_trip(
    redis_brokers: BrokerCluster, redis_client: aioredis.Redis
) -> None:
    """Measured figure for the scale-out issue: Redis commands per published event (printed with -s)."""
    receivers = [await redis_brokers.node(f"r{i}", Inbox(), [APP]) for i in range(3)]
    for receiver in receivers:
        await receiver.subscribe(APP, "measured")
    publisher = await redis_brokers.node("p", Inbox(), [APP])
    await publisher.publish(event("measured", "warm-up"))  # opens the pooled connection (HELLO, CLIENT SETNAME)
    events = 500
    before = await command_calls(redis_client)
    for i in range(events):
        await publisher.publish(event("measured", str(i)))
    after = await command_calls(redis_client)
    delta = calls_between(before, after)
    print(f"\nRedis commands for {events} events published to 3 subscribed nodes: {delta}")
    # One EVALSHA per event: the script appends to the replay stream, refreshes its TTL and publishes.
    assert delta == {"evalsha": events, "xadd": events, "pexpire": events, "publish": events}


async def test_malformed_payloads_are_dropped_and_delivery_continues(
    redis_brokers: BrokerCluster, redis_client: aioredis.Redis
) -> None:
    inbox = Inbox()
    broker = await redis_brokers.node("a", inbox, [APP])
    await broker.subscribe(APP, "noisy")
    topic = f"{redis_brokers.prefix}:{APP}:noisy"
    await redis_client.publish(topic, b"\xc1not msgpack")
    await redis_client.publish(topic, b"\x93\x09\x01\x02")  # msgpack, wrong version and shape
    await broker.publish(event("noisy", "fine"))
    await eventually(lambda: inbox.events() == ["fine"])
    assert broker.healthy


async def test_handler_exception_does_not_stop_delivery(redis_brokers: BrokerCluster) -> None:
    seen: list[str] = []

    def handler(envelope: Envelope) -> None:
        seen.append(envelope.event)
        if envelope.event == "boom":
            raise RuntimeError("handler bug")

    broker = await redis_brokers.node("a", handler, [APP])
    await broker.subscribe(APP, "fragile")
    await broker.publish(event("fragile", "boom"))
    await broker.publish(event("fragile", "after"))
    await eventually(lambda: seen == ["boom", "after"])


async def test_large_payloads_arrive_whole_among_small_ones(redis_brokers: BrokerCluster) -> None:
    inbox = Inbox()
    broker = await redis_brokers.node("a", inbox, [APP])
    await broker.subscribe(APP, "mixed")
    big = "x" * 3_000_000
    for i in range(30):
        await broker.publish(event("mixed", str(i), big if i % 10 == 5 else "small"))
    await eventually(lambda: len(inbox.received) == 30, within=10)
    assert inbox.events() == [str(i) for i in range(30)]
    assert [len(e.data) for e in inbox.received if e.data != "small"] == [3_000_000] * 3


async def test_metrics_report_connection_and_subscriptions_and_leave_lag_to_fanout(
    redis_brokers: BrokerCluster,
) -> None:
    metrics = Metrics()
    inbox = Inbox()
    broker = await redis_brokers.node("a", inbox, [APP], metrics)
    await broker.subscribe(APP, "watched")
    await broker.publish(event("watched", "ev"))
    await eventually(lambda: len(inbox.received) == 1)
    registry = metrics.registry
    assert registry.get_sample_value("hub_broker_connected") == 1
    # the probe channel, the app's control channel and "watched"
    assert registry.get_sample_value("hub_broker_subscribed_channels") == 3
    # The ws node's fan-out observes the lag of every event once; the broker must not count it again.
    assert registry.get_sample_value("hub_pubsub_lag_seconds_count") == 0


async def test_receive_path_handles_a_burst_quickly(redis_brokers: BrokerCluster) -> None:
    """A coarse guard on the hot path: 20 000 small messages are received and decoded within seconds."""
    inbox = Inbox()
    broker = await redis_brokers.node("a", inbox, [APP])
    await broker.subscribe(APP, "burst")
    publisher = await redis_brokers.node("p", Inbox(), [APP])
    assert isinstance(publisher, RedisBroker)
    count = 20_000
    started = time.perf_counter()
    for _ in range(count // 1000):  # bursts of 1000 concurrent publishes, as from many ingest requests
        await asyncio.gather(*(publisher.publish(event("burst", "e")) for _ in range(1000)))
    await eventually(lambda: len(inbox.received) == count, within=10)
    elapsed = time.perf_counter() - started
    print(f"\n{count} messages published and received in {elapsed:.2f} s")
    assert elapsed < 8.0  # 0.7 s on the dev box; a 10x slower path is a regression, not CI noise


async def test_deployments_with_different_prefixes_share_a_redis_without_hearing_each_other(
    redis_brokers: BrokerCluster,
) -> None:
    ours, theirs = Inbox(), Inbox()
    receiver = await redis_brokers.node("ours", ours, [APP])
    other = BrokerCluster("redis", redis_brokers.redis_url, redis_brokers.prefix + "-other")
    try:
        foreign = await other.node("theirs", theirs, [APP])
        await receiver.subscribe(APP, "shared-name")
        await foreign.subscribe(APP, "shared-name")

        await foreign.publish(event("shared-name", "theirs-only"))
        await receiver.publish(event("shared-name", "ours-only"))

        await eventually(lambda: ours.events() == ["ours-only"] and theirs.events() == ["theirs-only"])
        await asyncio.sleep(0.2)
        assert ours.events() == ["ours-only"]
        assert theirs.events() == ["theirs-only"]
    finally:
        await other.close()
