"""Client events (`client-*`): relayed to the channel's other subscribers, on every node, under Pusher's rules.

Allowed only on private and presence channels, only from subscribed sockets, only when the app enables
them, at most N per second per socket (app 2: 3/s) and up to the app's payload size (app 2: 1 KB). A
refused event is answered with `pusher:error` 4301 and the socket stays open.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import pusher
import pytest

from tests.support.auth_server import AuthServer
from tests.support.js_clients import JsClientError, JsClients
from tests.support.names import unique
from tests.support.raw_ws import RawClient, open_established
from tests.support.topology import APP_ID, APP_KEY, APP_SECRET, Topology

LIMITED: dict[str, str] = {
    "app_id": "2",
    "key": "limited-key",
    "secret": "limited-secret",
}  # 3 events/s, 1 KB, 2 sockets
QUIET: dict[str, str] = {"app_id": "4", "key": "quiet-key", "secret": "quiet-secret"}  # client events disabled
REJECTED = 4301


@pytest.fixture
async def limited_auth() -> AsyncIterator[AuthServer]:
    """Auth endpoint of app 2."""
    async with AuthServer(app_id=LIMITED["app_id"], key=LIMITED["key"], secret=LIMITED["secret"]) as server:
        yield server


@pytest.fixture
async def quiet_auth() -> AsyncIterator[AuthServer]:
    """Auth endpoint of app 4."""
    async with AuthServer(app_id=QUIET["app_id"], key=QUIET["key"], secret=QUIET["secret"]) as server:
        yield server


async def connect(
    js: JsClients, topology: Topology, auth: AuthServer, cid: str, node: int, params: dict[str, Any] | None = None
) -> str:
    """Connect `cid` with the auth endpoint; retry while app 2's connection quota still counts earlier sockets."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3.0
    while True:
        try:
            return await js.connect(
                cid, port=topology.ws_port(node), key=auth.key, auth_url=auth.channel_auth_url, auth_params=params
            )
        except JsClientError as refused:
            if refused.code != 4004 or loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


def errors(js: JsClients, cid: str, since: int = 0) -> list[dict[str, Any]]:
    """`pusher:error` data the client received after `since`."""
    return [r.data for r in js.events(cid, lambda r: r.seq > since, source="message", event="pusher:error")]


async def assert_refused(
    js: JsClients, sender: str, receiver: str, channel: str, event: str, reason: str, since: int
) -> None:
    """`sender` got `pusher:error` 4301 naming `reason` on `channel`; `receiver` never got `event`; `sender` stays up.

    The error carries the channel (as Soketi's does), so a handler bound on the pusher-js channel fires.
    """
    error = await js.wait_for(sender, source="channel", channel=channel, event="pusher:error", since=since)
    assert error.data["code"] == REJECTED
    assert reason in error.data["message"]
    await js.expect_none(receiver, source="message", event=event, since=since, within=0.3)
    assert (await js.state(sender)).state == "connected"


async def test_client_event_reaches_other_subscribers_on_every_node_but_not_the_sender(
    js: JsClients, topology: Topology, auth: AuthServer
) -> None:
    channel = unique("private-chat")
    for cid, node in (("alice", 0), ("bob", 0), ("carol", 1)):
        await connect(js, topology, auth, cid, node)
        await js.subscribe(cid, channel)
    mark = js.mark()

    sent = await js.trigger("alice", channel, "client-typing", {"who": "alice", "typing": True})

    assert sent is True
    for cid in ("bob", "carol"):
        record = await js.wait_for(cid, source="channel", channel=channel, event="client-typing", since=mark)
        assert record.data == {"who": "alice", "typing": True}
    await js.expect_none("alice", source="message", channel=channel, event="client-typing", since=mark, within=0.3)
    assert errors(js, "alice", mark) == []


async def test_client_event_on_a_private_channel_carries_no_user_id(
    js: JsClients, topology: Topology, auth: AuthServer
) -> None:
    channel = unique("private-plain")
    for cid, node in (("alice", 0), ("bob", 1)):
        await connect(js, topology, auth, cid, node)
        await js.subscribe(cid, channel)

    await js.trigger("alice", channel, "client-ping", {"n": 1})

    record = await js.wait_for("bob", source="message", channel=channel, event="client-ping")
    assert record.user_id is None


