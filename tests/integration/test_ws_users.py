"""User sign-in (`pusher.signin()`), server-to-user events and terminating a user's connections.

pusher-js signs in through an endpoint that signs with the `pusher` SDK's `authenticate_user`, then
subscribes `#server-to-user-{id}`; the backend reaches the user with the SDK's `send_to_user` and closes
them with `terminate_user_connections`. Both must reach the user's sockets on every node and nobody else.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

import pytest

from tests.support.auth_server import AuthServer
from tests.support.js_clients import JsClientError, JsClients
from tests.support.names import unique
from tests.support.raw_ws import RawClient
from tests.support.topology import APP_KEY, APP_SECRET, Topology

UNAUTHORIZED = 4009


async def signed_in(
    js: JsClients, topology: Topology, auth: AuthServer, cid: str, node: int, user_id: str, **params: Any
) -> dict[str, Any]:
    """Connect `cid` to node `node`, sign in as `user_id` and wait for its `#server-to-user-` channel."""
    await js.connect(
        cid,
        port=topology.ws_port(node),
        key=APP_KEY,
        auth_url=auth.channel_auth_url,
        user_auth_url=auth.user_auth_url,
        auth_params=params,
        user_auth_params={"user_id": user_id, "user_info": {"name": user_id}},
    )
    return await js.signin(cid)


def sign(socket_id: str, user_data: str) -> str:
    """A sign-in `auth` computed by hand, for user_data the SDK refuses to sign."""
    digest = hmac.new(APP_SECRET.encode(), f"{socket_id}::user::{user_data}".encode(), hashlib.sha256).hexdigest()
    return f"{APP_KEY}:{digest}"


async def test_pusher_js_signin_succeeds_and_subscribes_its_server_to_user_channel(
    js: JsClients, topology: Topology, auth: AuthServer
) -> None:
    user_id = unique("user")

    user_data = await signed_in(js, topology, auth, "alice", 0, user_id)

    assert user_data == {"id": user_id, "user_info": {"name": user_id}}
    success = await js.wait_for("alice", source="message", event="pusher:signin_success")
    assert json.loads(success.data["user_data"]) == user_data
    await js.wait_for(
        "alice", source="message", channel=f"#server-to-user-{user_id}", event="pusher_internal:subscription_succeeded"
    )


async def test_send_to_user_reaches_every_socket_of_that_user_on_every_node_and_nobody_else(
    js: JsClients, topology: Topology, auth: AuthServer
) -> None:
    target, other = unique("target"), unique("other")
    await signed_in(js, topology, auth, "tab1", 0, target)
    await signed_in(js, topology, auth, "tab2", 1, target)
    await signed_in(js, topology, auth, "other", 1, other)
    # Same id as a presence member, but never signed in: not that user as far as sign-in is concerned.
    channel = unique("presence")
    await js.connect(
        "lookalike",
        port=topology.ws_port(0),
        key=APP_KEY,
        auth_url=auth.channel_auth_url,
        auth_params={"user_id": target},
    )
    await js.subscribe("lookalike", channel)
    mark = js.mark()

    await asyncio.to_thread(topology.sdk().send_to_user, target, "notice", {"text": "for you"})

    for cid in ("tab1", "tab2"):
        record = await js.wait_for(cid, source="user", event="notice", since=mark)
        assert record.data == {"text": "for you"}
    await js.expect_none("other", source="message", event="notice", since=mark, within=0.3)
    await js.expect_none("lookalike", source="message", event="notice", since=mark, within=0.05)


async def test_signed_in_user_joins_a_presence_channel_without_channel_data(
    js: JsClients, topology: Topology, auth: AuthServer
) -> None:
    user_id = unique("user")
    channel = unique("presence")
    await signed_in(js, topology, auth, "alice", 1, user_id, omit_channel_data="1")

    snapshot = await js.subscribe("alice", channel)

    assert snapshot["me"] == {"id": user_id, "info": {"name": user_id}}
    assert snapshot["count"] == 1
    [request] = auth.requests_for("channel")
    assert "channel_data" not in request.body


async def test_signin_with_a_tampered_signature_closes_the_connection_with_4009(
    js: JsClients, topology: Topology, auth: AuthServer
) -> None:
    await js.connect(
        "mallory",
        port=topology.ws_port(0),
        key=APP_KEY,
        user_auth_url=auth.user_auth_url,
        user_auth_params={"user_id": unique("user"), "tamper": "1"},
    )

    with pytest.raises(JsClientError):
        await js.signin("mallory", timeout=3)

    error = await js.wait_for("mallory", source="message", event="pusher:error")
    assert error.data["code"] == UNAUTHORIZED
    await js.wait_for("mallory", source="transport", event="closed")
    assert js.close_code("mallory") == UNAUTHORIZED
    await js.expect_none("mallory", source="message", event="pusher:signin_success", within=0.05)


@pytest.mark.parametrize(
    "user_data",
    ['{"user_info":{"name":"no id"}}', '{"id":""}', '{"id":true}', '{"id":4.2}', "not json"],
    ids=["missing_id", "empty_id", "boolean_id", "fractional_id", "not_json"],
)
async def test_signin_with_invalid_user_data_closes_the_connection_with_4009(
    topology: Topology, user_data: str
) -> None:
    async with RawClient(topology.ws_port(1), APP_KEY) as client:
        socket_id = await client.established()

        await client.send_json(
            {"event": "pusher:signin", "data": {"auth": sign(socket_id, user_data), "user_data": user_data}}
        )

        error = await client.wait_event("pusher:error")
        code = await client.wait_closed()
    assert error.data["code"] == UNAUTHORIZED
    assert code == UNAUTHORIZED


async def test_signin_with_an_integer_id_succeeds_as_the_user_of_its_string_form(topology: Topology) -> None:
    # Laravel signs {"id": $user->id}; the socket is told its id as text, which pusher-js requires.
    user_data = '{"id":42,"name":"Ann"}'
    async with RawClient(topology.ws_port(1), APP_KEY) as client:
        socket_id = await client.established()

        await client.send_json(
            {"event": "pusher:signin", "data": {"auth": sign(socket_id, user_data), "user_data": user_data}}
        )

        success = await client.wait_event("pusher:signin_success")
    assert json.loads(success.data["user_data"]) == {"id": "42", "name": "Ann"}


async def test_signin_as_a_second_user_on_the_same_connection_closes_it_with_4009(topology: Topology) -> None:
    sdk = topology.sdk()
    async with RawClient(topology.ws_port(0), APP_KEY) as client:
        socket_id = await client.established()
        await client.send_json({"event": "pusher:signin", "data": sdk.authenticate_user(socket_id, {"id": "first"})})
        await client.wait_event("pusher:signin_success")

        await client.send_json({"event": "pusher:signin", "data": sdk.authenticate_user(socket_id, {"id": "second"})})

        code = await client.wait_closed()
    assert code == UNAUTHORIZED


async def test_signed_in_socket_may_subscribe_only_its_own_server_to_user_channel(topology: Topology) -> None:
    user_id = unique("user")
    async with RawClient(topology.ws_port(1), APP_KEY) as client:
        socket_id = await client.established()
        await client.send_json(
            {"event": "pusher:signin", "data": topology.sdk().authenticate_user(socket_id, {"id": user_id})}
        )
        await client.wait_event("pusher:signin_success")

        own = await client.subscribe(f"#server-to-user-{user_id}")
        foreign = await client.subscribe(f"#server-to-user-{user_id}x")

    assert own.event == "pusher_internal:subscription_succeeded"
    assert foreign.event == "pusher:subscription_error"
    assert foreign.data["status"] == UNAUTHORIZED


async def test_terminate_user_connections_closes_only_that_users_sockets_on_every_node(
    js: JsClients, topology: Topology, auth: AuthServer
) -> None:
    target, other = unique("target"), unique("other")
    await signed_in(js, topology, auth, "tab1", 0, target)
    await signed_in(js, topology, auth, "tab2", 1, target)
    await signed_in(js, topology, auth, "other", 0, other)
    mark = js.mark()

    await asyncio.to_thread(topology.sdk().terminate_user_connections, target)

    for cid in ("tab1", "tab2"):
        await js.wait_for(cid, source="transport", event="closed", since=mark)
        assert js.close_code(cid) == UNAUTHORIZED
        await js.wait_state(cid, "disconnected")
    await js.expect_none("other", source="transport", event="closed", since=mark, within=0.3)
    assert (await js.state("other")).state == "connected"
    await asyncio.to_thread(topology.sdk().send_to_user, other, "still-here", {"ok": True})
    await js.wait_for("other", source="user", event="still-here")
