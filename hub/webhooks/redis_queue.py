"""The webhook queue in Redis, so queued webhooks survive the restart of the node that queued them.

Every key carries the hash tag ``{<prefix>:webhooks}``, so the queue lives in one slot and each operation
is one atomic script on a single Redis, under Sentinel and on Redis Cluster alike (webhook traffic is small
next to pub/sub, so one shard holding it all is the price of atomic leases):

| key | type | holds |
|---|---|---|
| ``{p:webhooks}:due`` | zset | job id -> when it is due (a leased job: when its lease runs out) |
| ``{p:webhooks}:jobs`` | hash | job id -> packed job |
| ``{p:webhooks}:created`` | zset | job id -> creation time, for the age metric |
| ``{p:webhooks}:urls`` | hash | job id -> URL, for ``expedite`` |
| ``{p:webhooks}:leased`` | set | ids being delivered |
| ``{p:webhooks}:held`` | zset | ids of held jobs not leased yet (score 0: ``cancel`` finds a hold's ids by
their prefix with ZRANGEBYLEX); leasing a job takes it out |
| ``{p:webhooks}:created:<app>`` | zset | the app's waiting ids -> creation time, for its depth and age (a
held job joins once tried: ``cancel`` does not know the app) |
| ``{p:webhooks}:dead:<app>`` | zset | the app's dead letters: id -> when it expires |
| ``{p:webhooks}:dead-letters`` | hash | id -> packed dead letter |
| ``{p:webhooks}:failures:<app>`` | list | the app's latest failed attempts, newest first |

Leasing moves a due job's score into the future in the same script that reads it, so two workers
never take the same job, and a worker that dies only delays it by the lease.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError

from hub.state.redis_scripts import RedisClient, ScriptRunner
from hub.webhooks.queue import (
    HOLD_SEPARATOR,
    MAX_DEAD_LETTERS,
    MAX_FAILURES,
    DeadLetter,
    QueueStats,
    Refresh,
    WebhookFailure,
    WebhookJob,
    WebhookQueue,
)

# KEYS: due, jobs, created, urls, held, the app's created. ARGV: id, packed job, url, due, created, 1 if held.
_PUSH = """
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
if ARGV[6] == '1' then
  redis.call('ZADD', KEYS[5], 0, ARGV[1])
else
  redis.call('ZADD', KEYS[6], ARGV[5], ARGV[1])
end
return 1
"""
# KEYS: due, jobs, leased, held. ARGV: now, limit, lease end.
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
# KEYS: due, created, jobs, urls, leased, the app's created. ARGV: id.
_ACK = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('SREM', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
return 1
"""
# KEYS: due, jobs, leased, the app's created. ARGV: id, packed job, due, created.
_RETRY = """
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
return 1
"""
# KEYS: due, urls, leased. ARGV: url, now.
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
# KEYS: held, due, jobs, created, urls, leased. ARGV: the hold's id range for ZRANGEBYLEX.
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

# Expired letters go a bounded number per call, so no call blocks Redis for long.
_PRUNE = """
local function prune(dead, letters, now)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', dead, '-inf', now, 'LIMIT', 0, 1000)) do
    redis.call('HDEL', letters, id)
    redis.call('ZREM', dead, id)
  end
end
"""
# KEYS: as _ACK, then the app's dead, dead-letters. ARGV: id, packed letter ('' to keep none), expiry, now, max.
_BURY = (
    _PRUNE
    + """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('SREM', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
if ARGV[2] == '' then return 0 end
redis.call('HSET', KEYS[8], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[7], ARGV[3], ARGV[1])
prune(KEYS[7], KEYS[8], ARGV[4])
local extra = redis.call('ZCARD', KEYS[7]) - tonumber(ARGV[5])
if extra > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[7], 0, extra - 1)) do redis.call('HDEL', KEYS[8], id) end
  redis.call('ZREMRANGEBYRANK', KEYS[7], 0, extra - 1)
end
return 1
"""
)
# KEYS: the app's dead, dead-letters. ARGV: now, limit. Returns {total, letter, ...}, newest first.
_DEAD_LETTERS = (
    _PRUNE
    + """
prune(KEYS[1], KEYS[2], ARGV[1])
local out = {redis.call('ZCARD', KEYS[1])}
for _, id in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)) do
  local letter = redis.call('HGET', KEYS[2], id)
  if letter then table.insert(out, letter) end
end
return out
"""
)
# KEYS: the app's dead, dead-letters, due, jobs, created, urls, the app's created.
# ARGV: dead id, new id, packed job, url, now, created.
_REPLAY = """
local expires = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expires or tonumber(expires) <= tonumber(ARGV[5]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[6], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[2])
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[2])
redis.call('ZADD', KEYS[7], ARGV[6], ARGV[2])
return 1
"""
# KEYS: the app's failures. ARGV: packed failure, how many to keep.
_RECORD_FAILURE = """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
return 1
"""


class WebhookQueueUnavailable(Exception):
    """Redis did not answer; the job was not queued."""


