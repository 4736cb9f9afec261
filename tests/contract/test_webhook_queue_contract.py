"""The WebhookQueue contract, run against the memory queue and the Redis queue alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from hub.webhooks.queue import MAX_FAILURES, MemoryWebhookQueue, WebhookFailure, WebhookJob, WebhookQueue
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


# Per-app stats, failures and dead letters


def fresh(job: WebhookJob) -> WebhookJob:
    return WebhookJob(job.id, job.app_id, job.url, b'{"replayed":true}', NOW + 100)


async def test_app_stats_count_only_that_apps_waiting_jobs(queue: WebhookQueue) -> None:
    await queue.push(WebhookJob.new("1", "http://127.0.0.1:1/a", b"{}", NOW - 30), NOW)
    await queue.push(WebhookJob.new("1", "http://127.0.0.1:1/a", b"{}", NOW - 5), NOW)
    other = WebhookJob.new("2", "http://127.0.0.1:1/b", b"{}", NOW - 90)
    await queue.push(other, NOW)

    one, two = await queue.app_stats("1", NOW), await queue.app_stats("2", NOW)
    (leased,) = [j for j in await queue.lease(NOW, 10, LEASE) if j.app_id == "2"]
    await queue.ack(leased)

    assert one.depth == 2 and one.oldest_age == pytest.approx(30.0)
    assert two.depth == 1 and two.oldest_age == pytest.approx(90.0)
    assert (await queue.app_stats("2", NOW)).depth == 0


async def test_a_buried_job_leaves_the_queue_and_is_listed_as_a_dead_letter(queue: WebhookQueue) -> None:
    queued = job()
    await queue.push(queued, NOW)
    (leased,) = await queue.lease(NOW, 10, LEASE)
    await queue.bury(leased.next_attempt(), "HTTP 500: down", NOW + 1, 3600)

    letters, total = await queue.dead_letters("1", NOW + 2, 10)

    assert await queue.lease(NOW + LEASE * 2, 10, LEASE) == []
    assert (await queue.stats(NOW)).depth == 0
    assert total == 1
    assert letters[0].job == leased.next_attempt()
    assert (letters[0].error, letters[0].died_at, letters[0].expires_at) == ("HTTP 500: down", NOW + 1, NOW + 3601)


async def test_dead_letters_are_listed_newest_first_per_app(queue: WebhookQueue) -> None:
    jobs = [job() for _ in range(3)]
    for offset, queued in enumerate(jobs):
        await queue.push(queued, NOW)
        await queue.bury(queued, f"failure {offset}", NOW + offset, 3600)
    await queue.bury(WebhookJob.new("2", "http://127.0.0.1:1/b", b"{}", NOW), "other app", NOW, 3600)

    letters, total = await queue.dead_letters("1", NOW + 5, 2)

    assert total == 3
    assert [letter.error for letter in letters] == ["failure 2", "failure 1"]


async def test_a_dead_letter_expires_after_its_keep_time(queue: WebhookQueue) -> None:
    await queue.bury(job(), "gone", NOW, 60)
    await queue.bury(job(), "kept not", NOW, 0)

    assert (await queue.dead_letters("1", NOW + 59, 10))[1] == 1
    assert await queue.dead_letters("1", NOW + 60, 10) == ([], 0)


async def test_a_replayed_dead_letter_is_queued_due_now_as_refreshed(queue: WebhookQueue) -> None:
    dead = job()
    await queue.bury(dead, "HTTP 503", NOW, 3600)

    assert await queue.replay("1", dead.id, fresh, NOW + 10)

    assert await queue.dead_letters("1", NOW + 10, 10) == ([], 0)
    assert await queue.lease(NOW + 10, 10, LEASE) == [fresh(dead)]
    assert (await queue.app_stats("1", NOW + 100)).depth == 1


async def test_a_dead_letter_replays_once_and_only_for_its_app(queue: WebhookQueue) -> None:
    dead = job()
    await queue.bury(dead, "HTTP 503", NOW, 3600)

    assert not await queue.replay("2", dead.id, fresh, NOW)
    results = await asyncio.gather(*(queue.replay("1", dead.id, fresh, NOW) for _ in range(5)))

    assert sorted(results) == [False, False, False, False, True]
    assert len(await queue.lease(NOW, 10, LEASE)) == 1
    assert not await queue.replay("1", "no-such-job", fresh, NOW)


async def test_failures_are_kept_newest_first_per_app_up_to_the_limit(queue: WebhookQueue) -> None:
    for attempt in range(MAX_FAILURES + 5):
        await queue.record_failure(WebhookFailure("1", "j", "http://x/", NOW + attempt, attempt, "HTTP 500", False))
    await queue.record_failure(WebhookFailure("2", "k", "http://y/", NOW, 1, "timeout", True))

    failures = await queue.failures("1", 100)

    assert len(failures) == MAX_FAILURES
    assert failures[0] == WebhookFailure(
        "1", "j", "http://x/", NOW + MAX_FAILURES + 4, MAX_FAILURES + 4, "HTTP 500", False
    )
    assert await queue.failures("2", 10) == [WebhookFailure("2", "k", "http://y/", NOW, 1, "timeout", True)]


async def test_a_held_job_counts_in_its_apps_stats_once_it_has_been_tried(queue: WebhookQueue) -> None:
    held = WebhookJob.held("vacated:1:c", "1", "http://127.0.0.1:1/a", b"{}", NOW - 3)
    await queue.push(held, NOW)
    assert (await queue.app_stats("1", NOW)).depth == 0, "a held job may still be withdrawn"

    (leased,) = await queue.lease(NOW, 10, LEASE)
    await queue.retry(leased.next_attempt(), NOW + 2)

    assert (await queue.app_stats("1", NOW)).depth == 1
