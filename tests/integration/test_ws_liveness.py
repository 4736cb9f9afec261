"""Heartbeats: `pusher:ping`/`pusher:pong`, RFC 6455 pings from the server and the 4201 pong timeout.

These run against their own `hub serve` with `--activity-timeout 1 --pong-timeout 1`, so a silent socket
is pinged after ~1 s and closed ~1 s after an unanswered ping. The Java/Android SDK (and Flutter on
Android, which wraps it) connects with protocol 5, sends `pusher:ping` without `data`, never answers a
`pusher:ping` event and relies on RFC 6455 ping/pong: it must stay connected. pusher-js must too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pusher
import pytest

from tests.support.js_clients import JsClients
from tests.support.ports import free_port
from tests.support.processes import start_hub_serve
from tests.support.raw_ws import RawClient, RawWsError
from tests.support.topology import APP_ID, APP_KEY, APP_SECRET, write_apps_file

ACTIVITY_TIMEOUT = 1
PONG_TIMEOUT = 1
PONG_TIMEOUT_CODE = 4201
UNAUTHORIZED = 4009

APP = {"id": APP_ID, "key": APP_KEY, "secret": APP_SECRET}
# "Authorized connections": sockets must sign in or join a private/presence channel within 1 s.
STRICT_APP: dict[str, Any] = {
    "id": "9",
    "key": "strict-key",
    "secret": "strict-secret",
    "enable_user_authentication": True,
    "user_authentication_timeout": 1,
}


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A `hub serve` with one-second liveness settings, for this module only."""
    apps_file = write_apps_file(tmp_path_factory.mktemp("liveness"), [APP, STRICT_APP])
    port = free_port()
    process = start_hub_serve(
        port,
        extra_args=(
            "--apps-file",
            str(apps_file),
            "--activity-timeout",
            str(ACTIVITY_TIMEOUT),
            "--pong-timeout",
            str(PONG_TIMEOUT),
        ),
    )
    try:
        yield port
    finally:
        process.close()


async def wait_until(condition: object, what: str, within: float) -> None:
    """Poll `condition()` every 50 ms until it is true."""
    assert callable(condition)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not within {within} s")
        await asyncio.sleep(0.05)


async def test_handshake_announces_the_configured_activity_timeout(port: int) -> None:
    async with RawClient(port, APP_KEY) as client:
        frame = await client.wait_event("pusher:connection_established")

    assert json.loads(frame.data)["activity_timeout"] == ACTIVITY_TIMEOUT


async def test_pusher_ping_without_data_gets_a_pusher_pong(port: int) -> None:
    async with RawClient(port, APP_KEY, protocol=5, client="java-client") as client:
        await client.established()
        since = client.mark()

        await client.send_text('{"event":"pusher:ping"}')

        pong = await client.wait_event("pusher:pong", since=since)
    assert pong.message == {"event": "pusher:pong", "data": {}}


async def test_java_like_client_answering_only_rfc6455_pings_stays_connected_past_the_pong_timeout(port: int) -> None:
    client = RawClient(port, APP_KEY, protocol=5, client="java-client", autoping=False, answer_pings=True)
    async with client:
        await client.established()

        # Each answered ping proves the server waited for it; two mean it outlived a pong timeout.
        await wait_until(lambda: client.pings >= 2 or client.closed, "two server pings", within=6)

        assert not client.closed, f"closed with {client.close_code}"
        assert [f.event for f in client.frames if f.event == "pusher:ping"] == []
        frame = await client.subscribe("java-news")
        assert frame.event == "pusher_internal:subscription_succeeded"


async def test_client_that_answers_nothing_is_closed_with_4201(port: int) -> None:
    async with RawClient(port, APP_KEY, autoping=False, answer_pings=False) as client:
        await client.established()

        code = await client.wait_closed(timeout=6)

        error = await client.wait_event("pusher:error")
    assert client.pings >= 1
    assert error.data["code"] == PONG_TIMEOUT_CODE
    assert code == PONG_TIMEOUT_CODE


async def test_pusher_js_keeps_its_connection_alive_with_a_one_second_activity_timeout(
    js: JsClients, port: int
) -> None:
    socket_id = await js.connect("browser", port=port, key=APP_KEY)

    # pusher-js pings after min(its 120 s, the server's 1 s) of silence and gets a pong.
    await js.wait_for("browser", source="message", event="pusher:pong", timeout=4)
    await js.expect_none("browser", source="transport", event="closed", within=2.5)

    state = await js.state("browser")
    assert state.state == "connected"
    assert state.socket_id == socket_id


async def test_busy_connection_that_never_authorizes_is_closed_with_4009_after_the_timeout(port: int) -> None:
    async with RawClient(port, STRICT_APP["key"]) as client:
        await client.established()
        await client.subscribe("public-only")

        # Staying active (pings, public subscriptions) does not count as authorizing.
        for _ in range(40):
            if client.closed:
                break
            await client.send_json({"event": "pusher:ping", "data": {}})
            await asyncio.sleep(0.1)

        code = await client.wait_closed(timeout=1)
        error = await client.wait_event("pusher:error")
    assert error.data["code"] == UNAUTHORIZED
    assert code == UNAUTHORIZED


async def test_signed_in_connection_is_not_closed_for_missing_authorization(port: int) -> None:
    sdk = pusher.Pusher(app_id=STRICT_APP["id"], key=STRICT_APP["key"], secret=STRICT_APP["secret"])
    async with RawClient(port, STRICT_APP["key"]) as client:
        socket_id = await client.established()
        await client.send_json({"event": "pusher:signin", "data": sdk.authenticate_user(socket_id, {"id": "me"})})
        await client.wait_event("pusher:signin_success")

        # Past the 1 s timeout plus a sweep.
        with pytest.raises(RawWsError):
            await client.wait_closed(timeout=2.2)
    assert client.close_code != UNAUTHORIZED
