"""The Redis broker on Redis Cluster and Sentinel: sharded pub/sub, failovers and slot moves lose nothing accepted.

Each test runs a publisher and a subscriber broker (two "nodes") against real redis-server processes and
checks the delivery promise: every publish the broker accepted reaches the subscriber that stayed
subscribed, once, in publish order, whatever happened to Redis meanwhile. Figures (resume times, refused
publishes) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field

import pytest
import redis

from hub.broker.base import BrokerUnavailable
from hub.broker.envelope import Envelope, Kind
from hub.broker.redis import RedisBroker
from hub.broker.replay import topic_name
from hub.metrics import Metrics
from tests.contract.conftest import eventually
from tests.support.redis_cluster import RedisCluster, slot_of
from tests.support.redis_sentinel import RedisSentinel
from tests.support.requirements import require_executable

pytestmark = pytest.mark.cluster

APP = "1"


def event(channel: str, seq: int) -> Envelope:
    return Envelope(Kind.EVENT, APP, channel, "seq", str(seq), origin_node="publisher")


@dataclass
class Inbox:
    """Sequence numbers received per channel, in arrival order."""

    seqs: dict[str, list[int]] = field(default_factory=dict)

    def __call__(self, envelope: Envelope) -> None:
        self.seqs.setdefault(envelope.channel, []).append(int(envelope.data))


@dataclass
class Flow:
    """Publishes 0, 1, 2, ... on a channel at a steady pace and remembers which publishes were accepted."""

    broker: RedisBroker
    channel: str
    interval: float = 0.01
    accepted: list[int] = field(default_factory=list)
    accepted_at: dict[int, float] = field(default_factory=dict)
    refused: list[int] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        seq = 0
        while True:
            try:
                await self.broker.publish(event(self.channel, seq))
                self.accepted.append(seq)
                self.accepted_at[seq] = time.monotonic()
            except BrokerUnavailable:
                self.refused.append(seq)
            seq += 1
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def assert_all_accepted_delivered_once_in_order(flow: Flow, inbox: Inbox) -> None:
    got = inbox.seqs.get(flow.channel, [])
    assert got == sorted(set(got)), f"{flow.channel}: duplicates or reordering in {got}"
    missing = sorted(set(flow.accepted) - set(got))
    assert not missing, f"{flow.channel}: accepted but never delivered: {missing}"


def broker(url: str, prefix: str, node_id: str, metrics: Metrics | None = None) -> RedisBroker:
    return RedisBroker(url, prefix, node_id, metrics, timeout=1.0, unsubscribe_delay=0.1, probe_interval=0.5)


def channel_on(prefix: str, owner_slots: set[int], stem: str) -> str:
    """A channel name whose topic hashes into ``owner_slots``."""
    for i in range(100_000):
        name = f"{stem}-{i}"
        if slot_of(topic_name(prefix, APP, name)) in owner_slots:
            return name
    raise AssertionError("no channel name found for those slots")


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


async def test_cluster_channels_of_one_app_spread_over_every_primary(own_cluster: RedisCluster, prefix: str) -> None:
    inbox = Inbox()
    publisher, subscriber = broker(own_cluster.url, prefix, "p"), broker(own_cluster.url, prefix, "s")
    await publisher.start(lambda e: None, [APP])
    await subscriber.start(inbox, [APP])
    try:
        channels = [f"room-{i}" for i in range(60)]
        await asyncio.gather(*(subscriber.subscribe(APP, c) for c in channels))
        for i, channel in enumerate(channels):
            await publisher.publish(event(channel, i))
        await eventually(lambda: sum(len(v) for v in inbox.seqs.values()) == 60, what="60 deliveries")
        assert {c: inbox.seqs[c] for c in channels} == {c: [i] for i, c in enumerate(channels)}
        # One subscriber connection per primary, each holding only the channels of its own slots.
        assert len(subscriber.primaries) == 3
        per_primary = []
        for primary in own_cluster.primaries():
            names = primary.command("PUBSUB", "SHARDCHANNELS", f"{{{prefix}:{APP}:room-*")
            per_primary.append(len(names))
            assert all(own_cluster.primary_for_slot(slot_of(n)) == primary for n in names)
        assert sum(per_primary) == 60 and min(per_primary) > 5, per_primary
    finally:
        await publisher.close()
        await subscriber.close()


async def _failover_run(
    publisher: RedisBroker, subscriber: RedisBroker, inbox: Inbox, hot: str, calm: str, kill: object, what: str
) -> None:
    """Publish on two channels, run ``kill`` (which returns once the failover is done), check the promise."""
    await subscriber.subscribe(APP, hot)
    await subscriber.subscribe(APP, calm)
    flows = [Flow(publisher, hot), Flow(publisher, calm)]
    for flow in flows:
        flow.start()
    await asyncio.sleep(0.5)
    killed_at = time.monotonic()
    assert callable(kill)
    await asyncio.to_thread(kill)
    # Delivery has resumed once an event accepted after the kill arrived.
    resumed_at: float | None = None
    deadline = time.monotonic() + 20
    while resumed_at is None and time.monotonic() < deadline:
        after = [s for s in flows[0].accepted if flows[0].accepted_at[s] > killed_at]
        if after and after[0] in inbox.seqs.get(hot, []):
            resumed_at = time.monotonic()
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)
    for flow in flows:
        await flow.stop()
    for flow in flows:
        await eventually(
            lambda flow=flow: set(flow.accepted) <= set(inbox.seqs.get(flow.channel, [])),  # type: ignore[misc]
            within=5,
            what=f"every accepted event of {flow.channel} delivered",
        )
        assert_all_accepted_delivered_once_in_order(flow, inbox)
    assert resumed_at is not None, "delivery did not resume"
    print(
        f"\n{what}: delivery resumed {resumed_at - killed_at:.2f} s after kill -9; hot channel: "
        f"{len(flows[0].accepted)} accepted, {len(flows[0].refused)} refused (503), 0 accepted lost; "
        f"other shard's channel: {len(flows[1].refused)} refused"
    )


async def test_cluster_kill_of_a_channels_primary_loses_no_accepted_publish(
    own_cluster: RedisCluster, prefix: str
) -> None:
    victim = own_cluster.primaries()[0]
    hot = channel_on(prefix, set(own_cluster.slots_of(victim)), "hot")
    other = own_cluster.primaries()[1]
    calm = channel_on(prefix, set(own_cluster.slots_of(other)), "calm")
    metrics = Metrics()
    inbox = Inbox()
    publisher, subscriber = broker(own_cluster.url, prefix, "p"), broker(own_cluster.url, prefix, "s", metrics)
    await publisher.start(lambda e: None, [APP])
    await subscriber.start(inbox, [APP])
    try:

        def kill() -> None:
            own_cluster.kill(victim)
            own_cluster.wait_for_failover(victim)

        await _failover_run(publisher, subscriber, inbox, hot, calm, kill, "Redis Cluster primary kill")
        assert publisher.healthy and subscriber.healthy
    finally:
        await publisher.close()
        await subscriber.close()


async def test_sentinel_failover_loses_no_accepted_publish(own_sentinel: RedisSentinel, prefix: str) -> None:
    inbox = Inbox()
    publisher, subscriber = broker(own_sentinel.url, prefix, "p"), broker(own_sentinel.url, prefix, "s")
    await publisher.start(lambda e: None, [APP])
    await subscriber.start(inbox, [APP])
    try:
        old = own_sentinel.primary_port()

        def kill() -> None:
            own_sentinel.kill_primary()
            own_sentinel.wait_for_failover()

        await _failover_run(publisher, subscriber, inbox, "hot", "calm", kill, "Sentinel primary kill")
        assert own_sentinel.primary_port() != old
        await eventually(lambda: publisher.healthy and subscriber.healthy, within=5, what="brokers healthy")
        assert subscriber.primaries == [f"127.0.0.1:{own_sentinel.primary_port()}"]
    finally:
        await publisher.close()
        await subscriber.close()


async def test_cluster_slot_migration_keeps_subscribers_receiving(own_cluster: RedisCluster, prefix: str) -> None:
    source, target = own_cluster.primaries()[0], own_cluster.primaries()[1]
    channel = channel_on(prefix, set(own_cluster.slots_of(source)), "moving")
    slot = slot_of(topic_name(prefix, APP, channel))
    inbox = Inbox()
    publisher, subscriber = broker(own_cluster.url, prefix, "p"), broker(own_cluster.url, prefix, "s")
    await publisher.start(lambda e: None, [APP])
    await subscriber.start(inbox, [APP])
    try:
        await subscriber.subscribe(APP, channel)
        flow = Flow(publisher, channel)
        flow.start()
        await asyncio.sleep(0.3)

        async def pause(step: str) -> None:
            await asyncio.sleep(0.3)  # publishes keep flowing while the slot is MIGRATING / keys moved

        await own_cluster.migrate_slot_async(slot, target, pause=pause)
        await asyncio.sleep(1.0)
        await flow.stop()
        assert own_cluster.primary_for_slot(slot) == target
        await eventually(
            lambda: set(flow.accepted) <= set(inbox.seqs.get(channel, [])), within=5, what="all accepted delivered"
        )
        assert_all_accepted_delivered_once_in_order(flow, inbox)
        assert len(flow.accepted) > 50  # publishes kept flowing through the migration
        print(f"\nslot migration: {len(flow.accepted)} accepted, {len(flow.refused)} refused, 0 lost")
        # The subscription followed the slot to its new owner.
        await eventually(
            lambda: bool(target.command("PUBSUB", "SHARDCHANNELS", topic_name(prefix, APP, channel))),
            within=5,
            what="subscription at the new owner",
        )
    finally:
        await publisher.close()
        await subscriber.close()


async def test_single_redis_restart_delivers_what_was_accepted_before_resubscribing(prefix: str) -> None:
    """The wave-1 gap: a publish accepted in the ~100 ms before ws nodes resubscribed reached nobody."""
    from tests.support.redis_server import RedisServer

    require_executable("redis-server")
    with RedisServer() as server:
        inbox = Inbox()
        publisher, subscriber = broker(server.url, prefix, "p"), broker(server.url, prefix, "s")
        await publisher.start(lambda e: None, [APP])
        await subscriber.start(inbox, [APP])
        try:
            await subscriber.subscribe(APP, "room")
            await publisher.publish(event("room", 0))
            await eventually(lambda: inbox.seqs.get("room") == [0], what="first event")
            # Cut only the subscriber's pub/sub connection: Redis keeps accepting publishes meanwhile.
            client = redis.Redis(port=server.port)
            try:
                for entry in client.client_list():
                    if entry["name"] == "hub-sub-s":
                        client.client_kill_filter(_id=entry["id"])
            finally:
                client.close()
            for seq in range(1, 21):
                await publisher.publish(event("room", seq))
            await eventually(lambda: inbox.seqs.get("room") == list(range(21)), what="all 21 events, in order")
        finally:
            await publisher.close()
            await subscriber.close()


async def test_sentinel_switchover_moves_both_connections_to_the_new_primary(
    own_sentinel: RedisSentinel, prefix: str
) -> None:
    """A planned failover demotes the primary without killing it: +switch-master moves the broker at once."""
    inbox = Inbox()
    publisher, subscriber = broker(own_sentinel.url, prefix, "p"), broker(own_sentinel.url, prefix, "s")
    await publisher.start(lambda e: None, [APP])
    await subscriber.start(inbox, [APP])
    try:
        await subscriber.subscribe(APP, "planned")
        flow = Flow(publisher, "planned")
        flow.start()
        await asyncio.sleep(0.3)
        old = own_sentinel.primary_port()
        own_sentinel.sentinels[0].command("SENTINEL", "FAILOVER", "hubmaster")
        await eventually(lambda: own_sentinel.primary_port() != old, within=15, what="sentinels agree on a new primary")
        new = own_sentinel.primary_port()
        assert new != old
        await eventually(
            lambda: subscriber.primaries == [f"127.0.0.1:{new}"] and publisher.primaries == [f"127.0.0.1:{new}"],
            within=5,
            what="both brokers on the new primary",
        )
        await asyncio.sleep(0.5)
        await flow.stop()
        await eventually(
            lambda: set(flow.accepted) <= set(inbox.seqs.get("planned", [])), within=5, what="all accepted delivered"
        )
        assert_all_accepted_delivered_once_in_order(flow, inbox)
        print(f"\nsentinel switchover: {len(flow.accepted)} accepted, {len(flow.refused)} refused, 0 lost")
    finally:
        await publisher.close()
        await subscriber.close()
