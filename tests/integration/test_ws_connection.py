"""Opening a connection: the handshake frame, socket ids, accepted protocol versions and every refusal.

Refusals are checked in Pusher's order (unknown key 4001, disabled app 4003, bad protocol 4007, over
quota 4004): each is a `pusher:error` frame followed by a close with the same code.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from tests.support.js_clients import JsClientError, JsClients
from tests.support.raw_ws import RawClient, open_established, refusal
from tests.support.topology import APP_KEY, Topology

SOCKET_ID = re.compile(r"\A\d+\.\d+\Z")
LIMITED_KEY = "limited-key"  # app 2: max 2 connections


async def open_limited(port: int) -> RawClient:
    """An established app-2 socket (waiting for sockets of earlier tests to be counted out)."""
    return await open_established(port, LIMITED_KEY)


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    """Closes every raw client a test opened."""
    async with AsyncExitStack() as exits:
        yield exits


async def test_pusher_js_connects_and_reports_a_socket_id_on_every_node(js: JsClients, topology: Topology) -> None:
    first = await js.connect("a", port=topology.ws_port(0), key=APP_KEY)
    second = await js.connect("b", port=topology.ws_port(1), key=APP_KEY)

    assert SOCKET_ID.match(first), first
    assert SOCKET_ID.match(second), second
    assert first != second
    assert (await js.state("a")).state == "connected"
    assert (await js.state("b")).state == "connected"


async def test_connection_established_frame_carries_double_encoded_socket_id_and_activity_timeout(
    topology: Topology,
) -> None:
    async with RawClient(topology.ws_port(0), APP_KEY) as client:
        frame = await client.wait_for(lambda f: True, what="the first frame")

    assert set(frame.message) == {"event", "data"}
    assert frame.event == "pusher:connection_established"
    assert isinstance(frame.data, str), "data must be a JSON string (double encoded)"
    payload = json.loads(frame.data)
    assert set(payload) == {"socket_id", "activity_timeout"}
    assert SOCKET_ID.match(payload["socket_id"])
    assert isinstance(payload["activity_timeout"], int)
    assert payload["activity_timeout"] > 0


async def test_socket_ids_are_unique_per_connection(topology: Topology, stack: AsyncExitStack) -> None:
    ids = []
    for node in (0, 1, 0, 1):
        client = await stack.enter_async_context(RawClient(topology.ws_port(node), APP_KEY))
        ids.append(await client.established())

    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("protocol", [5, 6, 7])
async def test_protocol_versions_5_to_7_are_accepted(topology: Topology, protocol: int) -> None:
    async with RawClient(topology.ws_port(0), APP_KEY, protocol=protocol) as client:
        socket_id = await client.established()
        frame = await client.subscribe(f"public-{protocol}")

    assert SOCKET_ID.match(socket_id)
    assert frame.event == "pusher_internal:subscription_succeeded"


async def test_unknown_app_key_is_refused_with_4001(topology: Topology) -> None:
    frame, code = await refusal(topology.ws_port(0), "no-such-key")

    assert frame.event == "pusher:error"
    assert frame.data == {"code": 4001, "message": "App key no-such-key does not exist."}
    assert code == 4001


async def test_pusher_js_reports_4001_for_an_unknown_app_key(js: JsClients, topology: Topology) -> None:
    with pytest.raises(JsClientError) as refused:
        await js.connect("lost", port=topology.ws_port(0), key="no-such-key", timeout=3)

    assert refused.value.code == 4001
    assert js.close_code("lost") == 4001


async def test_disabled_app_is_refused_with_4003(topology: Topology) -> None:
    frame, code = await refusal(topology.ws_port(1), "disabled-key")

    assert frame.event == "pusher:error"
    assert frame.data["code"] == 4003
    assert code == 4003


@pytest.mark.parametrize("protocol", ["4", "8", "abc"])
async def test_unsupported_protocol_is_refused_with_4007(topology: Topology, protocol: str) -> None:
    frame, code = await refusal(topology.ws_port(0), APP_KEY, protocol=protocol)

    assert frame.event == "pusher:error"
    assert frame.data["code"] == 4007
    assert protocol in frame.data["message"]
    assert code == 4007


async def test_unknown_key_is_reported_before_a_bad_protocol(topology: Topology) -> None:
    _, code = await refusal(topology.ws_port(0), "no-such-key", protocol="abc")

    assert code == 4001


async def test_disabled_app_is_reported_before_a_bad_protocol(topology: Topology) -> None:
    _, code = await refusal(topology.ws_port(0), "disabled-key", protocol="abc")

    assert code == 4003


async def test_connection_over_the_apps_quota_is_refused_with_4004_counting_every_node(
    topology: Topology, stack: AsyncExitStack
) -> None:
    first = await open_limited(topology.ws_port(0))
    stack.push_async_callback(first.close)
    second = await open_limited(topology.ws_port(1))
    stack.push_async_callback(second.close)

    frame, code = await refusal(topology.ws_port(0), LIMITED_KEY)

    assert frame.event == "pusher:error"
    assert frame.data["code"] == 4004
    assert code == 4004
    # The refused attempt did not leak a slot, and a closed socket frees one.
    await second.close()
    third = await open_limited(topology.ws_port(1))
    stack.push_async_callback(third.close)
    assert third.socket_id is not None


async def test_bad_protocol_is_reported_before_the_quota(topology: Topology, stack: AsyncExitStack) -> None:
    for node in (0, 1):
        client = await open_limited(topology.ws_port(node))
        stack.push_async_callback(client.close)

    _, code = await refusal(topology.ws_port(0), LIMITED_KEY, protocol="8")

    assert code == 4007
