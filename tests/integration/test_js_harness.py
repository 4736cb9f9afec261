"""Self-test of the real-client harness: pusher-js, Laravel Echo and the SDK-signed auth endpoint against `hub serve`.

These tests check the plumbing the other integration tests rely on (driver process, auth endpoint,
record stream), using the simplest server behaviours: connect, subscribe, receive a triggered event.
They start their own `hub serve` configured only through PUSHER_APP_* variables (no apps file), and use
the suite's `js` and `auth` fixtures from conftest.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pusher
import pytest

from tests.support.auth_server import AuthServer
from tests.support.js_clients import JsClients
from tests.support.ports import free_port
from tests.support.processes import ManagedProcess, start_hub_serve

APP_ID = "1"  # the pusher SDK only accepts numeric app ids
APP_KEY = "app-key"
APP_SECRET = "app-secret"


@pytest.fixture(scope="module")
def hub_port() -> Iterator[int]:
    """One `hub serve` for the module, with the default app taken from PUSHER_APP_* variables."""
    port = free_port()
    process: ManagedProcess = start_hub_serve(
        port, env={"PUSHER_APP_ID": APP_ID, "PUSHER_APP_KEY": APP_KEY, "PUSHER_APP_SECRET": APP_SECRET}
    )
    try:
        yield port
    finally:
        process.close()


@pytest.fixture
def sdk(hub_port: int) -> pusher.Pusher:
    """The official Python server SDK pointed at the hub's HTTP API."""
    return pusher.Pusher(app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host="127.0.0.1", port=hub_port, ssl=False)


async def test_pusher_js_connects_and_reports_a_socket_id(js: JsClients, hub_port: int) -> None:
    socket_id = await js.connect("alice", port=hub_port, key=APP_KEY)

    assert socket_id.count(".") == 1
    assert (await js.state("alice")).state == "connected"


async def test_public_channel_event_triggered_with_python_sdk_reaches_pusher_js(
    js: JsClients, hub_port: int, sdk: pusher.Pusher
) -> None:
    await js.connect("alice", port=hub_port, key=APP_KEY)
    await js.subscribe("alice", "news")

    await asyncio.to_thread(sdk.trigger, "news", "headline", {"title": "hello"})

    record = await js.wait_for("alice", source="channel", channel="news", event="headline")
    assert record.data == {"title": "hello"}


async def test_private_channel_authorized_by_sdk_signed_endpoint_receives_event(
    js: JsClients, hub_port: int, sdk: pusher.Pusher, auth: AuthServer
) -> None:
    await js.connect("alice", port=hub_port, key=APP_KEY, auth_url=auth.channel_auth_url)
    await js.subscribe("alice", "private-inbox")

    await asyncio.to_thread(sdk.trigger, "private-inbox", "note", {"n": 1})

    record = await js.wait_for("alice", source="channel", channel="private-inbox", event="note")
    assert record.data == {"n": 1}
    assert [request.params["channel_name"] for request in auth.requests_for("channel")] == ["private-inbox"]


async def test_auth_endpoint_denial_surfaces_as_subscription_error_with_http_status(
    js: JsClients, hub_port: int, auth: AuthServer
) -> None:
    await js.connect("mallory", port=hub_port, key=APP_KEY, auth_url=auth.channel_auth_url, auth_params={"deny": 1})

    error = await js.subscribe_error("mallory", "private-inbox")

    assert error["type"] == "AuthError"
    assert error["status"] == 403


async def test_echo_listener_receives_event_whose_name_is_used_verbatim(
    js: JsClients, hub_port: int, sdk: pusher.Pusher, auth: AuthServer
) -> None:
    await js.connect("echo", port=hub_port, key=APP_KEY, auth_url=auth.channel_auth_url, echo=True)
    channel = await js.echo_listen("echo", "private", "orders", ".shipped")
    assert channel == "private-orders"

    await asyncio.to_thread(sdk.trigger, "private-orders", "shipped", {"order": 7})

    record = await js.wait_for("echo", source="echo", channel="private-orders", event=".shipped")
    assert record.data == {"order": 7}
