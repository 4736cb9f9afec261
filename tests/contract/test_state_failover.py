"""The Redis ClusterState through a primary's kill -9, on Redis Cluster and under Sentinel.

While no primary answers, every state call raises StateUnavailable (never anything else, so callers keep
their own record); once a replica took over, calls work again and the node's resync makes the counts
exact, whatever the asynchronous replication lost. Each test starts its own Redis: it kills a node.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from hub.state.base import NodeSnapshot, StateUnavailable
from hub.state.redis import RedisClusterState
from tests.support.redis_cluster import RedisCluster, slot_of
from tests.support.redis_sentinel import RedisSentinel

pytestmark = pytest.mark.cluster

APP = "1"
PREFIX = "fo"
CHANNELS = [f"room-{i}" for i in range(20)]


async def churn_through_outage(url: str, kill: Callable[[], object], wait: Callable[[], object]) -> None:
    """Join and leave while ``kill()`` takes the app's primary down and ``wait()`` sees a replica take over."""
    a = RedisClusterState(url, PREFIX, "a", timeout=1.0)
    b = RedisClusterState(url, PREFIX, "b", timeout=1.0)
    await a.start()
    await b.start()
    try:
        for channel in CHANNELS:
            await a.join_channel(APP, channel)
        await b.join_presence(APP, "presence-room", "u1", {"n": 1}, 100)
        await asyncio.to_thread(kill)
        unavailable = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            results = await asyncio.gather(
                *(a.join_channel(APP, "churn") for _ in range(10)),
                *(a.leave_channel(APP, "churn") for _ in range(10)),
                return_exceptions=True,
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            assert all(isinstance(e, StateUnavailable) for e in errors), errors
            unavailable += len(errors)
            if not errors and unavailable:
                break
            await asyncio.sleep(0.05)
        assert unavailable, "the outage was never seen"
        await asyncio.to_thread(wait)
        # What maintenance does after an outage: rewrite each node's share from its own record.
        await a.resync(NodeSnapshot(channels={(APP, channel): 1 for channel in CHANNELS}))
        await b.resync(NodeSnapshot(presence={(APP, "presence-room"): {"u1": (1, {"n": 1})}}))
        assert await b.channels(APP) == {channel: 1 for channel in CHANNELS}
        assert await a.presence_members(APP, "presence-room") == {"u1": {"n": 1}}
        assert await a.heartbeat() is True
        for channel in CHANNELS:
            assert await b.leave_channel(APP, channel) == 1  # b holds none of them
            assert await a.leave_channel(APP, channel) == 0
        assert await b.leave_presence(APP, "presence-room", "u1") is True
    finally:
        await a.close()
        await b.close()


async def test_state_survives_the_kill_of_the_apps_primary_on_a_redis_cluster(own_cluster: RedisCluster) -> None:
    owner = own_cluster.primary_for_slot(slot_of(f"{{{PREFIX}:{APP}}}"))
    await churn_through_outage(
        own_cluster.url, lambda: own_cluster.kill(owner), lambda: own_cluster.wait_for_failover(owner)
    )


async def test_state_survives_the_kill_of_the_primary_under_sentinel(own_sentinel: RedisSentinel) -> None:
    await churn_through_outage(own_sentinel.url, own_sentinel.kill_primary, own_sentinel.wait_for_failover)
