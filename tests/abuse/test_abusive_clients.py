"""Abusive clients do not hurt the others: each abuse meets its limit, its protocol answer and its metric.

Every case runs one `hub serve` process, a well-behaved subscriber/publisher pair on 127.0.0.1
(tests/support/well_behaved.py) and an abuser process on 127.0.0.2 (tests/support/abusers.py),
bounded in count and time. It prints the well-behaved client's delivery p99 before and during the
abuse (the README's Reliability section quotes these lines) and fails if any of its events is lost,
any of its publishes refused, or its p99 passes one second: the abuse must cost the others little,
not nothing, on a two-core machine the abuser shares.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import re
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.ports import LOOPBACK, free_port
from tests.support.processes import REPO_ROOT, ManagedProcess, http_ready, hub_command
from tests.support.topology import APP_ID, APP_KEY, APP_SECRET
from tests.support.well_behaved import WellBehaved, Window

P99_BOUND = 1.0


class Hub:
    """One `hub serve` with a metrics port; ``refusals(limit)`` reads hub_limit_refusals_total."""

    def __init__(self, *flags: str) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        argv = hub_command(
            "serve", "--host", LOOPBACK, "--port", str(self.port), "--metrics-port", str(self.metrics_port), *flags
        )
        # The default app, with the numeric id the test helpers sign for.
        env = {"PUSHER_APP_ID": APP_ID, "PUSHER_APP_KEY": APP_KEY, "PUSHER_APP_SECRET": APP_SECRET}
        self.process = ManagedProcess(argv, env=env, name=f"hub-abuse-{self.port}").start()
        self.process.wait_ready(http_ready(f"http://{LOOPBACK}:{self.port}/ready"))

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples whose labels include ``labels``."""
        text = urllib.request.urlopen(f"http://{LOOPBACK}:{self.metrics_port}/metrics", timeout=5).read().decode()
        total = 0.0
        for line in text.splitlines():
            match = re.match(rf"^{name}(?:{{(.*)}})? (\S+)$", line)
            if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
                total += float(match.group(2))
        return total

    def refusals(self, limit: str) -> float:
        """How often ``limit`` refused or throttled something."""
        return self.metric("hub_limit_refusals_total", limit=limit)

    def close(self) -> None:
        """Stop the hub by its pid."""
        self.process.close()


@contextlib.asynccontextmanager
async def hub_and_good_client(*flags: str) -> AsyncIterator[tuple[Hub, WellBehaved, Window]]:
    """A hub with ``flags``, a well-behaved client on it and its undisturbed baseline."""
    hub = Hub(*flags)
    try:
        async with WellBehaved(hub.port) as good:
            baseline = await good.measure(2.0)
            yield hub, good, baseline
    finally:
        hub.close()


