"""Writes that overlap a resync, on Redis: the share ends as if each had happened wholly before or after it.

A resync's snapshot counts every write the node began before it (ClusterState.resync). Redis may apply
such a write after the rewrite (a timed-out command delivered once a partition heals, another pipeline
overtaking it): its older epoch makes the script drop it. Writes begun during the rewrite wait for it.
"""

from __future__ import annotations

import asyncio

import pytest

from hub.state.base import NodeSnapshot
from hub.state.redis import RedisClusterState
from tests.contract.conftest import Implementation, StateCluster

APP = "1"

pytestmark = pytest.mark.parametrize("store", ["redis", "cluster"], indirect=True)


async def _node(made: StateCluster) -> RedisClusterState:
    (node,) = await made.nodes("a")
    assert isinstance(node, RedisClusterState)
    return node


async def test_a_join_that_reaches_redis_after_the_resync_that_counted_it_counts_once(store: Implementation) -> None:
    made = StateCluster(store.kind, store.redis_url, store.prefix)
    try:
        node = await _node(made)
        await node.join_channel(APP, "news")
        issued_in = node._epoch
        # The node's record has a second socket whose join was issued but is still on its way to Redis.
        await node.resync(NodeSnapshot(channels={(APP, "news"): 2}))
        k = node._app(APP)
        late = await node._join_channel([k.channels, k.share_channels, k.epoch], ["news", issued_in])
        assert late == 2
        assert await node.channel_subscriptions(APP, "news") == 2
    finally:
        await made.close()


async def test_a_leave_that_reaches_redis_after_the_resync_is_not_subtracted_twice(store: Implementation) -> None:
    made = StateCluster(store.kind, store.redis_url, store.prefix)
    try:
        node = await _node(made)
        for _ in range(3):
            await node.join_channel(APP, "news")
        issued_in = node._epoch
        # One of the three sockets left (its leave still on its way); the snapshot no longer counts it.
        await node.resync(NodeSnapshot(channels={(APP, "news"): 2}))
        k = node._app(APP)
        assert await node._leave_channel([k.channels, k.share_channels, k.epoch], ["news", issued_in]) == 2
        assert await node.channel_subscriptions(APP, "news") == 2
        assert await node.leave_channel(APP, "news") == 1  # today's writes still apply
    finally:
        await made.close()


async def test_writes_begun_during_a_resync_wait_for_it_and_count_on_top(store: Implementation) -> None:
    made = StateCluster(store.kind, store.redis_url, store.prefix)
    try:
        node = await _node(made)
        await node.join_channel(APP, "news")
        resync = asyncio.create_task(node.resync(NodeSnapshot(channels={(APP, "news"): 1})))
        await asyncio.sleep(0)  # the resync began: its snapshot is taken
        joins = [asyncio.create_task(node.join_channel(APP, "news")) for _ in range(5)]
        await resync
        assert sorted(await asyncio.gather(*joins)) == [2, 3, 4, 5, 6]
        assert await node.channel_subscriptions(APP, "news") == 6
    finally:
        await made.close()


async def test_an_admission_refused_while_a_resync_counted_it_is_taken_back_out(store: Implementation) -> None:
    made = StateCluster(store.kind, store.redis_url, store.prefix)
    try:
        other, node = await made.nodes("other", "a")
        assert isinstance(node, RedisClusterState)
        assert await other.add_connection(APP, 1) is True  # the app is at its quota of 1
        admission = asyncio.create_task(node.add_connection(APP, 1))
        await asyncio.sleep(0)  # issued
        # The ws node's snapshot counts a pending admission as admitted.
        resync = asyncio.create_task(node.resync(NodeSnapshot(connections={APP: 1})))
        assert await admission is False
        await resync
        assert await node.add_connection(APP, 2) is True  # 1 counted, so one more fits under 2...
        assert await node.add_connection(APP, 2) is False  # ...and no other
    finally:
        await made.close()


async def test_a_presence_join_refused_while_a_resync_counted_it_is_taken_back_out(store: Implementation) -> None:
    made = StateCluster(store.kind, store.redis_url, store.prefix)
    try:
        other, node = await made.nodes("other", "a")
        assert isinstance(node, RedisClusterState)
        assert (await other.join_presence(APP, "presence-room", "ann", None, 1)).accepted  # full at 1 member
        joining = asyncio.create_task(node.join_presence(APP, "presence-room", "bob", None, 1))
        await asyncio.sleep(0)
        resync = asyncio.create_task(node.resync(NodeSnapshot(presence={(APP, "presence-room"): {"bob": (1, None)}})))
        assert (await joining).accepted is False
        await resync
        assert await node.presence_members(APP, "presence-room") == {"ann": None}
    finally:
        await made.close()
