"""What the Redis broker and state do when Redis goes away, hangs, restarts or silently drops a subscription.

Each test owns its redis-server (stopped, paused with SIGSTOP, or restarted on the same port) and runs
the real implementation against it. Figures the scale-out issue asks for are printed (run with -s).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from hub.broker.base import BrokerUnavailable
from hub.broker.envelope import Envelope, Kind, event_envelope
from hub.broker.redis import RedisBroker
from hub.metrics import Metrics
from hub.state.base import NodeSnapshot, StateUnavailable
from hub.state.redis import RedisClusterState
from tests.contract.conftest import TIMEOUT, Inbox, eventually
from tests.support.redis_server import RedisServer
from tests.support.requirements import require_executable

APP = "1"
PREFIX = "hub"


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A redis-server of this test alone, free to stop, pause and restart."""
    require_executable("redis-server")
    with RedisServer() as running:
        yield running


@pytest.fixture
async def started() -> AsyncIterator[list[Any]]:
    """Brokers and states a test starts; closed at the end."""
    made: list[Any] = []
    yield made
    for thing in made:
        await thing.close()


def fast_broker(url: str, node_id: str, metrics: Metrics | None = None, **overrides: float) -> RedisBroker:
    """A broker with test-sized timeouts and probe interval; production backoff cap unless overridden."""
    options: dict[str, float] = {"timeout": TIMEOUT, "unsubscribe_delay": 0.1, "probe_interval": 0.2}
    options["probe_timeout"] = 0.3
    options.update(overrides)
    return RedisBroker(
        url,
        PREFIX,
        node_id,
        metrics,
        timeout=options["timeout"],
        unsubscribe_delay=options["unsubscribe_delay"],
        probe_interval=options["probe_interval"],
        probe_timeout=options["probe_timeout"],
        max_backoff=options.get("max_backoff", 2.0),
    )


async def broker_pair(server: RedisServer, started: list[Any], metrics: Metrics | None = None) -> tuple[Any, ...]:
    """A receiving broker (with its inbox) and a publishing broker on ``server``."""
    inbox = Inbox()
    receiver = fast_broker(server.url, "receiver", metrics)
    publisher = fast_broker(server.url, "publisher")
    started += [receiver, publisher]
    await receiver.start(inbox, [APP])
    await publisher.start(Inbox(), [APP])
    return inbox, receiver, publisher


async def started_states(server: RedisServer, started: list[Any], *node_ids: str) -> list[RedisClusterState]:
    """Started states of nodes ``node_ids`` on ``server``, in that order (closed when the test ends)."""
    states = [RedisClusterState(server.url, PREFIX, node_id, timeout=TIMEOUT) for node_id in node_ids]
    started += states
    for state in states:
        await state.start()
    return states


def event(channel: str, name: str) -> Envelope:
    return event_envelope(APP, channel, name, "{}", origin_node="test")


async def publish_until_received(publisher: RedisBroker, inbox: Inbox, channel: str, within: float) -> float:
    """Publish every 20 ms until the inbox gets one; seconds it took. Failed publishes are expected meanwhile."""
    started = time.monotonic()
    count = 0
    while time.monotonic() - started < within:
        count += 1
        with contextlib.suppress(BrokerUnavailable):
            await publisher.publish(event(channel, f"try-{count}"))
        if any(e.channel == channel for e in inbox.received):
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    pytest.fail(f"nothing delivered on {channel} within {within} s")


# Broker: Redis down


async def test_publish_raises_broker_unavailable_while_redis_is_down(server: RedisServer, started: list[Any]) -> None:
    metrics = Metrics()
    broker = fast_broker(server.url, "a", metrics)
    started.append(broker)
    await broker.start(Inbox(), [APP])
    await broker.publish(event("news", "fine"))
    await server.stop_async()
    began = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        await broker.publish(event("news", "lost"))
    assert time.monotonic() - began < TIMEOUT + 0.5
    with pytest.raises(BrokerUnavailable):
        await broker.publish(Envelope(Kind.TERMINATE_USER, APP, "", "", None, user_id="u"))
    assert metrics.registry.get_sample_value("hub_broker_publish_failures_total") == 2
    assert not broker.healthy


