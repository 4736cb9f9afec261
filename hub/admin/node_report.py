"""Each node's stats heartbeat for the console's Cluster and Apps pages, read from its own metrics.

Every REPORT_SECONDS a node posts its role, readiness, connections, channels, deliveries and
publishes per second (overall and per app), fan-out p99 over the last interval, and the health of its
Redis connections to the NodeStatsBoard, so the console on any node shows every node.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from prometheus_client import Counter, Gauge, Histogram

from hub.metrics import Metrics
from hub.state.base import StateUnavailable
from hub.state.node_stats import NodePost, NodeStatsBoard

log = structlog.get_logger("hub.admin")

REPORT_SECONDS = 2.0
# Each post carries the node's last HISTORY reports of the charted figures, so a page opened now draws
# the last two minutes at once.
HISTORY = 60
CHARTED = ("connections", "deliveries_per_second", "published_per_second", "fanout_p99_ms")
# A node that has not posted for this long is shown as gone.
STALE_SECONDS = 3 * REPORT_SECONDS + 1.0


def _by_app(metric: Counter | Gauge) -> dict[str, float]:
    """Sum of a metric's samples per ``app_id`` label (the ``_created`` series skipped)."""
    totals: dict[str, float] = {}
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            app_id = sample.labels.get("app_id", "")
            totals[app_id] = totals.get(app_id, 0.0) + sample.value
    return totals


def _value(metric: Gauge) -> float:
    return sum(s.value for family in metric.collect() for s in family.samples)


def _buckets(histogram: Histogram) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) pairs of an unlabelled histogram."""
    return [
        (float(s.labels["le"]), s.value)
        for family in histogram.collect()
        for s in family.samples
        if s.name.endswith("_bucket")
    ]


def quantile_from_buckets(deltas: Iterable[tuple[float, float]], q: float) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` of cumulative counts; None without samples."""
    pairs = sorted(deltas)
    if not pairs or pairs[-1][1] <= 0:
        return None
    wanted = q * pairs[-1][1]
    for bound, count in pairs:
        if count >= wanted:
            return bound
    return pairs[-1][0]


class NodeReporter:
    """Computes this node's figures from its metrics, as differences since the previous report."""

    def __init__(
        self,
        node_id: str,
        role: str,
        metrics: Metrics,
        ready: Callable[[], bool],
        redis: Callable[[], str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = node_id
        self.role = role
        self._metrics = metrics
        self._ready = ready
        self._redis = redis
        self._clock = clock
        self._last_at = clock()
        self._last_deliveries = _by_app(metrics.deliveries)
        self._last_published = _by_app(metrics.published_events)
        self._last_fanout = _buckets(metrics.fanout_seconds)
        self._history: dict[str, deque[float | None]] = {name: deque(maxlen=HISTORY) for name in CHARTED}

    def figures(self) -> NodePost:
        """The figures to post now."""
        m = self._metrics
        now = self._clock()
        elapsed = max(1e-6, now - self._last_at)
        deliveries, published = _by_app(m.deliveries), _by_app(m.published_events)
        fanout = _buckets(m.fanout_seconds)
        previous = dict(self._last_fanout)
        p99 = quantile_from_buckets([(le, n - previous.get(le, 0.0)) for le, n in fanout], 0.99)
        connections, channels = _by_app(m.connections), _by_app(m.channels)
        apps: dict[str, dict[str, Any]] = {}
        for app_id in sorted(set(connections) | set(deliveries) | set(published)):
            apps[app_id] = {
                "connections": int(connections.get(app_id, 0)),
                "channels": int(channels.get(app_id, 0)),
                "deliveries_per_second": (deliveries.get(app_id, 0) - self._last_deliveries.get(app_id, 0)) / elapsed,
                "published_per_second": (published.get(app_id, 0) - self._last_published.get(app_id, 0)) / elapsed,
            }
        self._last_at, self._last_deliveries, self._last_published, self._last_fanout = (
            now,
            deliveries,
            published,
            fanout,
        )
        figures: NodePost = {
            "role": self.role,
            "ready": self._ready(),
            "redis": self._redis(),
            "connections": int(sum(connections.values())),
            "channels": int(sum(channels.values())),
            "deliveries_per_second": sum(a["deliveries_per_second"] for a in apps.values()),
            "published_per_second": sum(a["published_per_second"] for a in apps.values()),
            "fanout_p99_ms": None if p99 is None else p99 * 1000.0,
            "webhook_queue_depth": int(_value(m.webhook_queue_depth)),
            "memory_bytes": int(m.registry.get_sample_value("hub_process_resident_memory_bytes") or 0),
            "apps": apps,
        }
        for name, series in self._history.items():
            series.append(figures[name])
        figures["history"] = {name: list(series) for name, series in self._history.items()}
        return figures

    async def run(self, board: NodeStatsBoard, interval: float = REPORT_SECONDS) -> None:
        """Post every ``interval`` seconds until cancelled; an unreachable board is retried next time."""
        while True:
            try:
                await board.post(self.node_id, self.figures(), time.time())
            except StateUnavailable as exc:
                log.debug("node_report_failed", error=str(exc))
            await asyncio.sleep(interval)
