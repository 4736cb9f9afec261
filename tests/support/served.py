"""A `hub serve` with a metrics port, and reading its metrics: for tests that watch counters move."""

# ruff: noqa: ASYNC109  -- a per-call deadline in seconds is this test helper's point

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pusher
from prometheus_client.parser import text_string_to_metric_families

from tests.support.ports import LOOPBACK, free_port
from tests.support.processes import ManagedProcess, http_ready, hub_command
from tests.support.topology import APP_ID, APP_KEY, APP_SECRET, write_apps_file

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Served:
    """A running `hub serve` with its ports."""

    process: ManagedProcess
    port: int
    metrics_port: int

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def sdk(self, secret: str = APP_SECRET) -> pusher.Pusher:
        return pusher.Pusher(app_id=APP_ID, key=APP_KEY, secret=secret, host=LOOPBACK, port=self.port, ssl=False)


def start_served(directory: Path, *extra: str) -> Served:
    """`hub serve` with the test apps, a metrics port and its logs captured (so: not a terminal)."""
    port, metrics_port = free_port(), free_port()
    argv = hub_command(
        "serve",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
        "--apps-file",
        str(write_apps_file(directory)),
        *extra,
    )
    process = ManagedProcess(argv, name=f"hub-observed-{port}").start()
    try:
        process.wait_ready(http_ready(f"http://{LOOPBACK}:{port}/ready"))
    except BaseException:
        process.close()
        raise
    return Served(process, port, metrics_port)


async def get(url: str) -> tuple[int, str, str]:
    """Status, content type and body text of a GET."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, response.content_type, await response.text()


async def scrape(served: Served) -> Samples:
    """Every sample of GET /metrics on the metrics port, keyed by name and labels."""
    status, _, text = await get(f"http://{LOOPBACK}:{served.metrics_port}/metrics")
    assert status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the labelled child does not exist yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)
