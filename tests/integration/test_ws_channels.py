"""Subscribing to public, private and private-encrypted channels, refusals, unsubscribe and `socket_id` exclusion.

pusher-js subscribes with signatures from an auth endpoint that signs with the real `pusher` SDK; the
backend publishes with the same SDK through the HTTP API (the ingest node on a cluster). Refusals no
real client would provoke (`#` names, foreign signatures) use the raw WebSocket client.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator

import pusher
import pytest

from tests.support.auth_server import AuthServer
from tests.support.js_clients import JsClients
from tests.support.names import unique
from tests.support.ports import LOOPBACK
from tests.support.raw_ws import RawClient, open_established, subscription_answer
from tests.support.topology import APP_ID, APP_KEY, APP_SECRET, Topology

MASTER_KEY = base64.b64encode(bytes(range(32))).decode()


@pytest.fixture
async def encrypted_auth() -> AsyncIterator[AuthServer]:
    """An auth endpoint that also hands out the shared secrets of `private-encrypted-` channels."""
    async with AuthServer(
        app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, encryption_master_key_base64=MASTER_KEY
    ) as server:
        yield server


async def trigger(topology: Topology, channel: str, event: str, data: object, socket_id: str | None = None) -> None:
    """Publish through the HTTP API with the official SDK."""
    await asyncio.to_thread(topology.sdk().trigger, channel, event, data, socket_id)


async def wait_subscription_count(topology: Topology, channel: str, count: int, within: float = 3.0) -> None:
    """Poll the HTTP API until the channel has `count` subscriptions."""
    sdk = topology.sdk()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        info = await asyncio.to_thread(sdk.channel_info, channel, ["subscription_count"])
        if info.get("subscription_count", 0) == count:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{channel} has {info} after {within} s, wanted subscription_count {count}")
        await asyncio.sleep(0.05)


async def test_public_channel_receives_event_triggered_with_the_sdk(js: JsClients, topology: Topology) -> None:
    channel = unique("news")
    await js.connect("a", port=topology.ws_port(1), key=APP_KEY)
    await js.subscribe("a", channel)

    await trigger(topology, channel, "headline", {"title": "hello", "n": 1})

    record = await js.wait_for("a", source="channel", channel=channel, event="headline")
    assert record.data == {"title": "hello", "n": 1}


async def test_private_channel_subscription_signed_by_the_sdk_succeeds_and_receives_events(
    js: JsClients, topology: Topology, auth: AuthServer
) -> None:
    channel = unique("private-inbox")
    socket_id = await js.connect("a", port=topology.ws_port(0), key=APP_KEY, auth_url=auth.channel_auth_url)

    await js.subscribe("a", channel)
    await trigger(topology, channel, "note", {"n": 7})

    record = await js.wait_for("a", source="channel", channel=channel, event="note")
    assert record.data == {"n": 7}
    [request] = auth.requests_for("channel")
    assert request.params["socket_id"] == socket_id
    assert request.params["channel_name"] == channel


async def test_private_encrypted_channel_delivers_what_the_sdk_encrypted_and_pusher_js_decrypts(
    js: JsClients, topology: Topology, encrypted_auth: AuthServer
) -> None:
    channel = unique("private-encrypted-vault")
    await js.connect("a", port=topology.ws_port(1), key=APP_KEY, auth_url=encrypted_auth.channel_auth_url)
    await js.subscribe("a", channel)
    sdk = pusher.Pusher(
        app_id=APP_ID,
        key=APP_KEY,
        secret=APP_SECRET,
        host=LOOPBACK,
        port=topology.api_port,
        ssl=False,
        encryption_master_key_base64=MASTER_KEY,
    )

    await asyncio.to_thread(sdk.trigger, channel, "secret", {"pin": "1234"})

    decrypted = await js.wait_for("a", source="channel", channel=channel, event="secret")
    assert decrypted.data == {"pin": "1234"}
    # On the wire the hub relayed only the ciphertext it was given.
    wire = await js.wait_for("a", source="message", channel=channel, event="secret")
    assert set(wire.data) == {"nonce", "ciphertext"}


async def test_tampered_private_signature_gets_subscription_error(
    js: JsClients, topology: Topology, auth: AuthServer
) -> None:
    channel = unique("private-guarded")
    await js.connect(
        "m", port=topology.ws_port(0), key=APP_KEY, auth_url=auth.channel_auth_url, auth_params={"tamper": 1}
    )

    error = await js.subscribe_error("m", channel)

    assert error["type"] == "AuthError"
    assert error["status"] == 401
    assert channel in error["error"]
    assert (await js.state("m")).state == "connected"


async def test_refused_subscriber_receives_nothing_from_the_channel(
    js: JsClients, topology: Topology, auth: AuthServer
) -> None:
    channel = unique("private-guarded")
    await js.connect("ok", port=topology.ws_port(0), key=APP_KEY, auth_url=auth.channel_auth_url)
    await js.connect(
        "m", port=topology.ws_port(1), key=APP_KEY, auth_url=auth.channel_auth_url, auth_params={"tamper": 1}
    )
    await js.subscribe("ok", channel)
    await js.subscribe_error("m", channel)

    await trigger(topology, channel, "note", {"n": 1})

    await js.wait_for("ok", source="channel", channel=channel, event="note")
    await js.expect_none("m", source="message", channel=channel, event="note", within=0.3)


async def test_private_subscription_without_auth_is_refused(topology: Topology) -> None:
    frame = await subscription_answer(topology.ws_port(0), APP_KEY, unique("private-bare"))

    assert frame.event == "pusher:subscription_error"
    assert frame.data["type"] == "AuthError"
    assert frame.data["status"] == 401


async def test_private_signature_made_for_another_socket_is_refused(topology: Topology) -> None:
    channel = unique("private-stolen")
    async with RawClient(topology.ws_port(0), APP_KEY) as owner, RawClient(topology.ws_port(1), APP_KEY) as thief:
        owner_id = await owner.established()
        await thief.established()
        auth = topology.sdk().authenticate(channel=channel, socket_id=owner_id)["auth"]

        stolen = await thief.subscribe(channel, auth=auth)
        rightful = await owner.subscribe(channel, auth=auth)

    assert stolen.event == "pusher:subscription_error"
    assert stolen.data["status"] == 401
    assert rightful.event == "pusher_internal:subscription_succeeded"


async def test_private_signature_under_another_app_key_is_refused(topology: Topology) -> None:
    channel = unique("private-keyed")
    async with RawClient(topology.ws_port(0), APP_KEY) as client:
        socket_id = await client.established()
        signature = topology.sdk().authenticate(channel=channel, socket_id=socket_id)["auth"].split(":", 1)[1]

        frame = await client.subscribe(channel, auth=f"other-key:{signature}")

    assert frame.event == "pusher:subscription_error"
    assert frame.data["status"] == 401


async def test_unsubscribe_stops_delivery(js: JsClients, topology: Topology) -> None:
    channel = unique("ticker")
    await js.connect("leaver", port=topology.ws_port(0), key=APP_KEY)
    await js.connect("stayer", port=topology.ws_port(0), key=APP_KEY)
    await js.subscribe("leaver", channel)
    await js.subscribe("stayer", channel)
    await trigger(topology, channel, "tick", {"n": 1})
    await js.wait_for("leaver", source="channel", channel=channel, event="tick")

    await js.unsubscribe("leaver", channel)
    # The protocol has no unsubscribe acknowledgement; the channel's subscription count shows it arrived.
    await wait_subscription_count(topology, channel, 1)
    mark = js.mark()
    await trigger(topology, channel, "tick", {"n": 2})

    await js.wait_for("stayer", source="channel", channel=channel, event="tick", data={"n": 2})
    await js.expect_none("leaver", source="message", channel=channel, since=mark, within=0.3)


async def test_unsubscribe_over_the_wire_stops_delivery_on_the_same_socket(topology: Topology) -> None:
    channel = unique("raw-ticker")
    async with RawClient(topology.ws_port(1), APP_KEY) as client:
        await client.established()
        await client.subscribe(channel)
        await client.send_json({"event": "pusher:unsubscribe", "data": {"channel": channel}})
        # Frames are handled in order: once the pong arrives, the unsubscribe has been processed.
        since = client.mark()
        await client.send_json({"event": "pusher:ping", "data": {}})
        await client.wait_event("pusher:pong", since=since)

        await trigger(topology, channel, "tick", {"n": 1})

        await client.expect_no_event("tick", channel=channel, since=since, within=0.3)
        assert not client.closed


async def test_subscribing_twice_confirms_twice_and_delivers_once(topology: Topology) -> None:
    channel = unique("twice")
    async with RawClient(topology.ws_port(0), APP_KEY) as client:
        await client.established()
        first = await client.subscribe(channel)
        second = await client.subscribe(channel, timeout=2)
        since = client.mark()

        await trigger(topology, channel, "once", {"n": 1})

        await client.wait_event("once", channel=channel, since=since)
        await client.expect_no_event("once", channel=channel, since=client.mark(), within=0.3)
    assert first.event == second.event == "pusher_internal:subscription_succeeded"


async def test_subscribing_to_a_hash_channel_is_refused(topology: Topology) -> None:
    frame = await subscription_answer(topology.ws_port(0), APP_KEY, "#anything")

    assert frame.event == "pusher:subscription_error"
    assert frame.channel == "#anything"
    assert frame.data["status"] == 4009


async def test_subscribing_to_another_users_server_channel_without_signin_is_refused(topology: Topology) -> None:
    frame = await subscription_answer(topology.ws_port(1), APP_KEY, "#server-to-user-someone")

    assert frame.event == "pusher:subscription_error"
    assert frame.data["status"] == 4009


async def test_channel_name_with_forbidden_characters_is_refused(topology: Topology) -> None:
    frame = await subscription_answer(topology.ws_port(0), APP_KEY, "bad channel!")

    assert frame.event == "pusher:subscription_error"
    assert frame.data["status"] == 4009


async def test_channel_name_longer_than_the_apps_limit_is_refused(topology: Topology) -> None:
    at_limit = ("x" * 40)[:28] + uuid.uuid4().hex[:12]  # app 2 allows 40 characters
    client = await open_established(topology.ws_port(0), "limited-key")
    try:
        accepted = await client.subscribe(at_limit)
        refused = await client.subscribe(at_limit + "y")
    finally:
        await client.close()

    assert len(at_limit) == 40
    assert accepted.event == "pusher_internal:subscription_succeeded"
    assert refused.event == "pusher:subscription_error"
    assert refused.data["status"] == 4009
    assert "40" in refused.data["error"]


async def test_trigger_with_socket_id_skips_only_that_socket_on_every_node(js: JsClients, topology: Topology) -> None:
    channel = unique("feed")
    sender = await js.connect("sender", port=topology.ws_port(1), key=APP_KEY)
    await js.connect("near", port=topology.ws_port(1), key=APP_KEY)
    await js.connect("far", port=topology.ws_port(0), key=APP_KEY)
    for cid in ("sender", "near", "far"):
        await js.subscribe(cid, channel)
    mark = js.mark()

    await trigger(topology, channel, "posted", {"id": 1}, socket_id=sender)

    assert (await js.wait_for("near", source="channel", channel=channel, event="posted")).data == {"id": 1}
    assert (await js.wait_for("far", source="channel", channel=channel, event="posted")).data == {"id": 1}
    await js.expect_none("sender", source="message", channel=channel, event="posted", since=mark, within=0.3)