async def test_client_event_on_a_presence_channel_is_stamped_with_the_senders_user_id(
    js: JsClients, topology: Topology, auth: AuthServer
) -> None:
    channel = unique("presence-chat")
    await connect(js, topology, auth, "alice", 1, {"user_id": "alice-1"})
    await connect(js, topology, auth, "bob", 0, {"user_id": "bob-2"})
    await js.subscribe("alice", channel)
    await js.subscribe("bob", channel)

    await js.trigger("alice", channel, "client-wave", {"hand": "left"})

    record = await js.wait_for("bob", source="message", channel=channel, event="client-wave")
    assert record.user_id == "alice-1"
    assert record.data == {"hand": "left"}


async def test_client_event_user_id_comes_from_signed_channel_data_not_from_the_frame(
    js: JsClients, topology: Topology, auth: AuthServer
) -> None:
    channel = unique("presence-forgery")
    await connect(js, topology, auth, "bob", 1, {"user_id": "bob"})
    await js.subscribe("bob", channel)
    async with RawClient(topology.ws_port(0), APP_KEY) as alice:
        socket_id = await alice.established()
        signed = topology.sdk().authenticate(channel, socket_id, {"user_id": "alice"})
        await alice.subscribe(channel, auth=signed["auth"], channel_data=signed["channel_data"])

        await alice.send_json(
            {"event": "client-note", "channel": channel, "data": {"user_id": "admin"}, "user_id": "admin"}
        )

        record = await js.wait_for("bob", source="message", channel=channel, event="client-note")
    assert record.user_id == "alice"
    assert record.data == {"user_id": "admin"}  # data is relayed verbatim


async def test_client_event_on_a_public_channel_is_refused_with_4301(js: JsClients, topology: Topology) -> None:
    channel = unique("public-lobby")
    for cid, node in (("alice", 0), ("bob", 1)):
        await js.connect(cid, port=topology.ws_port(node), key=APP_KEY)
        await js.subscribe(cid, channel)
    mark = js.mark()

    await js.trigger("alice", channel, "client-shout", {"loud": True})

    await assert_refused(js, "alice", "bob", channel, "client-shout", "private and presence", since=mark)


async def test_client_event_is_refused_when_the_app_disables_client_events(
    js: JsClients, topology: Topology, quiet_auth: AuthServer
) -> None:
    channel = unique("private-quiet")
    for cid, node in (("alice", 1), ("bob", 0)):
        await connect(js, topology, quiet_auth, cid, node)
        await js.subscribe(cid, channel)
    mark = js.mark()

    await js.trigger("alice", channel, "client-typing", {"typing": True})

    await assert_refused(js, "alice", "bob", channel, "client-typing", "not enabled", since=mark)


async def test_client_events_past_the_per_socket_rate_are_refused_with_4301_and_the_socket_stays_open(
    js: JsClients, topology: Topology, limited_auth: AuthServer
) -> None:
    channel = unique("private-burst")
    await connect(js, topology, limited_auth, "fast", 0)
    await connect(js, topology, limited_auth, "watch", 1)
    await js.subscribe("fast", channel)
    await js.subscribe("watch", channel)
    mark = js.mark()

    # Six at once (the driver sends them in order, within milliseconds); app 2 allows 3 per second.
    await asyncio.gather(*(js.trigger("fast", channel, "client-burst", {"n": n}) for n in range(6)))

    await js.wait_for("watch", source="channel", channel=channel, event="client-burst", data={"n": 2}, since=mark)
    await js.wait_for("fast", lambda r: len(errors(js, "fast", mark)) == 3, source="message", event="pusher:error")
    await js.expect_none(
        "watch", source="channel", channel=channel, event="client-burst", data=lambda d: d["n"] >= 3, within=0.3
    )
    received = [r.data["n"] for r in js.events("watch", lambda r: r.seq > mark, source="channel", event="client-burst")]
    assert received == [0, 1, 2]
    assert {e["code"] for e in errors(js, "fast", mark)} == {REJECTED}
    assert all("rate limit" in e["message"] for e in errors(js, "fast", mark))
    assert (await js.state("fast")).state == "connected"

    # It is a rate, not a quota: the next second's events go through again.
    await asyncio.sleep(1.0)
    await js.trigger("fast", channel, "client-burst", {"n": 6})
    await js.wait_for("watch", source="channel", channel=channel, event="client-burst", data={"n": 6})