async def test_broker_is_unhealthy_during_an_outage_and_healthy_again_after_restart(
    server: RedisServer, started: list[Any]
) -> None:
    metrics = Metrics()
    broker = fast_broker(server.url, "a", metrics)
    started.append(broker)
    await broker.start(Inbox(), [APP])
    assert broker.healthy
    await server.stop_async()
    await eventually(lambda: not broker.healthy, what="unhealthy after Redis stopped")
    assert metrics.registry.get_sample_value("hub_broker_connected") == 0
    await server.start_async()
    await eventually(lambda: broker.healthy, within=5, what="healthy after Redis restarted")
    assert metrics.registry.get_sample_value("hub_broker_connected") == 1
    assert metrics.registry.get_sample_value("hub_broker_reconnects_total") == 1


async def test_broker_resubscribes_every_topic_after_restart_and_delivery_resumes(
    server: RedisServer, started: list[Any]
) -> None:
    """Measured figure for the scale-out issue: time from redis-server restart to delivery resuming."""
    inbox = Inbox()
    receiver = RedisBroker(server.url, PREFIX, "receiver", timeout=TIMEOUT)  # production probe and backoff
    publisher = RedisBroker(server.url, PREFIX, "publisher", timeout=TIMEOUT)
    started += [receiver, publisher]
    await receiver.start(inbox, [APP])
    await publisher.start(Inbox(), [APP])
    channels = [f"room-{i}" for i in range(1500)]
    await asyncio.gather(*(receiver.subscribe(APP, ch) for ch in channels))

    await server.stop_async()
    await asyncio.sleep(1.0)  # an outage long enough for the backoff to grow
    await server.start_async()
    resumed = await publish_until_received(publisher, inbox, "room-0", within=10)
    print(f"\ndelivery resumed {resumed:.3f} s after redis-server answered again (1.0 s outage)")
    assert resumed < 3.0

    await receiver.sync()
    inbox.received.clear()
    await asyncio.gather(*(publisher.publish(event(ch, "after")) for ch in channels))
    await publisher.publish(Envelope(Kind.TERMINATE_USER, APP, "", "", None, user_id="u"))
    # This checks that no topic was forgotten, not how fast 1,501 messages cross a busy 2-core machine.
    await eventually(
        lambda: len(inbox.received) == len(channels) + 1, within=15, what="every topic and control delivered"
    )


async def test_subscribe_during_an_outage_returns_at_once_and_applies_after_restart(
    server: RedisServer, started: list[Any]
) -> None:
    inbox, receiver, publisher = await broker_pair(server, started)
    await receiver.subscribe(APP, "old")
    await server.stop_async()
    await eventually(lambda: not receiver.healthy)
    began = time.monotonic()
    await receiver.subscribe(APP, "joined-while-down")
    assert time.monotonic() - began < 0.1
    receiver.unsubscribe(APP, "old")
    await server.start_async()
    await eventually(lambda: receiver.healthy and publisher.healthy, within=5)
    await publish_until_received(publisher, inbox, "joined-while-down", within=5)
    await publisher.publish(event("old", "unwanted"))
    await publisher.publish(event("joined-while-down", "marker"))
    await eventually(lambda: "marker" in [e.event for e in inbox.received])
    assert "unwanted" not in [e.event for e in inbox.received]


async def test_broker_started_while_redis_is_down_connects_once_it_is_up(
    server: RedisServer, started: list[Any]
) -> None:
    await server.stop_async()
    inbox = Inbox()
    broker = fast_broker(server.url, "a", max_backoff=0.3)
    started.append(broker)
    began = time.monotonic()
    await broker.start(inbox, [APP])
    assert time.monotonic() - began < TIMEOUT + 0.5
    assert not broker.healthy
    await broker.subscribe(APP, "early")
    await server.start_async()
    await eventually(lambda: broker.healthy, within=5)
    await broker.publish(event("early", "hello"))
    await eventually(lambda: inbox.events() == ["hello"])


