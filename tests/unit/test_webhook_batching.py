"""Webhook batching in the emitter, against the in-process queue: what becomes one request, and when.

The end-to-end behaviour (signed bodies at a real receiver, both topologies) is in
tests/integration/test_feature_webhook_filter_batching.py; these check the edges a receiver cannot time.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from hub.apps import app_from_mapping
from hub.metrics import Metrics
from hub.state.coordination import MemoryCoordination
from hub.webhooks.emitter import MAX_BATCH_EVENTS, Webhooks
from hub.webhooks.queue import MemoryWebhookQueue

APP = app_from_mapping(
    {
        "id": "1",
        "key": "k",
        "secret": "s",
        "webhooks": [
            {"url": "http://a/", "event_types": ["client_event", "channel_occupied"]},
            {"url": "http://b/", "event_types": ["client_event"], "filter": {"channel_name_starts_with": "private-b"}},
        ],
    }
)


def emitter(queue: MemoryWebhookQueue, batch_seconds: float) -> Webhooks:
    return Webhooks(queue, MemoryCoordination(), Metrics(), batch_seconds=batch_seconds, recheck_seconds=0.0)


async def queued(queue: MemoryWebhookQueue) -> list[tuple[str, list[dict[str, Any]]]]:
    """(url, events) of every job due now, oldest first."""
    jobs = await queue.lease(time.time() + 1, 1000, 30)
    return [(job.url, json.loads(job.body)["events"]) for job in jobs]


def typed(webhooks: Webhooks, channel: str, n: int) -> None:
    webhooks.client_event(APP, channel, "client-typing", {"n": n}, "1.1", None)


async def test_without_batching_every_event_is_its_own_request() -> None:
    queue = MemoryWebhookQueue()
    webhooks = emitter(queue, 0)
    for n in range(3):
        typed(webhooks, "private-a", n)
    await webhooks.close()
    assert [len(events) for _, events in await queued(queue)] == [1, 1, 1]


async def test_a_batch_holds_every_event_of_its_window_per_webhook_in_order() -> None:
    queue = MemoryWebhookQueue()
    webhooks = emitter(queue, 0.2)
    for n in range(3):
        typed(webhooks, "private-b1", n)
    webhooks.channel_occupied(APP, "private-b1")
    await webhooks.close()  # flushes open batches

    jobs = await queued(queue)
    by_url = {url: events for url, events in jobs}
    assert len(jobs) == 2
    assert [e["name"] for e in by_url["http://a/"]] == ["client_event"] * 3 + ["channel_occupied"]
    assert [json.loads(e["data"])["n"] for e in by_url["http://b/"]] == [0, 1, 2]


async def test_a_full_batch_is_sent_at_once_without_waiting_for_its_window() -> None:
    queue = MemoryWebhookQueue()
    webhooks = emitter(queue, 60.0)
    for n in range(MAX_BATCH_EVENTS + 5):
        typed(webhooks, "private-a", n)
    started = time.monotonic()
    for _ in range(100):  # the full batch goes out within a few loop turns, not after 60 s
        jobs = await queued(queue)
        if jobs:
            break
        await asyncio.sleep(0.01)
    assert [len(events) for _, events in jobs] == [MAX_BATCH_EVENTS]
    assert time.monotonic() - started < 2
    await webhooks.close()


async def test_closing_sends_open_batches_at_once_instead_of_waiting_out_their_window() -> None:
    queue = MemoryWebhookQueue()
    webhooks = emitter(queue, 60.0)
    for n in range(5):
        typed(webhooks, "private-a", n)
    started = time.monotonic()

    await webhooks.close()

    assert time.monotonic() - started < 1
    assert [len(events) for _, events in await queued(queue)] == [5]
