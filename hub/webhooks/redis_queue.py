"""The webhook queue in Redis, so queued webhooks survive the restart of the node that queued them.

``{p}:webhooks:due`` is a sorted set of job ids scored by when they are due; ``{p}:webhooks:jobs``
maps id to the packed job; ``{p}:webhooks:created`` scores ids by creation time for the age metric;
``{p}:webhooks:urls`` maps id to its URL and ``{p}:webhooks:leased`` holds the ids being delivered.
``{p}:webhooks:held`` holds the ids of held jobs not leased yet (score 0, so ``cancel`` finds a hold's
ids by their prefix with ZRANGEBYLEX); leasing a job takes it out.
Leasing moves a due job's score into the future in the same script that reads it, so two workers
never take the same job, and a worker that dies only delays it by the lease.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from hub.webhooks.queue import HOLD_SEPARATOR, QueueStats, WebhookJob, WebhookQueue

_LEASE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local job = redis.call('HGET', KEYS[2], id)
  if job then
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    redis.call('SADD', KEYS[3], id)
    redis.call('ZREM', KEYS[4], id)
    table.insert(out, job)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""
_EXPEDITE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf')
local n = 0
for _, id in ipairs(ids) do
  if redis.call('SISMEMBER', KEYS[3], id) == 0 and redis.call('HGET', KEYS[2], id) == ARGV[1] then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    n = n + 1
  end
end
return n
"""

_CANCEL = """
local ids = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2])
local n = 0
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  if redis.call('SISMEMBER', KEYS[6], id) == 0 and redis.call('HDEL', KEYS[3], id) == 1 then
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[4], id)
    redis.call('HDEL', KEYS[5], id)
    n = n + 1
  end
end
return n
"""


class WebhookQueueUnavailable(Exception):
    """Redis did not answer; the job was not queued."""


class RedisWebhookQueue(WebhookQueue):
    """WebhookQueue over a redis-py asyncio client."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._redis = client
        self._due = f"{prefix}:webhooks:due"
        self._jobs = f"{prefix}:webhooks:jobs"
        self._created = f"{prefix}:webhooks:created"
        self._urls = f"{prefix}:webhooks:urls"
        self._leased = f"{prefix}:webhooks:leased"
        self._held = f"{prefix}:webhooks:held"
        self._lease = client.register_script(_LEASE)
        self._expedite = client.register_script(_EXPEDITE)
        self._cancel = client.register_script(_CANCEL)

    async def _run(self, pipe: Any) -> None:
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            raise WebhookQueueUnavailable(str(exc)) from None

    async def push(self, job: WebhookJob, due: float) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._jobs, job.id, job.pack())
        pipe.hset(self._urls, job.id, job.url)
        pipe.zadd(self._due, {job.id: due})
        pipe.zadd(self._created, {job.id: job.created_at})
        if job.hold is not None:
            pipe.zadd(self._held, {job.id: 0})
        await self._run(pipe)

    async def lease(self, now: float, limit: int, lease_seconds: float) -> list[WebhookJob]:
        try:
            raw = await self._lease(
                keys=[self._due, self._jobs, self._leased, self._held], args=[now, limit, now + lease_seconds]
            )
        except (RedisError, OSError) as exc:
            raise WebhookQueueUnavailable(str(exc)) from None
        return [WebhookJob.unpack(item) for item in raw]

    async def ack(self, job: WebhookJob) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.zrem(self._due, job.id)
        pipe.zrem(self._created, job.id)
        pipe.hdel(self._jobs, job.id)
        pipe.hdel(self._urls, job.id)
        pipe.srem(self._leased, job.id)
        await self._run(pipe)

    async def retry(self, job: WebhookJob, due: float) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._jobs, job.id, job.pack())
        pipe.zadd(self._due, {job.id: due})
        pipe.srem(self._leased, job.id)
        await self._run(pipe)

    async def expedite(self, url: str, now: float) -> int:
        try:
            return int(await self._expedite(keys=[self._due, self._urls, self._leased], args=[url, now]))
        except (RedisError, OSError) as exc:
            raise WebhookQueueUnavailable(str(exc)) from None

    async def cancel(self, hold: str) -> int:
        prefix = hold + HOLD_SEPARATOR
        keys = [self._held, self._due, self._jobs, self._created, self._urls, self._leased]
        try:
            # Every id of the hold sorts between "<hold>\x00" and "<hold>\x01".
            return int(await self._cancel(keys=keys, args=["[" + prefix, "(" + hold + "\x01"]))
        except (RedisError, OSError) as exc:
            raise WebhookQueueUnavailable(str(exc)) from None

    async def stats(self, now: float) -> QueueStats:
        try:
            depth = await self._redis.zcard(self._due)
            oldest = await self._redis.zrange(self._created, 0, 0, withscores=True)
        except (RedisError, OSError) as exc:
            raise WebhookQueueUnavailable(str(exc)) from None
        age = max(0.0, now - float(oldest[0][1])) if oldest else 0.0
        return QueueStats(int(depth), age)