async def abuse(case: str, hub: Hub, size: float) -> dict[str, Any]:
    """Run one abuser process to its end (bounded by ``size``) and return what it reports."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.abusers",
        case,
        "--port",
        str(hub.port),
        "--size",
        str(size),
        cwd=str(REPO_ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=90)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, err.decode()[-3000:]
    result: dict[str, Any] = json.loads(out)
    return result


async def report(case: str, baseline: Window, during: Window, good: WellBehaved, detail: str) -> None:
    """Print the figures, then check the well-behaved client lost nothing and stayed under the bound."""
    await good.settle()
    print(
        f"\n[abuse] {case}: well-behaved p99 {during.p99 * 1000:.1f} ms during "
        f"(baseline {baseline.p99 * 1000:.1f} ms; p50 {during.p50 * 1000:.1f} ms over {len(during.latencies)} "
        f"events); {detail}"
    )
    assert not good.lost, f"{len(good.lost)} events answered 200 never reached the well-behaved subscriber"
    assert not good.refused, f"the well-behaved publisher was refused: {good.refused[:10]}"
    assert during.p99 < P99_BOUND


async def test_a_connection_flood_from_one_address_gets_429_past_its_rate() -> None:
    async with hub_and_good_client("--max-connects-per-ip", "50") as (hub, good, baseline):
        with good.window() as during:
            statuses = (await abuse("flood", hub, 5.0))["statuses"]

        assert statuses.get("429", 0) > 0 and hub.refusals("connects_per_address") == statuses["429"]
        assert statuses.get("101", 0) <= 50 * 7, f"at most 50 a second get through: {statuses}"
        detail = f"{sum(statuses.values())} connects in 5 s from one address: {statuses}"
        await report("connection flood", baseline, during, good, detail)


async def test_a_socket_subscribing_to_tens_of_thousands_of_channels_is_stopped_at_its_limit() -> None:
    async with hub_and_good_client() as (hub, good, baseline):
        with good.window() as during:
            result = await abuse("channels", hub, 20_000)

        assert result["answers"] == {"succeeded": 1000, "LimitReached": 19_000}
        assert hub.refusals("channels_per_socket") == 19_000
        detail = (
            f"1000 joined, 19000 refused LimitReached, all answered in {result['seconds']:.1f} s "
            f"(reads slowed {hub.refusals('client_bytes'):.0f} times)"
        )
        await report("20,000 subscriptions on one socket", baseline, during, good, detail)


async def test_maximum_size_frames_as_fast_as_possible_are_slowed_to_the_sockets_budget() -> None:
    async with hub_and_good_client() as (hub, good, baseline):
        read_before = hub.metric("hub_ws_received_bytes_total")
        with good.window() as during:
            abuser = asyncio.create_task(abuse("frames", hub, 6.0))
            await asyncio.sleep(6.0)
            read = await asyncio.to_thread(hub.metric, "hub_ws_received_bytes_total") - read_before
            result = await abuser

        budget = 256 * 1024 * (6 + 2)  # six seconds at 256 KB/s plus the two-second burst
        assert read <= budget * 1.2, f"the node read {read / 1024:.0f} KB in 6 s"
        assert hub.refusals("client_bytes") > 0
        detail = f"the abuser queued {result['sent_bytes'] / 1024:.0f} KB in 6 s, the node read {read / 1024:.0f} KB"
        await report("maximum-size frames", baseline, during, good, detail)


async def test_slowloris_heads_are_refused_past_the_pending_limit_and_cut_at_the_request_timeout() -> None:
    async with hub_and_good_client("--max-pending-connections", "200", "--http-request-timeout", "3") as (
        hub,
        good,
        baseline,
    ):
        with good.window() as during:
            result = await abuse("slow_heads", hub, 500)

        answers = result["answers"]
        assert answers.get("503", 0) >= 250 and answers.get("408", 0) >= 150, answers
        assert hub.refusals("pending_handshakes") == answers["503"]
        assert hub.refusals("request_timeout") == answers["408"]
        detail = f"500 slow request heads: {answers} within {result['seconds']:.1f} s"
        await report("slowloris", baseline, during, good, detail)


async def test_slow_api_bodies_meet_the_api_connection_limit_and_the_body_timeout() -> None:
    async with hub_and_good_client("--max-api-connections", "40", "--http-request-timeout", "3") as (
        hub,
        good,
        baseline,
    ):
        with good.window() as during:
            answers = (await abuse("slow_bodies", hub, 200))["answers"]

        # The well-behaved publisher holds one of the 40 API connections itself.
        assert answers.get("503", 0) >= 150 and answers.get("408", 0) >= 1, answers
        assert hub.refusals("api_connections") == answers["503"]
        await report("slow API bodies", baseline, during, good, f"200 slow bodies: {answers}")


async def test_a_burst_of_bad_signatures_gets_429_past_the_per_address_limit() -> None:
    async with hub_and_good_client("--max-bad-signatures-per-second", "50") as (hub, good, baseline):
        with good.window() as during:
            statuses = (await abuse("bad_signatures", hub, 5.0))["statuses"]

        assert statuses.get("429", 0) > 0 and statuses.get("401", 0) <= 50 * 7, statuses
        assert hub.refusals("bad_signatures") == statuses["429"]
        detail = f"{sum(statuses.values())} forged publishes in 5 s: {statuses}"
        await report("bad signatures", baseline, during, good, detail)


async def _prompt_upgrade(port: int) -> bytes:
    """One WebSocket upgrade whose whole head goes out at once; the status line of the answer."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(
            f"GET /app/{APP_KEY}?protocol=7 HTTP/1.1\r\nHost: hub\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        return await asyncio.wait_for(reader.readline(), 10.0)
    finally:
        writer.close()


async def test_a_burst_of_prompt_connections_past_the_pending_limit_is_not_refused() -> None:
    # A reconnect storm: the node accepts far more connections in one turn than the bound before it reads
    # any of them; none of them is slow, so none may be refused as one.
    async with hub_and_good_client("--max-pending-connections", "50") as (hub, good, baseline):
        with good.window() as during:
            lines = await asyncio.gather(*(_prompt_upgrade(hub.port) for _ in range(1500)))

        statuses = collections.Counter(line.decode(errors="replace").strip() for line in lines)
        assert statuses == {"HTTP/1.1 101 Switching Protocols": 1500}, statuses
        assert hub.refusals("pending_handshakes") == 0
        await report("1,500 prompt connections at once, 50 may be slow", baseline, during, good, "all 101")


@pytest.mark.parametrize("flag", ["--max-pending-connections", "--max-api-connections"])
def test_limits_below_one_are_a_configuration_error(flag: str) -> None:
    process = ManagedProcess(hub_command("serve", "--port", str(free_port()), flag, "0"), name="hub-bad-limit").start()
    try:
        deadline = time.monotonic() + 15
        while process.is_running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.returncode == 2
    finally:
        process.close()
