"""Which webhooks to send, decided once for the cluster, and queued for the sender.

``channel_vacated`` and ``member_removed`` are held for 3 s, as Pusher does: if the channel is
occupied again (or the member comes back) meanwhile, neither the held event nor the new
``channel_occupied`` / ``member_added`` is sent, so a page reload does not flap the backend's view.
The hold is a token in the shared Coordination store, so the node that re-occupies a channel
cancels the hold another node placed.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from hub.apps import App
from hub.metrics import Metrics
from hub.protocol.messages import dumps
from hub.state.base import ClusterState
from hub.state.coordination import Coordination
from hub.webhooks.payload import webhook_body
from hub.webhooks.queue import WebhookJob, WebhookQueue

log = structlog.get_logger("hub.webhooks")

HOLD_SECONDS = 3.0
CACHE_MISS_DEDUP_SECONDS = 10.0


class Webhooks:
    """Emits Pusher's seven webhook events for an app's configured webhooks."""

    def __init__(
        self,
        queue: WebhookQueue,
        coordination: Coordination,
        state: ClusterState,
        metrics: Metrics,
        *,
        hold_seconds: float = HOLD_SECONDS,
        on_queued: Callable[[], None] = lambda: None,
    ) -> None:
        self._on_queued = on_queued
        self._queue = queue
        self._co = coordination
        self._state = state
        self._metrics = metrics
        self._hold = hold_seconds
        self._tasks: set[asyncio.Task[None]] = set()

    async def _emit(self, app: App, event: dict[str, Any]) -> None:
        hooks = app.webhooks_for(event["name"])
        if not hooks:
            return
        now = time.time()
        body = webhook_body(int(now * 1000), [event])
        for hook in hooks:
            try:
                await self._queue.push(WebhookJob.new(app.id, hook.url, body, now), now)
                self._on_queued()
            except Exception as exc:  # the queue's outage type differs per implementation
                self._metrics.webhooks_dropped.labels(app.id).inc()
                log.error("webhook_not_queued", app_id=app.id, webhook=event["name"], error=str(exc))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, app: App, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception as exc:  # a state or queue outage must not break the socket that caused the event
            log.warning("webhook_decision_failed", app_id=app.id, error=str(exc))

    def _wants(self, app: App, *names: str) -> bool:
        return any(app.webhooks_for(name) for name in names)

    def channel_occupied(self, app: App, channel: str) -> None:
        """The channel got its first subscriber in the cluster."""
        if self._wants(app, "channel_occupied", "channel_vacated"):
            self._spawn(self._guarded(app, self._occupied(app, channel)))

    async def _occupied(self, app: App, channel: str) -> None:
        if await self._co.take(f"vacated:{app.id}:{channel}"):
            return
        await self._emit(app, {"name": "channel_occupied", "channel": channel})

    def channel_vacated(self, app: App, channel: str) -> None:
        """The channel's last subscriber left; sent after the hold unless it is occupied again."""
        if self._wants(app, "channel_occupied", "channel_vacated"):
            self._spawn(self._guarded(app, self._vacated(app, channel)))

    async def _vacated(self, app: App, channel: str) -> None:
        key = f"vacated:{app.id}:{channel}"
        token = secrets.token_hex(8)
        await self._co.put(key, token, self._hold + 10)
        await asyncio.sleep(self._hold)
        if await self._co.take(key, token) and await self._state.channel_subscriptions(app.id, channel) == 0:
            await self._emit(app, {"name": "channel_vacated", "channel": channel})

    def member_added(self, app: App, channel: str, user_id: str) -> None:
        """A user's first socket joined a presence channel."""
        if self._wants(app, "member_added", "member_removed"):
            self._spawn(self._guarded(app, self._member_added(app, channel, user_id)))

    async def _member_added(self, app: App, channel: str, user_id: str) -> None:
        if await self._co.take(f"removed:{app.id}:{channel}:{user_id}"):
            return
        await self._emit(app, {"name": "member_added", "channel": channel, "user_id": user_id})

    def member_removed(self, app: App, channel: str, user_id: str) -> None:
        """A user's last socket left; sent after the hold unless the user comes back."""
        if self._wants(app, "member_added", "member_removed"):
            self._spawn(self._guarded(app, self._member_removed(app, channel, user_id)))

    async def _member_removed(self, app: App, channel: str, user_id: str) -> None:
        key = f"removed:{app.id}:{channel}:{user_id}"
        token = secrets.token_hex(8)
        await self._co.put(key, token, self._hold + 10)
        await asyncio.sleep(self._hold)
        if await self._co.take(key, token) and user_id not in await self._state.presence_members(app.id, channel):
            await self._emit(app, {"name": "member_removed", "channel": channel, "user_id": user_id})

    def client_event(self, app: App, channel: str, event: str, data: Any, socket_id: str, user_id: str | None) -> None:
        """A client event was relayed on a private or presence channel."""
        if not self._wants(app, "client_event"):
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
        if self._wants(app, "cache_miss"):
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
        """Let held decisions finish (a drained node's last vacated/removed still go out), then stop."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self._hold + 2.0)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