class RedisWebhookQueue(WebhookQueue):
    """WebhookQueue over a redis-py asyncio client (``Redis`` or ``RedisCluster``)."""

    def __init__(self, client: RedisClient, prefix: str) -> None:
        self._redis = client
        tag = "{" + prefix + ":webhooks}"
        self._due = f"{tag}:due"
        self._jobs = f"{tag}:jobs"
        self._created = f"{tag}:created"
        self._urls = f"{tag}:urls"
        self._leased = f"{tag}:leased"
        self._held = f"{tag}:held"
        self._letters = f"{tag}:dead-letters"
        self._tag = tag
        self._scripts = scripts = ScriptRunner(client)
        self._push = scripts.script(_PUSH)
        self._lease = scripts.script(_LEASE)
        self._ack = scripts.script(_ACK)
        self._retry = scripts.script(_RETRY)
        self._expedite = scripts.script(_EXPEDITE)
        self._cancel = scripts.script(_CANCEL)
        self._bury = scripts.script(_BURY)
        self._dead_letters = scripts.script(_DEAD_LETTERS)
        self._replay = scripts.script(_REPLAY)
        self._record_failure = scripts.script(_RECORD_FAILURE)

    def _app_key(self, kind: str, app_id: str) -> str:
        return f"{self._tag}:{kind}:{app_id}"

    async def _call(self, call: Any) -> Any:
        try:
            await self._scripts.ready()
            return await call
        except (RedisError, OSError) as exc:
            raise WebhookQueueUnavailable(str(exc)) from None

    async def push(self, job: WebhookJob, due: float) -> None:
        keys = [self._due, self._jobs, self._created, self._urls, self._held, self._app_key("created", job.app_id)]
        held = 1 if job.hold is not None else 0
        await self._call(self._push(keys, [job.id, job.pack(), job.url, due, job.created_at, held]))

    async def lease(self, now: float, limit: int, lease_seconds: float) -> list[WebhookJob]:
        keys = [self._due, self._jobs, self._leased, self._held]
        raw = await self._call(self._lease(keys, [now, limit, now + lease_seconds]))
        return [WebhookJob.unpack(item) for item in raw]

    async def ack(self, job: WebhookJob) -> None:
        await self._call(self._ack(self._ack_keys(job), [job.id]))

    def _ack_keys(self, job: WebhookJob) -> list[str]:
        return [self._due, self._created, self._jobs, self._urls, self._leased, self._app_key("created", job.app_id)]

    async def retry(self, job: WebhookJob, due: float) -> None:
        keys = [self._due, self._jobs, self._leased, self._app_key("created", job.app_id)]
        await self._call(self._retry(keys, [job.id, job.pack(), due, job.created_at]))

    async def expedite(self, url: str, now: float) -> int:
        return int(await self._call(self._expedite([self._due, self._urls, self._leased], [url, now])))

    async def cancel(self, hold: str) -> int:
        prefix = hold + HOLD_SEPARATOR
        keys = [self._held, self._due, self._jobs, self._created, self._urls, self._leased]
        # Every id of the hold sorts between "<hold>\x00" and "<hold>\x01".
        return int(await self._call(self._cancel(keys, ["[" + prefix, "(" + hold + "\x01"])))

    async def stats(self, now: float) -> QueueStats:
        # One round trip without MULTI: both keys are in the queue's slot, and the two readings need not
        # be of one instant for a metric.
        pipe = self._redis.pipeline(transaction=False)
        pipe.zcard(self._due)
        pipe.zrange(self._created, 0, 0, withscores=True)
        depth, oldest = await self._call(pipe.execute())
        age = max(0.0, now - float(oldest[0][1])) if oldest else 0.0
        return QueueStats(int(depth), age)

    async def app_stats(self, app_id: str, now: float) -> QueueStats:
        created = self._app_key("created", app_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.zcard(created)
        pipe.zrange(created, 0, 0, withscores=True)
        depth, oldest = await self._call(pipe.execute())
        age = max(0.0, now - float(oldest[0][1])) if oldest else 0.0
        return QueueStats(int(depth), age)

    async def bury(self, job: WebhookJob, error: str, now: float, keep_seconds: float) -> None:
        letter = DeadLetter(job, error, now, now + keep_seconds).pack() if keep_seconds > 0 else b""
        keys = [*self._ack_keys(job), self._app_key("dead", job.app_id), self._letters]
        await self._call(self._bury(keys, [job.id, letter, now + keep_seconds, now, MAX_DEAD_LETTERS]))

    async def dead_letters(self, app_id: str, now: float, limit: int) -> tuple[list[DeadLetter], int]:
        keys = [self._app_key("dead", app_id), self._letters]
        total, *letters = await self._call(self._dead_letters(keys, [now, max(1, limit)]))
        return [DeadLetter.unpack(raw) for raw in letters][:limit], int(total)

    async def replay(self, app_id: str, job_id: str, refresh: Refresh, now: float) -> bool:
        raw = await self._call(self._redis.hget(self._letters, job_id))
        if raw is None:
            return False
        letter = DeadLetter.unpack(raw)
        if letter.job.app_id != app_id:
            return False
        fresh = refresh(letter.job)
        keys = [
            self._app_key("dead", app_id),
            self._letters,
            self._due,
            self._jobs,
            self._created,
            self._urls,
            self._app_key("created", fresh.app_id),
        ]
        args: list[str | int | float | bytes] = [job_id, fresh.id, fresh.pack(), fresh.url, now, fresh.created_at]
        return bool(await self._call(self._replay(keys, args)))

    async def record_failure(self, failure: WebhookFailure) -> None:
        key = self._app_key("failures", failure.app_id)
        await self._call(self._record_failure([key], [failure.pack(), MAX_FAILURES]))

    async def failures(self, app_id: str, limit: int) -> list[WebhookFailure]:
        key = self._app_key("failures", app_id)
        raw = await self._call(self._redis.lrange(key, 0, max(0, limit - 1)))
        return [WebhookFailure.unpack(item) for item in raw]