async def test_client_event_larger_than_the_apps_payload_limit_is_refused_with_4301(topology: Topology) -> None:
    channel = unique("private-big")
    sdk = topology.sdk(app_id=LIMITED["app_id"], key=LIMITED["key"], secret=LIMITED["secret"])
    sender = await open_established(topology.ws_port(0), LIMITED["key"])
    receiver = await open_established(topology.ws_port(1), LIMITED["key"])
    try:
        for client in (sender, receiver):
            assert client.socket_id is not None
            frame = await client.subscribe(channel, auth=sdk.authenticate(channel, client.socket_id)["auth"])
            assert frame.event == "pusher_internal:subscription_succeeded"
        since = sender.mark()

        fits = "x" * 1022  # JSON-encoded: 1024 bytes, app 2's limit
        await sender.send_json({"event": "client-blob", "channel": channel, "data": fits})
        await sender.send_json({"event": "client-blob", "channel": channel, "data": fits + "x"})

        error = await sender.wait_event("pusher:error", since=since)
        assert error.data["code"] == REJECTED
        assert error.channel == channel
        assert "1 KB" in error.data["message"]
        delivered = await receiver.wait_event("client-blob", channel=channel)
        assert delivered.data == fits
        await receiver.expect_no_event("client-blob", channel=channel, since=receiver.mark(), within=0.3)
        assert not sender.closed
    finally:
        await sender.close()
        await receiver.close()


async def test_client_event_from_a_socket_not_subscribed_to_the_channel_is_refused(
    js: JsClients, topology: Topology, auth: AuthServer
) -> None:
    channel = unique("private-members-only")
    await connect(js, topology, auth, "bob", 1)
    await js.subscribe("bob", channel)
    async with RawClient(topology.ws_port(0), APP_KEY) as outsider:
        await outsider.established()

        await outsider.send_json({"event": "client-sneak", "channel": channel, "data": {}})

        error = await outsider.wait_event("pusher:error")
    assert error.data["code"] == REJECTED
    await js.expect_none("bob", source="message", event="client-sneak", within=0.2)


@pytest.mark.parametrize("event", ["message", "pusher_internal:member_added"])
async def test_client_event_without_the_client_prefix_is_refused(
    js: JsClients, topology: Topology, auth: AuthServer, event: str
) -> None:
    channel = unique("private-prefix")
    await connect(js, topology, auth, "bob", 1)
    await js.subscribe("bob", channel)
    async with RawClient(topology.ws_port(0), APP_KEY) as sender:
        socket_id = await sender.established()
        await sender.subscribe(channel, auth=topology.sdk().authenticate(channel, socket_id)["auth"])

        await sender.send_json({"event": event, "channel": channel, "data": '{"user_id":"ghost"}'})

        error = await sender.wait_event("pusher:error")
    assert error.data["code"] == REJECTED
    assert "client-" in error.data["message"]
    await js.expect_none("bob", source="message", event=event, within=0.2)


async def test_client_event_on_an_encrypted_channel_is_refused(topology: Topology) -> None:
    channel = unique("private-encrypted-sealed")
    sdk = pusher.Pusher(
        app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, encryption_master_key_base64=base64.b64encode(b"k" * 32).decode()
    )
    async with RawClient(topology.ws_port(0), APP_KEY) as sender:
        socket_id = await sender.established()
        await sender.subscribe(channel, auth=sdk.authenticate(channel, socket_id)["auth"])

        await sender.send_json({"event": "client-leak", "channel": channel, "data": {"plain": "text"}})

        error = await sender.wait_event("pusher:error")
    assert error.data["code"] == REJECTED
