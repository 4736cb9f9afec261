"""``pusher_internal:subscription_count``: the cluster-wide count, at most once a second per channel.

Each node that changes a channel's count schedules one report; a shared once-per-second claim makes
the nodes take turns, and the report reads the count when it is sent, so it is never stale.
"""

from __future__ import annotations

import asyncio

import structlog

from hub.apps import App
from hub.protocol.channels import ChannelKind, channel_type
from hub.protocol.messages import dumps
from hub.state.base import StateUnavailable
from hub.state.coordination import Coordination
from hub.webhooks.emitter import Webhooks
from hub.ws.context import NodeContext

log = structlog.get_logger("hub.ws")

INTERVAL_SECONDS = 1.0


class SubscriptionCounts:
    """Coalesces count changes into reports to the channel's subscribers and the webhook."""

    def __init__(self, ctx: NodeContext, coordination: Coordination, webhooks: Webhooks) -> None:
        self._ctx = ctx
        self._co = coordination
        self._webhooks = webhooks
        self._pending: dict[tuple[str, str], asyncio.Task[None]] = {}

    def changed(self, app: App, channel: str) -> None:
        """A socket joined or left the channel on this node."""
        kind = channel_type(channel).kind
        if not app.enable_subscription_count or kind in (ChannelKind.PRESENCE, ChannelKind.SERVER_TO_USER):
            return
        key = (app.id, channel)
        if key not in self._pending:
            self._pending[key] = asyncio.get_running_loop().create_task(self._report(app, channel))

    async def _report(self, app: App, channel: str) -> None:
        try:
            # Another node reported within the last second: wait for its claim to lapse, then report the
            # count as it is by then (which includes this node's change).
            for _ in range(8):
                if await self._co.claim(f"subcount:{app.id}:{channel}", INTERVAL_SECONDS):
                    break
                await asyncio.sleep(INTERVAL_SECONDS / 4)
            count = await self._ctx.state.channel_subscriptions(app.id, channel)
        except StateUnavailable:
            log.warning("state_unavailable", op="subscription_count", app_id=app.id, channel=channel)
            return
        finally:
            self._pending.pop((app.id, channel), None)
        await self._ctx.publish(
            app.id, channel, "pusher_internal:subscription_count", dumps({"subscription_count": count})
        )
        await self._webhooks.subscription_count(app, channel, count)

    async def close(self) -> None:
        """Cancel reports not sent yet."""
        for task in list(self._pending.values()):
            task.cancel()
        await asyncio.gather(*self._pending.values(), return_exceptions=True)
