"""What operators watch: health and readiness, Prometheus metrics, JSON logs, and the SIGTERM drain.

A `hub serve` of this module runs with a metrics port and its output in a file (not a terminal), so
its logs must be JSON lines. Counters are compared before and after an action, so tests do not depend
on each other's traffic.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pusher
import pytest

from tests.support.js_clients import JsClients
from tests.support.names import unique
from tests.support.ports import LOOPBACK
from tests.support.served import Served, eventually, get, scrape, start_served, value
from tests.support.topology import APP_ID, APP_KEY


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    running = start_served(tmp_path_factory.mktemp("observed"))
    try:
        yield running
    finally:
        running.process.close()


async def raw_socket(session: aiohttp.ClientSession, port: int) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    """A raw WebSocket client past `pusher:connection_established`; returns it and its socket id."""
    ws = await session.ws_connect(f"ws://{LOOPBACK}:{port}/app/{APP_KEY}?protocol=7&client=test&version=1")
    hello = json.loads(await ws.receive_str(timeout=5))
    assert hello["event"] == "pusher:connection_established"
    return ws, json.loads(hello["data"])["socket_id"]


async def receive_event(ws: aiohttp.ClientWebSocketResponse, event: str) -> str:
    """The raw text of the next frame carrying `event` (skipping others)."""
    while True:
        text = await ws.receive_str(timeout=5)
        if json.loads(text).get("event") == event:
            return text


# --- health ----------------------------------------------------------------------------------------


async def test_root_answers_200(served: Served) -> None:
    status, _, body = await get(served.url("/"))

    assert (status, body) == (200, "OK")


async def test_ready_answers_200_while_serving(served: Served) -> None:
    status, content_type, body = await get(served.url("/ready"))

    assert status == 200
    assert content_type == "application/json"
    assert json.loads(body) == {"ready": True}


# --- metrics ---------------------------------------------------------------------------------------


async def test_metrics_port_serves_prometheus_text_with_the_hub_metrics(served: Served) -> None:
    status, content_type, _ = await get(f"http://{LOOPBACK}:{served.metrics_port}/metrics")
    names = {name for name, _ in await scrape(served)}

    assert status == 200
    assert content_type == "text/plain"
    for expected in (
        "hub_ready",
        "hub_node_info",
        "hub_fanout_duration_seconds_bucket",
        "hub_fanout_duration_seconds_count",
    ):
        assert expected in names
    assert value(await scrape(served), "hub_ready") == 1.0


async def test_main_port_does_not_serve_metrics(served: Served) -> None:
    status, _, _ = await get(served.url("/metrics"))

    assert status == 404


async def test_connection_subscription_and_channel_gauges_follow_clients(served: Served, js: JsClients) -> None:
    shared, solo = unique("gauge"), unique("gauge")
    before = await scrape(served)
    await js.connect("a", port=served.port, key=APP_KEY)
    await js.connect("b", port=served.port, key=APP_KEY)
    await js.subscribe("a", shared)
    await js.subscribe("b", shared)
    await js.subscribe("b", solo)

    async def gauges_are(connections: float, subscriptions: float, channels: float) -> bool:
        now = await scrape(served)
        return (
            value(now, "hub_connections", app_id=APP_ID) - value(before, "hub_connections", app_id=APP_ID),
            value(now, "hub_subscriptions", app_id=APP_ID) - value(before, "hub_subscriptions", app_id=APP_ID),
            value(now, "hub_channels", app_id=APP_ID) - value(before, "hub_channels", app_id=APP_ID),
        ) == (connections, subscriptions, channels)

    await eventually(lambda: gauges_are(2, 3, 2))
    await js.disconnect("b")
    await eventually(lambda: gauges_are(1, 1, 1))
    await js.disconnect("a")
    await eventually(lambda: gauges_are(0, 0, 0))


async def test_ws_messages_received_counts_every_client_frame_and_its_bytes(served: Served) -> None:
    frames = [json.dumps({"event": "pusher:ping", "data": {"n": i}}) for i in range(5)]
    async with aiohttp.ClientSession() as session:
        ws, _ = await raw_socket(session, served.port)
        before = await scrape(served)
        for frame in frames:
            await ws.send_str(frame)
            await receive_event(ws, "pusher:pong")
        after = await scrape(served)
        await ws.close()

    received = value(after, "hub_ws_messages_received_total", app_id=APP_ID) - value(
        before, "hub_ws_messages_received_total", app_id=APP_ID
    )
    received_bytes = value(after, "hub_ws_received_bytes_total", app_id=APP_ID) - value(
        before, "hub_ws_received_bytes_total", app_id=APP_ID
    )
    assert received == len(frames)
    assert received_bytes == sum(len(frame.encode()) for frame in frames)


async def test_ws_sent_bytes_and_fanout_histogram_grow_with_a_delivery(served: Served) -> None:
    channel = unique("sent")
    async with aiohttp.ClientSession() as session:
        ws, _ = await raw_socket(session, served.port)
        await ws.send_str(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
        await receive_event(ws, "pusher_internal:subscription_succeeded")
        before = await scrape(served)
        await asyncio.to_thread(served.sdk().trigger, channel, "measured", {"payload": "x" * 50})
        delivered = await receive_event(ws, "measured")
        after = await scrape(served)
        await ws.close()

    sent = value(after, "hub_ws_sent_bytes_total", app_id=APP_ID) - value(
        before, "hub_ws_sent_bytes_total", app_id=APP_ID
    )
    payload = len(delivered.encode())
    # A frame is the payload plus a 2-byte WebSocket header (payloads under 126 bytes are not this one).
    assert payload <= sent <= payload + 4
    assert value(after, "hub_fanout_duration_seconds_count") == value(before, "hub_fanout_duration_seconds_count") + 1
    assert value(after, "hub_pubsub_lag_seconds_count") == value(before, "hub_pubsub_lag_seconds_count") + 1
    assert (
        value(after, "hub_deliveries_total", app_id=APP_ID) == value(before, "hub_deliveries_total", app_id=APP_ID) + 1
    )


async def test_http_requests_are_counted_by_endpoint_and_status(served: Served) -> None:
    before = await scrape(served)

    with pytest.raises(pusher.errors.PusherBadAuth):
        await asyncio.to_thread(served.sdk(secret="wrong").trigger, "counted", "e", {})
    await asyncio.to_thread(served.sdk().trigger, "counted", "e", {})
    await asyncio.to_thread(served.sdk().trigger, "counted", "e", {})
    after = await scrape(served)

    def delta(status: str) -> float:
        name = "hub_http_requests_total"
        return value(after, name, endpoint="events", status=status) - value(
            before, name, endpoint="events", status=status
        )

    assert (delta("401"), delta("200")) == (1, 2)


# --- logs ------------------------------------------------------------------------------------------


async def test_logs_are_json_lines_with_app_id_and_socket_id(served: Served) -> None:
    channel = unique("private-logged")
    async with aiohttp.ClientSession() as session:
        ws, socket_id = await raw_socket(session, served.port)
        forged = {"channel": channel, "auth": f"{APP_KEY}:{'0' * 64}"}
        await ws.send_str(json.dumps({"event": "pusher:subscribe", "data": forged}))
        await receive_event(ws, "pusher:subscription_error")
        await ws.close()

    def logged() -> list[dict[str, Any]]:
        lines = [line for line in served.process.output().splitlines() if line.strip()]
        parsed = []
        for line in lines:
            try:
                parsed.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"log line is not JSON: {line!r}") from None
        return parsed

    async def refusal_logged() -> bool:
        return any(e.get("socket_id") == socket_id for e in logged())

    await eventually(refusal_logged)
    entry = next(e for e in logged() if e.get("socket_id") == socket_id)
    assert entry["event"] == "subscription_refused"
    assert entry["app_id"] == APP_ID
    assert entry["channel"] == channel
    assert entry["level"] == "info"
    assert "timestamp" in entry
    assert any(e.get("event") == "node_started" for e in logged())


# --- drain -----------------------------------------------------------------------------------------


async def test_sigterm_drains_readiness_503_clients_closed_4200_then_exit_0(tmp_path: Path, js: JsClients) -> None:
    served = await asyncio.to_thread(start_served, tmp_path, "--drain-seconds", "2")
    try:
        for cid in ("a", "b"):
            await js.connect(cid, port=served.port, key=APP_KEY)
            await js.subscribe(cid, "draining")
        mark = js.mark()

        served.process.send_signal(signal.SIGTERM)

        async def not_ready() -> bool:
            status, _, _ = await get(served.url("/ready"))
            return status == 503

        await eventually(not_ready, timeout=3)
        status, _, body = await get(served.url("/ready"))
        assert (status, json.loads(body)) == (503, {"ready": False, "reason": "draining"})
        for cid in ("a", "b"):
            closed = await js.wait_for(cid, source="transport", event="closed", since=mark, timeout=5)
            assert 4200 <= closed.data["code"] <= 4299, closed
        for cid in ("a", "b"):
            await js.disconnect(cid)
        # Wait for the exit without signalling again (a second SIGTERM forces exit 1).
        await eventually(lambda: asyncio.sleep(0, not served.process.is_running()), timeout=15)
        assert served.process.returncode == 0, served.process.output()
    finally:
        served.process.close()


async def test_clients_refused_while_draining_do_not_reconnect_in_a_tight_loop(tmp_path: Path, js: JsClients) -> None:
    served = await asyncio.to_thread(start_served, tmp_path, "--drain-seconds", "2")
    try:
        await js.connect("a", port=served.port, key=APP_KEY)
        mark = js.mark()
        served.process.send_signal(signal.SIGTERM)
        await js.wait_for("a", source="transport", event="closed", since=mark, timeout=5)
        await eventually(lambda: asyncio.sleep(0, not served.process.is_running()), timeout=15)

        attempts = js.events("a", lambda r: r.seq > mark, source="connection", event="error")
        # pusher-js retries 4100-4199 after 1 s: a couple of attempts over a 2 s drain, not hundreds.
        assert len(attempts) <= 10, f"{len(attempts)} refused reconnects during a 2 s drain"
    finally:
        await js.disconnect("a")
        served.process.close()
