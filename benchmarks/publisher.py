"""The backend side: events published through the real HTTP API, signed like the Pusher SDKs sign them.

Requests are signed with ``hub.protocol.signatures`` (the smoke test checks the result against the
``pusher`` SDK's own signing) and sent over an aiohttp session with keep-alive connections. Paced
publishing stamps each event with its *scheduled* time, so a publisher that falls behind shows up as
latency instead of silently slowing the test (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing
import resource
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlencode

import aiohttp

from benchmarks.histogram import Histogram
from benchmarks.procstats import raise_fd_limit
from benchmarks.wsclient import EVENT_NAME
from hub.protocol.signatures import api_string_to_sign, sign


def signed_query(method: str, path: str, body: bytes, key: str, secret: str, timestamp: int | str | None = None) -> str:
    """The query string of a signed HTTP API request (auth_key, auth_timestamp, auth_version, body_md5, signature)."""
    params = [
        ("auth_key", key),
        ("auth_timestamp", str(int(time.time()) if timestamp is None else timestamp)),
        ("auth_version", "1.0"),
    ]
    if body:
        params.append(("body_md5", hashlib.md5(body).hexdigest()))
    signature = sign(secret, api_string_to_sign(method, path, params))
    return urlencode([*params, ("auth_signature", signature)])


@dataclass
class PublishStats:
    """What a publisher did: requests by outcome and how long the HTTP calls took."""

    attempted: int = 0
    ok: int = 0
    failed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    http_latency: Histogram = field(default_factory=Histogram)
    elapsed_s: float = 0.0
    cpu_s: float = 0.0

    def merge(self, other: PublishStats) -> None:
        """Add another publisher's counts."""
        self.attempted += other.attempted
        self.ok += other.ok
        self.failed += other.failed
        for status, n in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + n
        self.http_latency.merge(other.http_latency)
        self.elapsed_s = max(self.elapsed_s, other.elapsed_s)
        self.cpu_s += other.cpu_s


class Publisher:
    """Triggers events on one app through ``POST /apps/{id}/events``."""

    def __init__(self, base_url: str, app_id: str, key: str, secret: str, *, connections: int = 64) -> None:
        """Nothing connects until the ``async with``; at most ``connections`` requests run at once."""
        self.base_url = base_url.rstrip("/")
        self.app_id = app_id
        self.key = key
        self.secret = secret
        self.path = f"/apps/{app_id}/events"
        self.stats = PublishStats()
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Publisher:
        """Open the keep-alive session."""
        connector = aiohttp.TCPConnector(limit=self._connections, force_close=False, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()

    async def trigger(self, channel: str, data: str, name: str = EVENT_NAME) -> int:
        """Publish one event; record and return the HTTP status (0 when the request failed outright)."""
        assert self._session is not None, "use Publisher as an async context manager"
        body = json.dumps({"name": name, "channel": channel, "data": data}, separators=(",", ":")).encode()
        url = f"{self.base_url}{self.path}?{signed_query('POST', self.path, body, self.key, self.secret)}"
        stats = self.stats
        stats.attempted += 1
        started = time.perf_counter_ns()
        try:
            async with self._session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError):
            status = 0
        stats.http_latency.record((time.perf_counter_ns() - started) // 1000)
        stats.statuses[str(status)] = stats.statuses.get(str(status), 0) + 1
        if status == 200:
            stats.ok += 1
        else:
            stats.failed += 1
        return status

    async def publish_paced(
        self,
        rate: float,
        duration: float,
        channel_for: Callable[[int], str],
        step: int = 0,
        padding: str = "",
        *,
        on_answer: Callable[[int, int], None] | None = None,
    ) -> int:
        """Publish ``rate`` events/s for ``duration`` s, each stamped with its scheduled time; return the count.

        Events are launched on schedule without waiting for earlier requests (up to the connection limit they
        run in parallel, then queue in the connector), so an overloaded API shows up as latency. With
        ``on_answer``, each event also carries its sequence number (``"n"``, 0-based in this call) and
        ``on_answer(n, status)`` is called when the API answered it.
        """
        total = max(1, round(rate * duration))
        loop = asyncio.get_running_loop()
        start_wall = time.time_ns()
        start = loop.time()
        tasks: set[asyncio.Task[int]] = set()
        sent = 0
        interval_ns = 1e9 / rate
        while sent < total:
            due = min(total, int((loop.time() - start) * rate) + 1)
            while sent < due:
                stamp = start_wall + int(sent * interval_ns)
                numbered = f',"n":{sent}' if on_answer is not None else ""
                data = f'{{"t":{stamp},"s":{step}{numbered}{padding}}}'
                task = loop.create_task(self.trigger(channel_for(sent), data))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                if on_answer is not None:
                    task.add_done_callback(_answered(on_answer, sent))
                sent += 1
            if sent < total:
                await asyncio.sleep(max(0.0, start + sent / rate - loop.time()))
        if tasks:
            await asyncio.gather(*tasks)
        self.stats.elapsed_s = loop.time() - start
        return total


def _answered(on_answer: Callable[[int, int], None], n: int) -> Callable[[asyncio.Task[int]], None]:
    """A done callback telling ``on_answer`` event ``n``'s HTTP status."""

    def done(task: asyncio.Task[int]) -> None:
        on_answer(n, task.result())

    return done


async def _flood(base_url: str, app_id: str, key: str, secret: str, duration: float, concurrency: int) -> PublishStats:
    async with Publisher(base_url, app_id, key, secret, connections=concurrency) as publisher:
        deadline = time.monotonic() + duration
        started = time.monotonic()

        async def loop_one(i: int) -> None:
            while time.monotonic() < deadline:
                await publisher.trigger(f"ingest-{i % 8}", f'{{"t":{time.time_ns()},"s":0}}')

        await asyncio.gather(*(loop_one(i) for i in range(concurrency)))
        publisher.stats.elapsed_s = time.monotonic() - started
        return publisher.stats


def _flood_process(
    base_url: str, app_id: str, key: str, secret: str, duration: float, concurrency: int
) -> PublishStats:
    raise_fd_limit()
    stats = asyncio.run(_flood(base_url, app_id, key, secret, duration, concurrency))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stats.cpu_s = usage.ru_utime + usage.ru_stime
    return stats


async def flood(
    base_url: str, app_id: str, key: str, secret: str, *, duration: float, processes: int, concurrency: int
) -> PublishStats:
    """Publish as fast as the API answers from ``processes`` processes x ``concurrency`` requests in flight.

    Returns the merged stats; ``cpu_s`` is the publisher processes' own CPU time.
    """
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        futures = [
            loop.run_in_executor(pool, _flood_process, base_url, app_id, key, secret, duration, concurrency)
            for _ in range(processes)
        ]
        results = await asyncio.gather(*futures)
    merged = PublishStats()
    for stats in results:
        merged.merge(stats)
    return merged
