"""A hub cluster rides out Redis failures: a primary killed (Redis Cluster, Sentinel) and a slot moved.

Each test starts its own deployment (2 `hub ws` + 1 `hub ingest` over real redis-server processes) because
it breaks Redis. pusher-js clients on both ws nodes stay connected throughout; a backend publishes
numbered events through the signed HTTP API at a steady pace. The promise checked: every publish answered
200 reaches every client, once and in order; the others were answered 503. Presence and occupancy are
exact afterwards (no ghost member, no double count). Figures are printed (run with ``-s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from hub.broker.replay import topic_name
from tests.support.auth_server import AuthServer
from tests.support.js_clients import JsClients
from tests.support.names import unique
from tests.support.ports import LOOPBACK
from tests.support.redis_cluster import RedisCluster, slot_of
from tests.support.redis_sentinel import RedisSentinel
from tests.support.request_signing import signed_params
from tests.support.topology import APP_ID, APP_KEY, Topology, start_cluster

pytestmark = pytest.mark.cluster

CLIENTS = ("a0", "b0", "a1", "b1")  # the digit is the ws node


@dataclass
class Publisher:
    """POSTs events 0, 1, 2, ... to one channel every ``interval`` seconds and remembers each answer."""

    topology: Topology
    channel: str
    interval: float = 0.02
    ok: list[int] = field(default_factory=list)
    ok_at: dict[int, float] = field(default_factory=dict)
    refused: dict[int, int] = field(default_factory=dict)  # seq -> status
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        path = f"/apps/{APP_ID}/events"
        async with aiohttp.ClientSession() as session:
            seq = 0
            while True:
                body = json.dumps({"name": "seq", "channel": self.channel, "data": str(seq)}).encode()
                params = signed_params("POST", path, body)
                try:
                    async with session.post(
                        f"http://{LOOPBACK}:{self.topology.api_port}{path}",
                        params=params,
                        data=body,
                        headers={"Content-Type": "application/json"},
                        timeout=aiohttp.ClientTimeout(total=10),
                    ) as response:
                        if response.status == 200:
                            self.ok.append(seq)
                            self.ok_at[seq] = time.monotonic()
                        else:
                            self.refused[seq] = response.status
                except (aiohttp.ClientError, TimeoutError):
                    self.refused[seq] = 0
                seq += 1
                await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def received(js: JsClients, cid: str, channel: str) -> list[int]:
    return [int(r.data) for r in js.events(cid, source="channel", channel=channel, event="seq")]


async def wait_until(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {within} s"
        await asyncio.sleep(0.05)


async def subscribe_everyone(js: JsClients, topology: Topology, auth: AuthServer, *channels: str) -> None:
    for cid in CLIENTS:
        await js.connect(
            cid,
            port=topology.ws_port(int(cid[-1])),
            key=APP_KEY,
            auth_url=auth.channel_auth_url,
            auth_params={"user_id": f"user-{cid}"},
        )
        for channel in channels:
            await js.subscribe(cid, channel)


async def check_delivery_through(
    js: JsClients, publisher: Publisher, break_redis: Callable[[], Any], what: str
) -> tuple[float, int]:
    """Run ``break_redis`` (blocking, in a thread) while publishing; check the promise; (resume s, refused)."""
    publisher.start()
    await asyncio.sleep(0.6)
    broken_at = time.monotonic()
    await asyncio.to_thread(break_redis)
    resumed: float | None = None
    deadline = time.monotonic() + 25
    while resumed is None and time.monotonic() < deadline:
        after = [s for s in publisher.ok if publisher.ok_at[s] > broken_at]
        if after and all(after[0] in received(js, cid, publisher.channel) for cid in CLIENTS):
            resumed = time.monotonic() - broken_at
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)
    await publisher.stop()
    assert resumed is not None, f"{what}: delivery never resumed"
    for cid in CLIENTS:
        await wait_until(
            lambda cid=cid: set(publisher.ok) <= set(received(js, cid, publisher.channel)),  # type: ignore[misc]
            within=8,
            what=f"{cid} receiving every event answered 200",
        )
        got = received(js, cid, publisher.channel)
        assert got == sorted(set(got)), f"{cid}: duplicates or reordering"
    assert all(status == 503 for status in publisher.refused.values()), publisher.refused
    print(
        f"\n{what}: delivery resumed {resumed:.2f} s after; {len(publisher.ok)} answered 200 (all delivered to "
        f"all {len(CLIENTS)} clients), {len(publisher.refused)} answered 503"
    )
    return resumed, len(publisher.refused)


async def check_presence_and_occupancy_exact(topology: Topology, presence: str, public: str) -> None:
    """After the storm: /users lists exactly the connected users, counts are exact on the HTTP API."""
    sdk = topology.sdk()
    expected_users = sorted(f"user-{cid}" for cid in CLIENTS)

    async def users() -> list[str]:
        answer = await asyncio.to_thread(sdk.users_info, presence)
        return sorted(u["id"] for u in answer["users"])

    async def count(channel: str) -> int:
        info = await asyncio.to_thread(sdk.channel_info, channel, ["subscription_count"])
        return int(info.get("subscription_count", 0))

    # A ws node rewrites its share of the state after a store failure (within a third of its node timeout).
    deadline = time.monotonic() + 15
    while True:
        try:
            state = (await users(), await count(presence), await count(public))
        except Exception:  # the API may still answer 503 right after the failure
            state = None
        if state == (expected_users, 4, 4):
            return
        assert time.monotonic() < deadline, f"presence/occupancy not exact: {state}"
        await asyncio.sleep(0.25)


@pytest.fixture
def hubs_on_cluster(own_cluster: RedisCluster) -> Iterator[Topology]:
    topology = start_cluster(own_cluster)
    topology.name = "rediscluster"
    try:
        yield topology
    finally:
        for process in reversed(topology.processes):
            process.close()


@pytest.fixture
def hubs_on_sentinel(own_sentinel: RedisSentinel) -> Iterator[Topology]:
    topology = start_cluster(own_sentinel)
    try:
        yield topology
    finally:
        for process in reversed(topology.processes):
            process.close()


def channel_in(slots: set[int], stem: str) -> str:
    for i in range(100_000):
        name = f"{stem}-{i}"
        if slot_of(topic_name("hub", APP_ID, name)) in slots:
            return name
    raise AssertionError("no channel name hashes into those slots")


async def test_cluster_primary_kill_loses_no_event_answered_200_and_state_stays_exact(
    own_cluster: RedisCluster, hubs_on_cluster: Topology, js: JsClients, auth: AuthServer
) -> None:
    # The victim serves both the published channel and the app's state slot, the harder case.
    victim = own_cluster.primary_for_slot(slot_of(f"{{hub:{APP_ID}}}"))
    hot = channel_in(set(own_cluster.slots_of(victim)), "hot")
    presence = unique("presence-room")
    await subscribe_everyone(js, hubs_on_cluster, auth, hot, presence)

    def kill() -> None:
        own_cluster.kill(victim)
        own_cluster.wait_for_failover(victim)

    await check_delivery_through(js, Publisher(hubs_on_cluster, hot), kill, "Redis Cluster: kill -9 of the primary")
    await check_presence_and_occupancy_exact(hubs_on_cluster, presence, hot)
    for cid in CLIENTS:
        assert (await js.state(cid)).state == "connected"


async def test_sentinel_primary_kill_loses_no_event_answered_200_and_state_stays_exact(
    own_sentinel: RedisSentinel, hubs_on_sentinel: Topology, js: JsClients, auth: AuthServer
) -> None:
    channel = unique("hot")
    presence = unique("presence-room")
    await subscribe_everyone(js, hubs_on_sentinel, auth, channel, presence)

    def kill() -> None:
        own_sentinel.kill_primary()
        own_sentinel.wait_for_failover()

    await check_delivery_through(js, Publisher(hubs_on_sentinel, channel), kill, "Sentinel: kill -9 of the primary")
    await check_presence_and_occupancy_exact(hubs_on_sentinel, presence, channel)
    for cid in CLIENTS:
        assert (await js.state(cid)).state == "connected"


async def test_cluster_slot_migration_of_a_subscribed_channel_loses_nothing(
    own_cluster: RedisCluster, hubs_on_cluster: Topology, js: JsClients, auth: AuthServer
) -> None:
    source, target = own_cluster.primaries()[0], own_cluster.primaries()[1]
    channel = channel_in(set(own_cluster.slots_of(source)), "moving")
    slot = slot_of(topic_name("hub", APP_ID, channel))
    presence = unique("presence-room")
    await subscribe_everyone(js, hubs_on_cluster, auth, channel, presence)

    def migrate() -> None:
        own_cluster.migrate_slot(slot, target, pause=lambda step: time.sleep(0.3))

    _, refused = await check_delivery_through(
        js, Publisher(hubs_on_cluster, channel), migrate, "Redis Cluster: slot migration"
    )
    assert own_cluster.primary_for_slot(slot) == target
    assert refused == 0
    await check_presence_and_occupancy_exact(hubs_on_cluster, presence, channel)
