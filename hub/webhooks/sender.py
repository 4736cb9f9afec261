"""The worker that delivers queued webhooks, retrying with exponential backoff for five minutes.

Every node runs one; the queue's leases make each job go to one worker at a time. A job is given up
once the next attempt would fall outside the retry window: the Python SDK rejects webhooks whose
``time_ms`` is more than 300 s old anyway.

While a URL fails, each node keeps one of its jobs as a *probe*, retried every ``PROBE_SECONDS``
instead of backing off: the first 2xx answer makes every other job for that URL due at once, so a
backlog resumes within seconds of the receiver returning rather than after the longest backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import aiohttp
import structlog

from hub.apps import AppRegistry
from hub.metrics import Metrics
from hub.tap import Tap
from hub.webhooks.payload import webhook_headers
from hub.webhooks.queue import WebhookFailure, WebhookJob, WebhookQueue

log = structlog.get_logger("hub.webhooks")

RETRY_WINDOW_SECONDS = 300.0
MAX_BACKOFF_SECONDS = 60.0
LEASE_SECONDS = 30.0
REQUEST_TIMEOUT_SECONDS = 5.0
PROBE_SECONDS = 2.0
# How much of a failing receiver's answer is kept with the failure, for the console.
ANSWER_CHARS = 300


def backoff(attempts: int) -> float:
    """Seconds before attempt ``attempts + 1``: 1, 2, 4, ... capped at a minute."""
    return float(min(MAX_BACKOFF_SECONDS, 2 ** max(0, attempts - 1)))


class WebhookSender:
    """Leases due jobs and POSTs them, at most ``concurrency`` at a time."""

    def __init__(
        self,
        queue: WebhookQueue,
        apps: AppRegistry,
        metrics: Metrics,
        *,
        poll_seconds: float = 0.2,
        concurrency: int = 16,
        window: float = RETRY_WINDOW_SECONDS,
        probe_seconds: float = PROBE_SECONDS,
        tap: Tap | None = None,
        dead_letter_ttl: float = 0.0,
    ) -> None:
        self._queue = queue
        self._apps = apps
        self._metrics = metrics
        self._poll = poll_seconds
        self._window = window
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._inflight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._failing: set[str] = set()
        self._probe = probe_seconds
        self._next_probe: dict[str, float] = {}
        self._tap = tap or Tap("")
        self._dead_letter_ttl = dead_letter_ttl

    def wake(self) -> None:
        """A job was queued here: look for due jobs now instead of at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver forever (cancelled at shutdown); queue outages are logged and waited out."""
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                while True:
                    leased = await self._lease()
                    for job in leased:
                        await self._slots.acquire()
                        task = asyncio.get_running_loop().create_task(self._deliver(session, job))
                        self._inflight.add(task)
                        task.add_done_callback(self._inflight.discard)
                    if not leased:
                        # Jobs queued by other nodes are found by polling; this node's own wake us at once.
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), self._poll)
                        self._wake.clear()
            finally:
                for task in list(self._inflight):
                    task.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.gather(*self._inflight, return_exceptions=True)

    async def _lease(self) -> list[WebhookJob]:
        now = time.time()
        try:
            stats = await self._queue.stats(now)
            self._metrics.webhook_queue_depth.set(stats.depth)
            self._metrics.webhook_queue_oldest_age_seconds.set(stats.oldest_age)
            return await self._queue.lease(now, self._concurrency, LEASE_SECONDS)
        except Exception as exc:  # the queue's outage type differs per implementation
            log.warning("webhook_queue_unavailable", error=str(exc))
            await asyncio.sleep(1.0)
            return []

    async def _deliver(self, session: aiohttp.ClientSession, job: WebhookJob) -> None:
        try:
            app = self._apps.by_id(job.app_id)
            if app is None:
                await self._queue.ack(job)
                return
            error = await self._post(session, job, app.key, app.secret)
            if self._tap.watching(job.app_id):
                self._tap.emit(
                    job.app_id, "webhook_sent" if error is None else "webhook_failed", **_described(job, error)
                )
            if error is None:
                self._metrics.webhooks_sent.labels(job.app_id).inc()
                await self._queue.ack(job)
                # A retried job succeeding means the receiver is back, even if another node saw it fail.
                if job.url in self._failing or job.attempts > 0:
                    self._failing.discard(job.url)
                    self._next_probe.pop(job.url, None)
                    # Its backlog need not wait out each job's backoff.
                    if await self._queue.expedite(job.url, time.time()):
                        self.wake()
                return
            self._failing.add(job.url)
            self._metrics.webhooks_failed.labels(job.app_id).inc()
            retry = job.next_attempt()
            delay = self._retry_delay(job.url, retry.attempts)
            gave_up = time.time() + delay - job.created_at > self._window
            failure = WebhookFailure(job.app_id, job.id, job.url, time.time(), retry.attempts, error, gave_up)
            await self._queue.record_failure(failure)
            if gave_up:
                self._metrics.webhooks_dropped.labels(job.app_id).inc()
                log.error("webhook_dropped", app_id=job.app_id, url=job.url, attempts=retry.attempts, error=error)
                await self._queue.bury(retry, error, time.time(), self._dead_letter_ttl)
                return
            self._metrics.webhooks_retried.labels(job.app_id).inc()
            log.info("webhook_retry", app_id=job.app_id, url=job.url, attempts=retry.attempts, delay=delay, error=error)
            await self._queue.retry(retry, time.time() + delay)
        except Exception as exc:  # a queue outage: the lease expires and the job is tried again
            log.warning("webhook_queue_unavailable", error=str(exc), job_id=job.id)
        finally:
            self._slots.release()

    def _retry_delay(self, url: str, attempts: int) -> float:
        """The backoff, except for one job per URL per probe period, which comes back soon as the probe."""
        now = time.monotonic()
        if now >= self._next_probe.get(url, 0.0):
            self._next_probe[url] = now + self._probe
            return min(self._probe, backoff(attempts))
        return backoff(attempts)

    async def _post(self, session: aiohttp.ClientSession, job: WebhookJob, key: str, secret: str) -> str | None:
        """POST the job; None on a 2xx answer, else what went wrong."""
        app = self._apps.by_id(job.app_id)
        extra = next((w.headers for w in (app.webhooks if app else ()) if w.url == job.url), ())
        headers = webhook_headers(key, secret, job.body, extra)
        try:
            async with session.post(job.url, data=job.body, headers=headers) as response:
                if 200 <= response.status < 300:
                    return None
                answer = (await response.content.read(ANSWER_CHARS)).decode("utf-8", "replace")
                return f"HTTP {response.status}: {answer}" if answer else f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"


def _described(job: WebhookJob, error: str | None) -> dict[str, object]:
    """A delivery attempt as the console stream shows it."""
    try:
        events = [str(e.get("name")) for e in json.loads(job.body).get("events", ())]
    except (ValueError, AttributeError):
        events = []
    return {"url": job.url, "webhooks": events, "attempts": job.attempts + 1, "error": error, "job_id": job.id}
