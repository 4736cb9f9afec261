"""What the Redis ClusterState's key layout promises beyond the contract: one slot per app, epochs fence reapers."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from hub.state.base import Departures, NodeSnapshot
from hub.state.redis import RedisClusterState
from tests.contract.conftest import Implementation, StateCluster
from tests.support.redis_cluster import slot_of
from tests.support.redis_server import RedisServer

APP = "1"


async def test_every_key_of_an_apps_state_is_in_the_apps_slot(redis_server: RedisServer, prefix: str) -> None:
    made = StateCluster("redis", redis_server.url, prefix)
    try:
        a, b = await made.nodes("a", "b")
        for node in (a, b):
            await node.add_connection(APP, -1)
            await node.join_channel(APP, "news")
            await node.join_presence(APP, "presence-room", "u1", {"n": 1}, 100)
            await node.user_signed_in(APP, "alice")
        await a.cache_set(APP, "cache-x", "e", "d", 30)
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            keys = [key.decode() async for key in client.scan_iter(match=f"{{{prefix}*")]
        finally:
            await client.aclose()
    finally:
        await made.close()
    app_keys = [key for key in keys if key.startswith(f"{{{prefix}:{APP}}}")]
    assert len(app_keys) == 15  # 5 totals + 2 nodes x 5 share keys
    assert {slot_of(key) for key in app_keys} == {slot_of(f"{{{prefix}:{APP}}}")}
    liveness = [key for key in keys if key.startswith(f"{{{prefix}:#nodes}}")]
    assert {slot_of(key) for key in liveness} == {slot_of(f"{{{prefix}:#nodes}}")}
    assert set(keys) - set(app_keys) - set(liveness) == {f"{{{prefix}:{APP}:cache-x}}:cache"}


@pytest.mark.parametrize("store", ["redis", "cluster"], indirect=True)
async def test_a_reaper_that_claimed_a_node_before_it_resynced_leaves_the_rebuilt_share_alone(
    store: Implementation,
) -> None:
    made = StateCluster(store.kind, store.redis_url, store.prefix)
    try:
        a, b = await made.nodes("a", "b")
        assert isinstance(a, RedisClusterState)
        await b.join_channel(APP, "only-b")
        await b.join_presence(APP, "presence-room", "u1", None, 100)
        await asyncio.sleep(0.3)
        # A claims B as dead (as reap_dead_nodes does first), then B comes back and resyncs before A drains.
        keys = [a._alive_key, a._reaping_key, a._epochs_key]
        claimed = [v.decode() for v in await a._claim_dead(keys, [200, "a", 60_000])]
        assert claimed[0] == "b"
        await b.resync(
            NodeSnapshot(channels={(APP, "only-b"): 1}, presence={(APP, "presence-room"): {"u1": (1, None)}})
        )
        departures = Departures()
        assert await a._drain("b", int(claimed[1]), set(), departures)
        assert departures == Departures()
        assert await a.channels(APP) == {"only-b": 1}
        assert await a.presence_members(APP, "presence-room") == {"u1": None}
        assert await b.heartbeat() is True
        assert await b.leave_channel(APP, "only-b") == 0  # B's share is still exact
    finally:
        await made.close()


@pytest.mark.parametrize("store", ["redis", "cluster"], indirect=True)
async def test_a_node_that_dies_midway_through_its_resync_is_reaped_whole(store: Implementation) -> None:
    made = StateCluster(store.kind, store.redis_url, store.prefix)
    try:
        a, b = await made.nodes("a", "b")
        assert isinstance(a, RedisClusterState) and isinstance(b, RedisClusterState)
        await b.join_channel(APP, "old-app-1")
        await b.join_channel("2", "old-app-2")
        # B's resync records its new epoch and rewrites app 1, then B dies before it reaches app 2.
        keys = [b._alive_key, b._reaping_key, b._epochs_key, b._apps_key("b")]
        epoch = int((await b._resync_begin(keys, ["b", APP]))[0])
        b._epoch = epoch
        await b._resync_one(APP, NodeSnapshot(channels={(APP, "new"): 2}))
        client = store.command_client()
        try:
            await client.zadd(a._alive_key, {"b": int(time.time() * 1000) - 60_000})
        finally:
            await client.aclose()
        departures = await a.reap_dead_nodes(silence=10.0)
        assert set(departures.vacated) == {(APP, "new"), ("2", "old-app-2")}
        assert await a.channels(APP) == {}
        assert await a.channels("2") == {}
    finally:
        await made.close()
