"""Which webhooks to send, decided once for the cluster, and queued for the sender.

``channel_vacated`` and ``member_removed`` are held for 3 s, as Pusher does: if the channel is
occupied again (or the member comes back) meanwhile, neither the held event nor the new
``channel_occupied`` / ``member_added`` is sent, so a page reload does not flap the backend's view.
The hold is the webhook itself, queued in the durable WebhookQueue to be due after the window: the
node that re-occupies a channel cancels it there, and a node that dies during the window (``kill -9``)
loses nothing, since any node's sender delivers it when it falls due. Cancelling and leasing are
atomic in the queue, so each hold is either cancelled (and the new ``channel_occupied`` suppressed) or
delivered (and the new one sent): the backend sees strict occupied/vacated pairs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from hub.apps import App, Webhook
from hub.metrics import Metrics
from hub.protocol.messages import dumps
from hub.state.coordination import Coordination
from hub.webhooks.payload import webhook_body
from hub.webhooks.queue import WebhookJob, WebhookQueue

log = structlog.get_logger("hub.webhooks")

HOLD_SECONDS = 3.0
RECHECK_SECONDS = 0.25
CACHE_MISS_DEDUP_SECONDS = 10.0
# A batch is sent early once it holds this many events, so a burst cannot build one huge request.
MAX_BATCH_EVENTS = 100


class Webhooks:
    """Emits Pusher's seven webhook events for an app's configured webhooks."""

    def __init__(
        self,
        queue: WebhookQueue,
        coordination: Coordination,
        metrics: Metrics,
        *,
        hold_seconds: float = HOLD_SECONDS,
        batch_seconds: float = 0.0,
        recheck_seconds: float = RECHECK_SECONDS,
        on_queued: Callable[[], None] = lambda: None,
    ) -> None:
        """``batch_seconds`` > 0 collects each webhook's events that long and sends them in one request."""
        self._batch_seconds = batch_seconds
        self._batches: dict[tuple[str, Webhook], list[dict[str, Any]]] = {}
        self._flush_now = asyncio.Event()
        self._on_queued = on_queued
        self._queue = queue
        self._co = coordination
        self._metrics = metrics
        self._hold = hold_seconds
        self._recheck = recheck_seconds
        self._tasks: set[asyncio.Task[None]] = set()

    async def _emit(self, app: App, event: dict[str, Any], hold: str | None = None) -> None:
        """Queue the event for each of the app's webhooks that wants it; held ones fall due after the hold.

        With batching on, events that are not held wait in their webhook's batch; a held event keeps a job
        of its own, since a re-occupation cancels it by its hold name.
        """
        hooks = app.webhooks_for(event["name"], event["channel"])
        if hold is None and self._batch_seconds > 0:
            for hook in hooks:
                self._add_to_batch(app, hook, event)
            return
        now = time.time()
        due = now + self._hold if hold is not None else now
        body = webhook_body(int(due * 1000), [event])
        for hook in hooks:
            if hold is None:
                job = WebhookJob.new(app.id, hook.url, body, now)
            else:
                job = WebhookJob.held(hold, app.id, hook.url, body, now)
            await self._push(app, job, due, [event])

    async def _push(self, app: App, job: WebhookJob, due: float, events: list[dict[str, Any]]) -> None:
        try:
            await self._queue.push(job, due)
            self._on_queued()
        except Exception as exc:  # the queue's outage type differs per implementation
            self._metrics.webhooks_dropped.labels(app.id).inc(len(events))
            log.error("webhook_not_queued", app_id=app.id, webhooks=[e["name"] for e in events], error=str(exc))

    def _add_to_batch(self, app: App, hook: Webhook, event: dict[str, Any]) -> None:
        """Collect events for one webhook for ``batch_seconds`` (or up to MAX_BATCH_EVENTS), then queue them."""
        key = (app.id, hook)
        batch = self._batches.get(key)
        if batch is None:
            self._batches[key] = [event]
            self._spawn(self._guarded(app, self._flush_after(app, hook)))
            return
        batch.append(event)
        if len(batch) >= MAX_BATCH_EVENTS:
            self._spawn(self._guarded(app, self._send_batch(app, hook, self._batches.pop(key))))

    async def _flush_after(self, app: App, hook: Webhook) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._flush_now.wait(), self._batch_seconds)  # set by close()
        events = self._batches.pop((app.id, hook), None)
        if events:
            await self._send_batch(app, hook, events)

    async def _send_batch(self, app: App, hook: Webhook, events: list[dict[str, Any]]) -> None:
        now = time.time()
        job = WebhookJob.new(app.id, hook.url, webhook_body(int(now * 1000), events), now)
        await self._push(app, job, now, events)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, app: App, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception as exc:  # a state or queue outage must not break the socket that caused the event
            log.warning("webhook_decision_failed", app_id=app.id, error=str(exc))

    def _wants(self, app: App, channel: str, *names: str) -> bool:
        return any(app.webhooks_for(name, channel) for name in names)

    def channel_occupied(self, app: App, channel: str) -> None:
        """The channel got its first subscriber in the cluster."""
        if self._wants(app, channel, "channel_occupied", "channel_vacated"):
            self._spawn(self._guarded(app, self._occupied(app, channel)))

    async def _occupied(self, app: App, channel: str) -> None:
        if await self._cancelled(_hold("vacated", app.id, channel)):
            return
        await self._emit(app, {"name": "channel_occupied", "channel": channel})

    async def _cancelled(self, hold: str) -> bool:
        """Cancel the hold; look once more a moment later if there was none.

        The node that saw the channel vacated queues the hold after its state write returns, so a
        re-occupation on another node (or in another task here) can look for it a few milliseconds
        too early; without the second look both the flap's channel_occupied and its held
        channel_vacated would be sent. The soak suite catches that race when the look is skipped.
        """
        if await self._queue.cancel(hold):
            return True
        await asyncio.sleep(self._recheck)
        return bool(await self._queue.cancel(hold))

    def channel_vacated(self, app: App, channel: str) -> None:
        """The channel's last subscriber left; sent after the hold unless it is occupied again."""
        if self._wants(app, channel, "channel_occupied", "channel_vacated"):
            self._spawn(self._guarded(app, self._vacated(app, channel)))

    async def _vacated(self, app: App, channel: str) -> None:
        await self._emit(app, {"name": "channel_vacated", "channel": channel}, _hold("vacated", app.id, channel))

    def member_added(self, app: App, channel: str, user_id: str) -> None:
        """A user's first socket joined a presence channel."""
        if self._wants(app, channel, "member_added", "member_removed"):
            self._spawn(self._guarded(app, self._member_added(app, channel, user_id)))

    async def _member_added(self, app: App, channel: str, user_id: str) -> None:
        if await self._cancelled(_hold("removed", app.id, channel, user_id)):
            return
        await self._emit(app, {"name": "member_added", "channel": channel, "user_id": user_id})

    def member_removed(self, app: App, channel: str, user_id: str) -> None:
        """A user's last socket left; sent after the hold unless the user comes back."""
        if self._wants(app, channel, "member_added", "member_removed"):
            self._spawn(self._guarded(app, self._member_removed(app, channel, user_id)))

    async def _member_removed(self, app: App, channel: str, user_id: str) -> None:
        event = {"name": "member_removed", "channel": channel, "user_id": user_id}
        await self._emit(app, event, _hold("removed", app.id, channel, user_id))

    def client_event(self, app: App, channel: str, event: str, data: Any, socket_id: str, user_id: str | None) -> None:
        """A client event was relayed on a private or presence channel."""
        if not self._wants(app, channel, "client_event"):
            return
        payload: dict[str, Any] = {
            "name": "client_event",
            "channel": channel,
            "event": event,
            "data": data if isinstance(data, str) else dumps(data),
            "socket_id": socket_id,
        }
        if user_id is not None:
            payload["user_id"] = user_id
        self._spawn(self._guarded(app, self._emit(app, payload)))

    def cache_miss(self, app: App, channel: str) -> None:
        """A socket subscribed to a cache channel with nothing cached; one webhook per burst of them."""
        if self._wants(app, channel, "cache_miss"):
            self._spawn(self._guarded(app, self._cache_miss(app, channel)))

    async def _cache_miss(self, app: App, channel: str) -> None:
        if await self._co.claim(f"cache_miss:{app.id}:{channel}", CACHE_MISS_DEDUP_SECONDS):
            await self._emit(app, {"name": "cache_miss", "channel": channel})

    async def subscription_count(self, app: App, channel: str, count: int) -> None:
        """The channel's subscription count, already coalesced by the caller (0 is channel_vacated's news)."""
        if count == 0:
            return
        await self._emit(app, {"name": "subscription_count", "channel": channel, "subscription_count": count})

    async def close(self) -> None:
        """Let decisions in flight and open batches reach the queue (holds wait there, not here), then stop."""
        self._flush_now.set()  # open batches go out now, not at the end of their window
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0
        # A decision may open a batch as it ends: wait for the tasks spawned meanwhile too.
        while self._tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _hold(*parts: str) -> str:
    """The name a held webhook is queued under; JSON, so no app id, channel or user id can blur two."""
    return json.dumps(parts, separators=(",", ":"))
