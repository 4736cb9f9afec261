"""The node stats board in Redis: one hash, ``{<prefix>:nodestats}``, node id -> JSON post.

One key, so it lives in one slot on a Redis Cluster and needs no SCAN; a reader deletes posts of
nodes silent for long (a crashed node never withdraws its own).
"""

from __future__ import annotations

import json

from redis.exceptions import RedisError

from hub.state.base import StateUnavailable
from hub.state.node_stats import FORGET_AFTER_SECONDS, NodePost, NodeStatsBoard
from hub.state.redis_scripts import RedisClient


class RedisNodeStatsBoard(NodeStatsBoard):
    """NodeStatsBoard over a redis-py asyncio client (``Redis`` or ``RedisCluster``)."""

    def __init__(self, client: RedisClient, prefix: str) -> None:
        self._redis = client
        self._key = "{" + prefix + ":nodestats}"

    async def post(self, node_id: str, figures: NodePost, now: float) -> None:
        raw = json.dumps({**figures, "node_id": node_id, "posted_at": now})
        try:
            await self._redis.hset(self._key, node_id, raw)
        except (RedisError, OSError) as exc:
            raise StateUnavailable(str(exc)) from None

    async def read(self, now: float, max_age: float) -> list[NodePost]:
        try:
            raw = await self._redis.hgetall(self._key)
        except (RedisError, OSError) as exc:
            raise StateUnavailable(str(exc)) from None
        posts, forgotten = [], []
        for field, value in raw.items():
            try:
                post = json.loads(value)
                age = now - float(post["posted_at"])
            except (ValueError, KeyError, TypeError):
                forgotten.append(field)
                continue
            if age > max_age + FORGET_AFTER_SECONDS:
                forgotten.append(field)
            elif age <= max_age:
                posts.append(post)
        if forgotten:
            try:
                await self._redis.hdel(self._key, *forgotten)
            except (RedisError, OSError) as exc:
                raise StateUnavailable(str(exc)) from None
        return sorted(posts, key=lambda p: str(p["node_id"]))

    async def withdraw(self, node_id: str) -> None:
        try:
            await self._redis.hdel(self._key, node_id)
        except (RedisError, OSError) as exc:
            raise StateUnavailable(str(exc)) from None
