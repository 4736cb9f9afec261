"""The WebhookQueue contract, run against the memory queue and the Redis queue alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from hub.webhooks.queue import MemoryWebhookQueue, WebhookJob, WebhookQueue
from hub.webhooks.redis_queue import RedisWebhookQueue
from tests.contract.conftest import Implementation

NOW = 1_700_000_000.0
LEASE = 30.0


@pytest.fixture
async def queue(store: Implementation) -> AsyncIterator[WebhookQueue]:
    """An empty queue of each implementation."""
    if store.kind == "memory":
        yield MemoryWebhookQueue()
        return
    client = store.command_client()
    try:
        yield RedisWebhookQueue(client, store.prefix)
    finally:
        await client.aclose()


def job(url: str = "http://127.0.0.1:1/hook", created: float = NOW, body: bytes = b"{}") -> WebhookJob:
    return WebhookJob.new("1", url, body, created)


async def test_a_due_job_is_leased_with_its_fields_intact(queue: WebhookQueue) -> None:
    queued = job(body=b'{"time_ms":1,"events":[]}')
    await queue.push(queued, NOW)

    assert await queue.lease(NOW, 10, LEASE) == [queued]


async def test_a_job_is_not_leased_before_it_is_due(queue: WebhookQueue) -> None:
    await queue.push(job(), NOW + 5)

    assert await queue.lease(NOW, 10, LEASE) == []
    assert len(await queue.lease(NOW + 5, 10, LEASE)) == 1


async def test_a_leased_job_is_hidden_until_its_lease_runs_out(queue: WebhookQueue) -> None:
    await queue.push(job(), NOW)
    await queue.lease(NOW, 10, LEASE)

    assert await queue.lease(NOW + 1, 10, LEASE) == []
    assert len(await queue.lease(NOW + LEASE, 10, LEASE)) == 1, "a dead worker's job comes back after the lease"


async def test_concurrent_workers_never_lease_the_same_job(queue: WebhookQueue) -> None:
    for _ in range(50):
        await queue.push(job(), NOW)

    batches = await asyncio.gather(*(queue.lease(NOW, 7, LEASE) for _ in range(10)))

    ids = [j.id for batch in batches for j in batch]
    assert len(ids) == 50
    assert len(set(ids)) == 50


async def test_an_acked_job_is_gone(queue: WebhookQueue) -> None:
    queued = job()
    await queue.push(queued, NOW)
    (leased,) = await queue.lease(NOW, 10, LEASE)
    await queue.ack(leased)

    assert await queue.lease(NOW + LEASE * 2, 10, LEASE) == []
    assert (await queue.stats(NOW)).depth == 0


async def test_a_retried_job_comes_back_at_its_new_time_with_its_attempt_count(queue: WebhookQueue) -> None:
    await queue.push(job(), NOW)
    (leased,) = await queue.lease(NOW, 10, LEASE)
    await queue.retry(leased.next_attempt(), NOW + 4)

    assert await queue.lease(NOW + 3, 10, LEASE) == []
    (again,) = await queue.lease(NOW + 4, 10, LEASE)
    assert again.id == leased.id
    assert again.attempts == 1


async def test_stats_report_depth_and_the_oldest_jobs_age(queue: WebhookQueue) -> None:
    await queue.push(job(created=NOW - 40), NOW)
    await queue.push(job(created=NOW - 10), NOW + 60)

    stats = await queue.stats(NOW)

    assert stats.depth == 2
    assert stats.oldest_age == pytest.approx(40.0)


async def test_expedite_makes_only_that_urls_waiting_jobs_due_now(queue: WebhookQueue) -> None:
    back, other = "http://127.0.0.1:1/back", "http://127.0.0.1:1/other"
    await queue.push(job(back), NOW + 60)
    await queue.push(job(back), NOW + 30)
    await queue.push(job(other), NOW + 60)

    assert await queue.expedite(back, NOW) == 2
    leased = await queue.lease(NOW, 10, LEASE)
    assert sorted(j.url for j in leased) == [back, back]


async def test_expedite_leaves_a_leased_job_alone(queue: WebhookQueue) -> None:
    url = "http://127.0.0.1:1/back"
    await queue.push(job(url), NOW)
    await queue.lease(NOW, 10, LEASE)

    assert await queue.expedite(url, NOW + 1) == 0
    assert await queue.lease(NOW + 1, 10, LEASE) == [], "a job being delivered must not be delivered twice"


def held(hold: str, url: str = "http://127.0.0.1:1/hook") -> WebhookJob:
    return WebhookJob.held(hold, "1", url, b"{}", NOW)


async def test_cancel_withdraws_every_waiting_job_of_the_hold_and_only_those(queue: WebhookQueue) -> None:
    await queue.push(held('["vacated","1","room"]', "http://127.0.0.1:1/a"), NOW + 3)
    await queue.push(held('["vacated","1","room"]', "http://127.0.0.1:1/b"), NOW + 3)
    await queue.push(held('["vacated","1","room-2"]'), NOW + 3)
    await queue.push(job(), NOW + 3)

    assert await queue.cancel('["vacated","1","room"]') == 2
    leased = await queue.lease(NOW + 3, 10, LEASE)
    assert sorted(j.hold or "" for j in leased) == ["", '["vacated","1","room-2"]']
    assert (await queue.stats(NOW)).depth == 2
    assert await queue.cancel('["vacated","1","room"]') == 0, "a hold is cancelled once"


async def test_a_held_job_once_leased_cannot_be_cancelled_and_is_delivered_as_queued(queue: WebhookQueue) -> None:
    queued = held('["removed","1","presence-x","u:1"]')
    await queue.push(queued, NOW + 3)

    assert await queue.lease(NOW + 3, 10, LEASE) == [queued]
    assert await queue.cancel('["removed","1","presence-x","u:1"]') == 0
    assert queued.hold == '["removed","1","presence-x","u:1"]'


async def test_a_held_job_whose_lease_ran_out_comes_back_and_stays_uncancellable(queue: WebhookQueue) -> None:
    await queue.push(held("h"), NOW)
    (leased,) = await queue.lease(NOW, 10, LEASE)

    assert await queue.cancel("h") == 0
    assert await queue.lease(NOW + LEASE, 10, LEASE) == [leased]
