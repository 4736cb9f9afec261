"""Prometheus metrics of one node: one registry per node, every name prefixed ``hub_``.

Label sets stay bounded: ``app_id`` (apps are configured, not user-created), a fixed ``reason`` or
``kind`` vocabulary, the HTTP ``endpoint`` template and status code. Never a channel or socket label.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

# Latency buckets span the sub-millisecond fan-out of a small channel up to multi-second stalls.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


def _task_count() -> float:
    """Tasks of the running loop; metrics are rendered inside it (0 when asked from outside a loop)."""
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:
        return 0.0


@dataclass
class Metrics:
    """Every metric a node exports, registered in its own registry."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        ProcessCollector(namespace="hub", registry=r)
        PlatformCollector(registry=r)
        self.asyncio_tasks = Gauge("hub_asyncio_tasks", "asyncio tasks alive in the node's event loop.", registry=r)
        self.asyncio_tasks.set_function(_task_count)
        self.info = Gauge(
            "hub_node_info", "Constant 1, labelled with this node's id and role.", ["node_id", "role"], registry=r
        )
        self.ready = Gauge(
            "hub_ready", "1 while the node accepts traffic, 0 while draining or disconnected.", registry=r
        )

        self.connections = Gauge("hub_connections", "WebSocket connections open on this node.", ["app_id"], registry=r)
        self.new_connections = Counter(
            "hub_new_connections_total", "WebSocket connections accepted.", ["app_id"], registry=r
        )
        self.deflate_connections = Counter(
            "hub_ws_deflate_connections_total",
            "WebSocket connections accepted with permessage-deflate negotiated.",
            ["app_id"],
            registry=r,
        )
        self.disconnections = Counter(
            "hub_disconnections_total",
            "WebSocket connections closed, by reason.",
            ["app_id", "reason"],
            registry=r,
        )
        self.connection_errors = Counter(
            "hub_connection_errors_total",
            "WebSocket connections refused at open, by Pusher close code.",
            ["code"],
            registry=r,
        )
        self.subscriptions = Gauge(
            "hub_subscriptions", "Socket-channel subscriptions on this node.", ["app_id"], registry=r
        )
        self.channels = Gauge("hub_channels", "Channels with at least one local subscriber.", ["app_id"], registry=r)
        self.ws_messages_received = Counter(
            "hub_ws_messages_received_total", "WebSocket frames received from clients.", ["app_id"], registry=r
        )
        self.ws_messages_sent = Counter(
            "hub_ws_messages_sent_total", "WebSocket frames sent to clients.", ["app_id"], registry=r
        )
        self.ws_received_bytes = Counter(
            "hub_ws_received_bytes_total", "Payload bytes received from clients.", ["app_id"], registry=r
        )
        self.ws_sent_bytes = Counter("hub_ws_sent_bytes_total", "Frame bytes sent to clients.", ["app_id"], registry=r)
        self.client_errors = Counter(
            "hub_client_errors_total",
            "pusher:error messages sent to clients, by error code.",
            ["code"],
            registry=r,
        )
        self.slow_consumer_disconnects = Counter(
            "hub_slow_consumer_disconnects_total",
            "Sockets closed because their send buffer passed the limit.",
            ["app_id"],
            registry=r,
        )
        self.rate_limited = Counter(
            "hub_rate_limited_total",
            "Requests or client events refused by a rate limit.",
            ["app_id", "kind"],
            registry=r,
        )
        self.limit_refusals = Counter(
            "hub_limit_refusals_total",
            "Connections, requests, subscriptions or reads refused or throttled by a node limit, by limit.",
            ["limit"],
            registry=r,
        )

        self.published_events = Counter(
            "hub_published_events_total",
            "Events published into the broker, by source (http, client).",
            ["app_id", "source"],
            registry=r,
        )
        self.deliveries = Counter(
            "hub_deliveries_total", "Event frames written to client sockets by fan-out.", ["app_id"], registry=r
        )
        self.fanout_seconds = Histogram(
            "hub_fanout_duration_seconds",
            "Time to write one published message to every local subscriber.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.pubsub_lag_seconds = Histogram(
            "hub_pubsub_lag_seconds",
            "Time from publish on any node to receipt on this node.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        self.http_requests = Counter(
            "hub_http_requests_total",
            "HTTP API requests, by endpoint and status code.",
            ["endpoint", "status"],
            registry=r,
        )
        self.http_request_seconds = Histogram(
            "hub_http_request_duration_seconds",
            "HTTP API request handling time.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.http_received_bytes = Counter("hub_http_received_bytes_total", "HTTP API request body bytes.", registry=r)
        self.http_sent_bytes = Counter("hub_http_sent_bytes_total", "HTTP API response body bytes.", registry=r)

        self.broker_connected = Gauge(
            "hub_broker_connected", "1 while the broker (Redis) connection is healthy.", registry=r
        )
        self.broker_reconnects = Counter(
            "hub_broker_reconnects_total", "Broker (Redis) reconnections after a failure.", registry=r
        )
        self.broker_publish_failures = Counter(
            "hub_broker_publish_failures_total", "Publishes the broker did not accept.", registry=r
        )
        self.broker_subscribed_channels = Gauge(
            "hub_broker_subscribed_channels", "Broker channels this node is subscribed to.", registry=r
        )
        self.broker_replayed = Counter(
            "hub_broker_replayed_total",
            "Events a resubscribed node delivered from the replay buffer because pub/sub had not brought them.",
            registry=r,
        )
        self.broker_resubscribe_seconds = Histogram(
            "hub_broker_resubscribe_duration_seconds",
            "Time from losing a Redis pub/sub connection to every channel resubscribed and caught up.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
            registry=r,
        )
        self.redis_topology = Gauge(
            "hub_redis_topology_info",
            "The Redis deployment in use (kind: single, sentinel, cluster).",
            ["kind"],
            registry=r,
        )
        self.redis_primary_up = Gauge(
            "hub_redis_primary_up",
            "1 while this node's pub/sub and publish connections to the Redis primary at address work.",
            ["address"],
            registry=r,
        )
        self.redis_topology_refreshes = Counter(
            "hub_redis_topology_refreshes_total",
            "Times the Redis primaries were looked up again (failover, slot moved, connection lost).",
            registry=r,
        )
        self.reaped_nodes = Counter(
            "hub_reaped_nodes_total", "Dead nodes whose sockets this node removed from cluster state.", registry=r
        )

        self.webhooks_sent = Counter(
            "hub_webhooks_sent_total", "Webhook requests answered 2xx.", ["app_id"], registry=r
        )
        self.webhooks_failed = Counter(
            "hub_webhooks_failed_total", "Webhook attempts that failed (timeout or non-2xx).", ["app_id"], registry=r
        )
        self.webhooks_retried = Counter(
            "hub_webhooks_retried_total", "Webhook deliveries scheduled for another attempt.", ["app_id"], registry=r
        )
        self.webhooks_dropped = Counter(
            "hub_webhooks_dropped_total",
            "Webhooks given up after the retry window.",
            ["app_id"],
            registry=r,
        )
        self.webhook_queue_depth = Gauge("hub_webhook_queue_depth", "Webhooks waiting for delivery.", registry=r)
        self.console_streams = Gauge(
            "hub_console_streams", "Console debug streams open on this node.", ["app_id"], registry=r
        )
        self.console_not_shown = Counter(
            "hub_console_events_not_shown_total",
            "Tapped events this node did not send to console streams: over --console-max-events.",
            ["app_id"],
            registry=r,
        )
        self.webhook_queue_oldest_age_seconds = Gauge(
            "hub_webhook_queue_oldest_age_seconds", "Age of the oldest webhook waiting for delivery.", registry=r
        )

        self.apps = Gauge("hub_apps", "Apps this node serves (enabled or not).", registry=r)
        self.app_store_errors = Counter(
            "hub_app_store_errors_total",
            "App store loads that failed or held an invalid app (the last good apps stay served).",
            ["store"],
            registry=r,
        )

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)