# Broker: Redis hangs, or the subscription dies silently


async def test_publish_raises_within_the_timeout_when_redis_hangs(server: RedisServer, started: list[Any]) -> None:
    inbox, receiver, publisher = await broker_pair(server, started)
    await receiver.subscribe(APP, "news")
    server.pause()
    try:
        began = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            await publisher.publish(event("news", "stuck"))
        assert time.monotonic() - began < TIMEOUT + 0.5
        assert not publisher.healthy
    finally:
        server.resume()
    await publish_until_received(publisher, inbox, "news", within=5)
    await eventually(lambda: publisher.healthy and receiver.healthy, within=5)


class MutingProxy:
    """A TCP proxy to Redis that can make its current pub/sub connections go silent towards the client.

    Such a connection stays open and Redis still counts the subscription, but no message reaches the
    client: the failure the pub/sub probe exists to catch. Connections opened afterwards work.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._connections: list[dict[str, bool]] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def mute_pubsub(self) -> None:
        """Stop forwarding Redis's bytes on every pub/sub connection open now."""
        for connection in self._connections:
            connection["muted"] = connection["pubsub"]

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        redis_reader, redis_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [client_writer, redis_writer]
        state = {"pubsub": False, "muted": False}
        self._connections.append(state)

        async def upstream() -> None:
            while data := await client_reader.read(65536):
                if b"SUBSCRIBE" in data.upper():
                    state["pubsub"] = True
                redis_writer.write(data)

        async def downstream() -> None:
            while data := await redis_reader.read(65536):
                if not state["muted"]:
                    client_writer.write(data)

        with contextlib.suppress(OSError):
            await asyncio.gather(upstream(), downstream())
        client_writer.close()
        redis_writer.close()

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()


async def test_probe_reconnects_a_subscription_that_went_silent(server: RedisServer, started: list[Any]) -> None:
    proxy = MutingProxy(server.port)
    await proxy.start()
    try:
        metrics = Metrics()
        inbox = Inbox()
        receiver = fast_broker(f"redis://127.0.0.1:{proxy.port}/0", "receiver", metrics)
        publisher = fast_broker(server.url, "publisher")
        started += [receiver, publisher]
        await receiver.start(inbox, [APP])
        await publisher.start(Inbox(), [APP])
        await receiver.subscribe(APP, "news")
        proxy.mute_pubsub()
        began = time.monotonic()
        await eventually(
            lambda: metrics.registry.get_sample_value("hub_broker_reconnects_total") == 1, what="probe-forced reconnect"
        )
        recovered = await publish_until_received(publisher, inbox, "news", within=5)
        print(f"\nsilent subscription replaced {time.monotonic() - began:.3f} s after it went silent")
        assert recovered < 1.0
    finally:
        await proxy.close()


# State: Redis down or hanging


def state_calls(state: RedisClusterState) -> list[Callable[[], Awaitable[object]]]:
    """One call of every ClusterState method."""
    return [
        lambda: state.add_connection(APP, -1),
        lambda: state.remove_connection(APP),
        lambda: state.join_channel(APP, "c"),
        lambda: state.leave_channel(APP, "c"),
        lambda: state.channel_subscriptions(APP, "c"),
        lambda: state.channels(APP),
        lambda: state.join_presence(APP, "presence-c", "u", {}, 100),
        lambda: state.leave_presence(APP, "presence-c", "u"),
        lambda: state.presence_members(APP, "presence-c"),
        lambda: state.user_signed_in(APP, "u"),
        lambda: state.user_signed_out(APP, "u"),
        lambda: state.users_online(APP, ["u"]),
        lambda: state.cache_set(APP, "cache-c", "e", "d", 10),
        lambda: state.cache_get(APP, "cache-c"),
        lambda: state.heartbeat(),
        lambda: state.reap_dead_nodes(10.0),
        lambda: state.resync(NodeSnapshot()),
        lambda: state.withdraw(),
    ]


