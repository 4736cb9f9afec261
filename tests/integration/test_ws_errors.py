"""Malformed client frames: each is answered with `pusher:error` and the socket stays usable.

No real client library sends these, so a raw WebSocket client sends them; after every bad frame the same
socket must still complete a subscription and a `pusher:ping`.
"""

from __future__ import annotations

import pytest

from tests.support.names import unique
from tests.support.raw_ws import RawClient
from tests.support.topology import APP_KEY, Topology

INVALID_MESSAGE_CODE = 4200  # hub answers every unparsable frame with this code (as Reverb does)

MALFORMED = {
    "not_json": "this is not json",
    "truncated_json": '{"event": "pusher:subscribe", "data": {',
    "json_array": '["pusher:subscribe", {"channel": "x"}]',
    "json_string": '"pusher:ping"',
    "missing_event": '{"data": {"channel": "x"}}',
    "empty_event": '{"event": "", "data": {}}',
    "event_not_a_string": '{"event": 42, "data": {}}',
    "channel_not_a_string": '{"event": "client-x", "channel": 7, "data": {}}',
    "subscribe_data_a_number": '{"event": "pusher:subscribe", "data": 42}',
    "subscribe_data_a_list": '{"event": "pusher:subscribe", "data": ["x"]}',
    "subscribe_data_not_json_text": '{"event": "pusher:subscribe", "data": "{nope"}',
    "subscribe_without_channel": '{"event": "pusher:subscribe", "data": {"auth": ""}}',
    "subscribe_channel_a_number": '{"event": "pusher:subscribe", "data": {"channel": 5}}',
    "signin_without_user_data": '{"event": "pusher:signin", "data": {"auth": "k:s"}}',
}


async def assert_still_usable(client: RawClient) -> None:
    """The socket answers a ping and completes a subscription after the error."""
    since = client.mark()
    await client.send_json({"event": "pusher:ping", "data": {}})
    await client.wait_event("pusher:pong", since=since)
    channel = unique("after-error")
    frame = await client.subscribe(channel)
    assert frame.event == "pusher_internal:subscription_succeeded"
    assert not client.closed


@pytest.mark.parametrize("text", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_malformed_text_frame_gets_pusher_error_and_socket_stays_usable(topology: Topology, text: str) -> None:
    async with RawClient(topology.ws_port(0), APP_KEY) as client:
        await client.established()
        since = client.mark()

        await client.send_text(text)

        error = await client.wait_event("pusher:error", since=since)
        assert error.data["code"] == INVALID_MESSAGE_CODE
        assert error.data["message"].startswith("Invalid message format")
        await assert_still_usable(client)


async def test_binary_frame_gets_pusher_error_and_socket_stays_usable(topology: Topology) -> None:
    async with RawClient(topology.ws_port(1), APP_KEY) as client:
        await client.established()
        since = client.mark()

        await client.send_bytes(b'{"event":"pusher:ping","data":{}}')

        error = await client.wait_event("pusher:error", since=since)
        assert error.data["code"] == INVALID_MESSAGE_CODE
        assert "Binary" in error.data["message"]
        await client.expect_no_event("pusher:pong", since=since, within=0.2)
        await assert_still_usable(client)


async def test_unknown_pusher_event_is_ignored_without_error(topology: Topology) -> None:
    async with RawClient(topology.ws_port(0), APP_KEY) as client:
        await client.established()
        since = client.mark()

        await client.send_json({"event": "pusher:no_such_thing", "data": {}})

        await assert_still_usable(client)
        await client.expect_no_event("pusher:error", since=since, within=0.1)


async def test_subscribe_data_sent_as_json_string_is_accepted(topology: Topology) -> None:
    channel = unique("stringly")
    async with RawClient(topology.ws_port(0), APP_KEY) as client:
        await client.established()
        since = client.mark()

        await client.send_json({"event": "pusher:subscribe", "data": f'{{"channel": "{channel}"}}'})

        frame = await client.wait_event("pusher_internal:subscription_succeeded", channel=channel, since=since)
        assert frame.data == "{}"
