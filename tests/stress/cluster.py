"""The cluster the soak and chaos suites load: a real redis-server, two `hub ws`, one `hub ingest`, webhooks on.

Every node has a metrics port; the webhook receiver (tests/support/webhook_receiver.py) records the
occupancy and membership webhooks. ``Sampler`` reads RSS, open fds and asyncio tasks of each node
process and Redis's memory and key count, once per ``every`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import statistics
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from tests.support.ports import LOOPBACK, free_port
from tests.support.processes import ManagedProcess
from tests.support.redis_server import RedisServer
from tests.support.request_signing import signed_params
from tests.support.topology import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    Topology,
    start_ingest_node,
    start_ws_node,
    write_apps_file,
)
from tests.support.webhook_receiver import WebhookReceiver

WEBHOOK_TYPES = ["channel_occupied", "channel_vacated", "member_added", "member_removed"]


@dataclass
class Cluster:
    """The running cluster and where to reach each part."""

    topology: Topology
    receiver: WebhookReceiver
    metrics_ports: dict[int, int] = field(default_factory=dict)  # pid -> metrics port

    @property
    def ws_urls(self) -> list[str]:
        """WebSocket URLs of the ws nodes."""
        return [f"ws://{LOOPBACK}:{port}/app/{APP_KEY}?protocol=7" for port in self.topology.ws_ports]

    @property
    def api_url(self) -> str:
        """Base URL of the ingest node."""
        return f"http://{LOOPBACK}:{self.topology.api_port}"

    def start_ws(self, port: int, *extra: str) -> ManagedProcess:
        """(Re)start a ws node on ``port`` with a metrics port."""
        metrics = free_port()
        process = start_ws_node(self.topology, port, "--metrics-port", str(metrics), *extra)
        self.metrics_ports[process.pid] = metrics
        return process

    def start_ingest(self, *extra: str) -> ManagedProcess:
        """(Re)start the ingest node on its port with a metrics port."""
        metrics = free_port()
        process = start_ingest_node(self.topology, self.topology.api_port, "--metrics-port", str(metrics), *extra)
        self.metrics_ports[process.pid] = metrics
        return process

    def live(self) -> list[ManagedProcess]:
        """The hub processes running now."""
        return [p for p in self.topology.processes if p.is_running()]

    def metric(self, process: ManagedProcess, name: str) -> float:
        """Sum of a metric's samples on one node."""
        port = self.metrics_ports[process.pid]
        text = urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=5).read().decode()
        return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))

    def api_get(self, path: str, **query: str) -> Any:
        """A signed GET on the HTTP API, decoded."""
        params = signed_params("GET", path, b"", extra=query)
        url = f"{self.api_url}{path}?" + "&".join(f"{k}={v}" for k, v in params.items())
        return json.loads(urllib.request.urlopen(url, timeout=5).read())

    def close(self) -> None:
        """Stop every process this cluster started, by pid."""
        self.topology.close()
        self.receiver.close()


@contextlib.contextmanager
def running_cluster(workdir: Path, *ws_extra: str) -> Iterator[Cluster]:
    """Start Redis, 2 ws nodes, an ingest node and the webhook receiver; stop them all on exit."""
    receiver = WebhookReceiver({APP_KEY: (APP_ID, APP_SECRET)}).start()
    app = {
        "id": APP_ID,
        "key": APP_KEY,
        "secret": APP_SECRET,
        "max_presence_members_per_channel": 1000,
        "webhooks": [{"url": receiver.url("/soak"), "event_types": WEBHOOK_TYPES}],
    }
    redis = RedisServer().start()
    topology = Topology("cluster", [], free_port(), redis=redis, apps_file=write_apps_file(workdir, [app]))
    cluster = Cluster(topology, receiver)
    try:
        for _ in range(2):
            port = free_port()
            topology.ws_processes.append(cluster.start_ws(port, *ws_extra))
            topology.ws_ports.append(port)
        cluster.start_ingest()
        yield cluster
    finally:
        cluster.close()


def _rss_and_fds(pid: int) -> tuple[float, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Sample:
    """One reading of every node and of Redis."""

    at: float
    nodes: dict[str, dict[str, float]]
    redis_used_mb: float
    redis_keys: int


@dataclass
class Sampler:
    """Samples the cluster every ``every`` seconds while running."""

    cluster: Cluster
    every: float
    samples: list[Sample] = field(default_factory=list)

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            await self.sample_now()
            await asyncio.sleep(self.every)

    async def sample_now(self) -> None:
        """One sample, on a Redis connection of its own (Redis may have restarted since the last)."""
        client = aioredis.Redis.from_url(self.cluster.topology.redis.url, socket_timeout=2)
        try:
            await self.sample(client)
        finally:
            await client.aclose()

    async def sample(self, client: aioredis.Redis) -> None:
        """Take one sample (a node or Redis that is down right now is left out)."""
        nodes: dict[str, dict[str, float]] = {}
        for process in self.cluster.live():
            with contextlib.suppress(OSError, AttributeError, ValueError):
                rss, fds = _rss_and_fds(process.pid)
                tasks = await asyncio.to_thread(self.cluster.metric, process, "hub_asyncio_tasks")
                nodes[process.name] = {"rss_mb": rss, "fds": fds, "tasks": tasks}
        used, keys = 0.0, 0
        with contextlib.suppress(Exception):
            info = await client.info("memory")
            used, keys = int(info["used_memory"]) / 2**20, int(await client.dbsize())
        self.samples.append(Sample(time.time(), nodes, used, keys))

    def series(self, node: str, key: str) -> list[tuple[float, float]]:
        """(minutes since the first sample, value) of one node's reading."""
        if not self.samples:
            return []
        start = self.samples[0].at
        return [((s.at - start) / 60, s.nodes[node][key]) for s in self.samples if node in s.nodes]

    def rss_summary(self) -> dict[str, dict[str, float]]:
        """Per node: RSS at the first and last sample, and the least-squares slope in MB per minute."""
        summary = {}
        names = {name for s in self.samples for name in s.nodes}
        for name in sorted(names):
            points = self.series(name, "rss_mb")
            if len(points) < 2:
                continue
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            slope = statistics.linear_regression(xs, ys).slope if len(set(xs)) > 1 else 0.0
            summary[name] = {"start_mb": ys[0], "end_mb": ys[-1], "max_mb": max(ys), "slope_mb_per_min": slope}
        return summary