async def test_every_state_method_raises_state_unavailable_while_redis_is_down(
    server: RedisServer, started: list[Any]
) -> None:
    [state] = await started_states(server, started, "a")
    assert state.healthy
    await server.stop_async()
    for call in state_calls(state):
        began = time.monotonic()
        with pytest.raises(StateUnavailable):
            await call()
        assert time.monotonic() - began < TIMEOUT + 0.5
    assert not state.healthy


async def test_state_call_raises_within_the_timeout_when_redis_hangs(server: RedisServer, started: list[Any]) -> None:
    [state] = await started_states(server, started, "a")
    server.pause()
    try:
        began = time.monotonic()
        with pytest.raises(StateUnavailable):
            await state.join_channel(APP, "c")
        assert time.monotonic() - began < TIMEOUT + 0.5
    finally:
        server.resume()
    assert await state.channel_subscriptions(APP, "c") in (0, 1)  # works again; the join may or may not have landed
    assert state.healthy


async def test_after_redis_lost_its_data_heartbeat_asks_for_resync_which_restores_the_share(
    server: RedisServer, started: list[Any]
) -> None:
    a, b = await started_states(server, started, "a", "b")
    await a.join_channel(APP, "news")
    await b.join_presence(APP, "presence-room", "u1", {"name": "Ann"}, 100)
    await asyncio.to_thread(server.restart)  # nothing is persisted: every key is gone
    assert await a.heartbeat() is False
    assert await b.heartbeat() is False
    await a.resync(NodeSnapshot(channels={(APP, "news"): 1}))
    await b.resync(NodeSnapshot(presence={(APP, "presence-room"): {"u1": (1, {"name": "Ann"})}}))
    assert await a.channels(APP) == {"news": 1}
    assert await a.presence_members(APP, "presence-room") == {"u1": {"name": "Ann"}}
    assert await a.heartbeat() is True
    assert a.healthy and b.healthy


async def test_a_failed_state_write_asks_for_a_resync_until_one_begins(server: RedisServer, started: list[Any]) -> None:
    """On a cluster the heartbeat's shard may be fine while an app's shard failed: the flag says so."""
    (state,) = await started_states(server, started, "a")
    assert state.needs_resync is False
    await asyncio.to_thread(server.stop)
    with pytest.raises(StateUnavailable):
        await state.join_channel(APP, "news")
    assert state.needs_resync is True
    await asyncio.to_thread(server.start)
    await state.join_channel(APP, "news")
    assert state.needs_resync is True  # a later success does not say what became of the failed write
    await state.resync(NodeSnapshot(channels={(APP, "news"): 1}))
    assert state.needs_resync is False
    assert await state.channels(APP) == {"news": 1}


async def test_a_reaping_abandoned_midway_is_finished_by_a_later_reaper(
    server: RedisServer, started: list[Any]
) -> None:
    a, b = await started_states(server, started, "a", "b")
    await b.join_channel(APP, "only-b")
    await b.join_presence(APP, "presence-room", "u1", None, 100)
    # What a reaper that died right after claiming B leaves behind: B claimed long ago, share untouched.
    raw = aioredis.Redis.from_url(server.url)
    try:
        await raw.zrem(f"{{{PREFIX}:#nodes}}:alive", "b")
        await raw.zadd(f"{{{PREFIX}:#nodes}}:reaping", {"b": int(time.time() * 1000) - 120_000})
    finally:
        await raw.aclose()
    departures = await a.reap_dead_nodes(silence=10.0)
    assert departures.vacated == [(APP, "only-b")]
    assert departures.members_removed == [(APP, "presence-room", "u1")]
    assert await a.channels(APP) == {}
