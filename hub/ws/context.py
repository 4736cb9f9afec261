"""What the WebSocket node's parts share: the broker, the state, the local registry and the metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from hub.apps import App
from hub.broker.base import Broker, BrokerUnavailable
from hub.broker.envelope import event_envelope
from hub.config import Settings
from hub.metrics import Metrics
from hub.state.base import ClusterState
from hub.state.coordination import Coordination
from hub.tap import Tap
from hub.webhooks.emitter import Webhooks
from hub.ws.connection import Connection
from hub.ws.local_channels import LocalChannels

if TYPE_CHECKING:
    from hub.ws.subscription_count import SubscriptionCounts

log = structlog.get_logger("hub.ws")


@dataclass
class NodeContext:
    """Dependencies of the node's message handlers, built once per node."""

    settings: Settings
    broker: Broker
    state: ClusterState
    metrics: Metrics
    coordination: Coordination
    webhooks: Webhooks
    local: LocalChannels = field(default_factory=LocalChannels)
    counts: SubscriptionCounts | None = None
    tap: Tap = field(default_factory=lambda: Tap(""))

    def count_changed(self, app: App, channel: str) -> None:
        """A socket joined or left ``channel`` here: schedule a subscription count report."""
        if self.counts is not None:
            self.counts.changed(app, channel)

    @property
    def node_id(self) -> str:
        """This node's cluster id."""
        return self.settings.node_id

    async def join_local(self, conn: Connection, channel: str) -> None:
        """Add the socket to the channel here; the first local socket subscribes the node to the topic."""
        app_id = conn.app.id
        if self.local.add(app_id, channel, conn):
            self.metrics.channels.labels(app_id).inc()
            await self.broker.subscribe(app_id, channel)
        self.metrics.subscriptions.labels(app_id).inc()

    def leave_local(self, conn: Connection, channel: str) -> None:
        """Remove the socket from the channel here; the last one unsubscribes the node."""
        app_id = conn.app.id
        if self.local.remove(app_id, channel, conn):
            self.metrics.channels.labels(app_id).dec()
            self.broker.unsubscribe(app_id, channel)
        self.metrics.subscriptions.labels(app_id).dec()

    async def publish(
        self,
        app_id: str,
        channel: str,
        event: str,
        data: Any,
        *,
        except_socket: str | None = None,
        user_id: str | None = None,
    ) -> bool:
        """Publish an event from this node; False (logged) when the broker refused it (the broker counts it)."""
        envelope = event_envelope(
            app_id, channel, event, data, origin_node=self.node_id, except_socket=except_socket, user_id=user_id
        )
        try:
            await self.broker.publish(envelope)
        except BrokerUnavailable as exc:
            log.warning("publish_failed", app_id=app_id, channel=channel, pusher_event=event, error=str(exc))
            return False
        return True
