"""Coordination over Redis: SET PX / NX, compare-and-delete and INCRBY with PEXPIRE.

Every operation touches one key, ``<prefix>:co:<key>``, so it is atomic on its own and any slot will do:
on Redis Cluster the keys spread over the shards by their whole name (callers' keys carry no hash tag).
"""

from __future__ import annotations

from redis.exceptions import RedisError

from hub.state.base import StateUnavailable
from hub.state.coordination import Coordination
from hub.state.redis_scripts import RedisClient, ScriptRunner

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

    def __init__(self, client: RedisClient, prefix: str) -> None:
        self._redis = client
        self._prefix = f"{prefix}:co:"
        self._scripts = scripts = ScriptRunner(client)
        self._take_if = scripts.script(_TAKE_IF)
        self._count = scripts.script(_COUNT)

    async def put(self, key: str, token: str, ttl: float) -> None:
        try:
            await self._scripts.ready()
            await self._redis.set(self._prefix + key, token, px=max(1, int(ttl * 1000)))
        except (RedisError, OSError) as exc:
            raise StateUnavailable(str(exc)) from None

    async def take(self, key: str, token: str | None = None) -> bool:
        try:
            await self._scripts.ready()
            if token is None:
                return bool(await self._redis.delete(self._prefix + key))
            return bool(await self._take_if([self._prefix + key], [token]))
        except (RedisError, OSError) as exc:
            raise StateUnavailable(str(exc)) from None

    async def claim(self, key: str, ttl: float) -> bool:
        try:
            await self._scripts.ready()
            return bool(await self._redis.set(self._prefix + key, "1", px=max(1, int(ttl * 1000)), nx=True))
        except (RedisError, OSError) as exc:
            raise StateUnavailable(str(exc)) from None

    async def count(self, key: str, amount: int, window: float) -> int:
        try:
            return int(await self._count([self._prefix + key], [amount, max(1, int(window * 1000))]))
        except (RedisError, OSError) as exc:
            raise StateUnavailable(str(exc)) from None
