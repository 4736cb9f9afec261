"""Coordination over Redis: SET PX / NX, compare-and-delete and INCRBY with PEXPIRE."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from hub.state.base import StateUnavailable
from hub.state.coordination import Coordination

_TAKE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_COUNT = """
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
if total == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return total
"""


class RedisCoordination(Coordination):
    """Keys live under ``{prefix}:co:``; every failure is StateUnavailable."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = f"{prefix}:co:"
        self._take_if = client.register_script(_TAKE_IF)
        self._count = client.register_script(_COUNT)

    async def put(self, key: str, token: str, ttl: float) -> None:
        try:
            await self._redis.set(self._prefix + key, token, px=max(1, int(ttl * 1000)))
        except (RedisError, OSError) as exc:
            raise StateUnavailable(str(exc)) from None

    async def take(self, key: str, token: str | None = None) -> bool:
        try:
            if token is None:
                return bool(await self._redis.delete(self._prefix + key))
            return bool(await self._take_if(keys=[self._prefix + key], args=[token]))
        except (RedisError, OSError) as exc:
            raise StateUnavailable(str(exc)) from None

    async def claim(self, key: str, ttl: float) -> bool:
        try:
            return bool(await self._redis.set(self._prefix + key, "1", px=max(1, int(ttl * 1000)), nx=True))
        except (RedisError, OSError) as exc:
            raise StateUnavailable(str(exc)) from None

    async def count(self, key: str, amount: int, window: float) -> int:
        try:
            return int(await self._count(keys=[self._prefix + key], args=[amount, max(1, int(window * 1000))]))
        except (RedisError, OSError) as exc:
            raise StateUnavailable(str(exc)) from None
