"""Presence channels: member lists, `member_added`/`member_removed` once per user, limits and refusals.

Members are users, not sockets: a user with two sockets (here on two nodes when clustered) is one member,
announced when the first socket joins and removed when the last one leaves. pusher-js clients authorize
through the SDK-signed auth endpoint; counts are taken from the frames the server sent (`message`
records), not from pusher-js's own member bookkeeping.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.auth_server import AuthServer
from tests.support.js_clients import JsClients, JsRecord
from tests.support.names import unique
from tests.support.raw_ws import subscription_answer
from tests.support.topology import APP_KEY, Topology

CROWDED: dict[str, str] = {"app_id": "5", "key": "crowded-key", "secret": "crowded-secret"}  # max 2 presence members


def user(user_id: str, **info: Any) -> dict[str, Any]:
    """Auth params that make the endpoint sign presence channel_data for this user."""
    return {"user_id": user_id, "user_info": info or {"name": user_id.title()}}


def member_events(js: JsClients, cid: str, channel: str, kind: str, user_id: str, since: int = 0) -> list[JsRecord]:
    """`pusher_internal:member_{kind}` frames about `user_id` that client `cid` received."""
    return js.events(
        cid,
        lambda r: r.seq > since and isinstance(r.data, dict) and r.data.get("user_id") == user_id,
        source="message",
        channel=channel,
        event=f"pusher_internal:member_{kind}",
    )


@pytest.fixture
async def crowded_auth() -> AsyncIterator[AuthServer]:
    """Auth endpoint of app 5, whose presence channels hold at most 2 members."""
    async with AuthServer(app_id=CROWDED["app_id"], key=CROWDED["key"], secret=CROWDED["secret"]) as server:
        yield server


async def connect(
    js: JsClients, topology: Topology, auth: AuthServer, cid: str, node: int, params: dict[str, Any]
) -> None:
    """Connect client `cid` to node `node`; its channel auth requests carry `params` (the user)."""
    await js.connect(cid, port=topology.ws_port(node), key=auth.key, auth_url=auth.channel_auth_url, auth_params=params)


async def join(
    js: JsClients, topology: Topology, auth: AuthServer, cid: str, node: int, channel: str, params: dict[str, Any]
) -> dict[str, Any]:
    """Connect client `cid` to node `node` as the given user and subscribe; return the members snapshot."""
    await connect(js, topology, auth, cid, node, params)
    snapshot: dict[str, Any] = await js.subscribe(cid, channel)
    return snapshot


async def fill(js: JsClients, topology: Topology, crowded_auth: AuthServer, channel: str) -> None:
    """Users "one" (client "one", node 0) and "two" (client "two", node 1) take app 5's two member places."""
    await join(js, topology, crowded_auth, "one", 0, channel, user("one"))
    await join(js, topology, crowded_auth, "two", 1, channel, user("two"))


async def test_presence_subscription_lists_every_member_with_user_info_across_nodes(
    js: JsClients, topology: Topology, auth: AuthServer
) -> None:
    channel = unique("presence-room")
    await join(js, topology, auth, "alice", 0, channel, user("alice", name="Alice", role="admin"))

    snapshot = await join(js, topology, auth, "bob", 1, channel, user("bob", name="Bob"))

    assert snapshot["count"] == 2
    assert snapshot["me"] == {"id": "bob", "info": {"name": "Bob"}}
    assert sorted(snapshot["members"], key=lambda m: m["id"]) == [
        {"id": "alice", "info": {"name": "Alice", "role": "admin"}},
        {"id": "bob", "info": {"name": "Bob"}},
    ]
    frame = await js.wait_for("bob", source="message", channel=channel, event="pusher_internal:subscription_succeeded")
    presence = frame.data["presence"]
    assert sorted(presence["ids"]) == ["alice", "bob"]
    assert presence["hash"] == {"alice": {"name": "Alice", "role": "admin"}, "bob": {"name": "Bob"}}
    assert presence["count"] == 2


async def test_subscription_succeeded_data_is_a_json_string_with_ids_hash_and_count(
    topology: Topology,
) -> None:
    channel = unique("presence-wire")
    sdk = topology.sdk()

    frame = await subscription_answer(
        topology.ws_port(0),
        APP_KEY,
        channel,
        sign=lambda socket_id: sdk.authenticate(channel, socket_id, {"user_id": "u1", "user_info": {"n": 1}}),
    )

    assert frame.event == "pusher_internal:subscription_succeeded"
    assert isinstance(frame.data, str)
    assert json.loads(frame.data) == {"presence": {"ids": ["u1"], "hash": {"u1": {"n": 1}}, "count": 1}}


async def test_member_added_reaches_other_members_once_per_user_and_never_the_joining_socket(
    js: JsClients, topology: Topology, auth: AuthServer
) -> None:
    channel = unique("presence-lobby")
    await join(js, topology, auth, "alice", 0, channel, user("alice"))

    await join(js, topology, auth, "bob-tab1", 0, channel, user("bob", name="Bob"))
    added = await js.wait_for("alice", source="channel", channel=channel, event="pusher:member_added")
    assert added.data == {"id": "bob", "info": {"name": "Bob"}}

    second = await join(js, topology, auth, "bob-tab2", 1, channel, user("bob", name="Bob"))
    assert second["count"] == 2
    assert sorted(m["id"] for m in second["members"]) == ["alice", "bob"]

    # A later member's arrival, delivered to everyone, bounds the wait for any stray member_added.
    await join(js, topology, auth, "carol", 1, channel, user("carol"))
    for cid in ("alice", "bob-tab1", "bob-tab2"):
        await js.wait_for(
            cid,
            source="message",
            channel=channel,
            event="pusher_internal:member_added",
            data=lambda d: d["user_id"] == "carol",
        )
    assert len(member_events(js, "alice", channel, "added", "bob")) == 1
    assert member_events(js, "bob-tab1", channel, "added", "bob") == []
    assert member_events(js, "bob-tab2", channel, "added", "bob") == []
    assert member_events(js, "carol", channel, "added", "carol") == []


async def test_member_removed_is_sent_once_only_after_the_users_last_socket_leaves(
    js: JsClients, topology: Topology, auth: AuthServer
) -> None:
    channel = unique("presence-office")
    await join(js, topology, auth, "alice", 0, channel, user("alice"))
    await join(js, topology, auth, "bob-tab1", 0, channel, user("bob"))
    await join(js, topology, auth, "bob-tab2", 1, channel, user("bob"))
    mark = js.mark()

    await js.disconnect("bob-tab1")
    await js.expect_none(
        "alice", source="message", channel=channel, event="pusher_internal:member_removed", since=mark, within=0.4
    )
    assert (await js.members("alice", channel))["count"] == 2

    await js.unsubscribe("bob-tab2", channel)
    removed = await js.wait_for(
        "alice", source="message", channel=channel, event="pusher_internal:member_removed", since=mark
    )
    assert removed.data == {"user_id": "bob"}
    await js.expect_none(
        "alice",
        source="message",
        channel=channel,
        event="pusher_internal:member_removed",
        since=removed.seq,
        within=0.3,
    )
    assert len(member_events(js, "alice", channel, "removed", "bob", since=mark)) == 1
    assert (await js.members("alice", channel))["count"] == 1


async def test_member_removed_frame_carries_only_the_user_id(
    js: JsClients, topology: Topology, auth: AuthServer
) -> None:
    channel = unique("presence-brief")
    await join(js, topology, auth, "alice", 1, channel, user("alice"))
    await join(js, topology, auth, "bob", 0, channel, user("bob"))

    await js.disconnect("bob")

    frame = await js.wait_for("alice", source="message", channel=channel, event="pusher_internal:member_removed")
    assert frame.data == {"user_id": "bob"}


async def test_numeric_and_string_user_ids_are_the_same_member(
    js: JsClients, topology: Topology, auth: AuthServer
) -> None:
    channel = unique("presence-numbers")
    await join(js, topology, auth, "numeric", 0, channel, {**user("42"), "user_id_is_number": "1"})

    snapshot = await join(js, topology, auth, "string", 1, channel, user("42"))

    assert snapshot["count"] == 1
    assert [m["id"] for m in snapshot["members"]] == ["42"]
    await js.expect_none("numeric", source="message", channel=channel, event="pusher_internal:member_added", within=0.3)


async def test_presence_member_limit_refuses_a_new_user_with_limit_reached(
    js: JsClients, topology: Topology, crowded_auth: AuthServer
) -> None:
    channel = unique("presence-small")
    await fill(js, topology, crowded_auth, channel)
    await connect(js, topology, crowded_auth, "three", 0, user("three"))

    error = await js.subscribe_error("three", channel)

    assert error["type"] == "LimitReached"
    assert error["status"] == 4100
    await js.expect_none(
        "one",
        source="message",
        channel=channel,
        event="pusher_internal:member_added",
        data=lambda d: d["user_id"] == "three",
        within=0.3,
    )
    assert (await js.members("one", channel))["count"] == 2


async def test_refused_presence_subscription_leaves_no_occupancy_behind(
    js: JsClients, topology: Topology, crowded_auth: AuthServer
) -> None:
    channel = unique("presence-small")
    await fill(js, topology, crowded_auth, channel)
    await connect(js, topology, crowded_auth, "three", 0, user("three"))
    await js.subscribe_error("three", channel)

    for cid in ("one", "two", "three"):
        await js.disconnect(cid)

    sdk = topology.sdk(app_id=CROWDED["app_id"], key=CROWDED["key"], secret=CROWDED["secret"])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3
    while (info := await asyncio.to_thread(sdk.channel_info, channel, ["subscription_count"]))["occupied"]:
        assert loop.time() < deadline, f"{channel} still occupied after every socket left: {info}"
        await asyncio.sleep(0.05)


async def test_full_presence_channel_accepts_another_socket_of_a_present_user(
    js: JsClients, topology: Topology, crowded_auth: AuthServer
) -> None:
    channel = unique("presence-small")
    await fill(js, topology, crowded_auth, channel)

    snapshot = await join(js, topology, crowded_auth, "two-again", 0, channel, user("two"))

    assert snapshot["count"] == 2


async def test_member_leaving_a_full_channel_makes_room_for_a_new_user(
    js: JsClients, topology: Topology, crowded_auth: AuthServer
) -> None:
    channel = unique("presence-small")
    await fill(js, topology, crowded_auth, channel)
    await js.disconnect("two")
    await js.wait_for("one", source="message", channel=channel, event="pusher_internal:member_removed")

    snapshot = await join(js, topology, crowded_auth, "three", 1, channel, user("three"))

    assert sorted(m["id"] for m in snapshot["members"]) == ["one", "three"]


async def test_tampered_presence_signature_gets_subscription_error(
    js: JsClients, topology: Topology, auth: AuthServer
) -> None:
    channel = unique("presence-guarded")
    await join(js, topology, auth, "alice", 0, channel, user("alice"))
    await connect(js, topology, auth, "mallory", 1, {**user("mallory"), "tamper": "1"})

    error = await js.subscribe_error("mallory", channel)

    assert error["type"] == "AuthError"
    assert error["status"] == 401
    await js.expect_none("alice", source="message", channel=channel, event="pusher_internal:member_added", within=0.3)


async def test_presence_subscription_without_channel_data_is_refused(topology: Topology) -> None:
    channel = unique("presence-anonymous")
    sdk = topology.sdk()

    frame = await subscription_answer(
        topology.ws_port(0),
        APP_KEY,
        channel,
        sign=lambda socket_id: {"auth": sdk.authenticate(channel, socket_id)["auth"]},  # a valid private-style one
    )

    assert frame.event == "pusher:subscription_error"
    assert frame.data["type"] == "AuthError"
    assert frame.data["status"] == 400
    assert "channel_data" in frame.data["error"]


@pytest.mark.parametrize(
    "custom_data",
    [{"user_info": {"name": "nobody"}}, {"user_id": "", "user_info": {}}, {"user_id": "a b"}],
    ids=["no_user_id", "empty_user_id", "user_id_with_space"],
)
async def test_signed_presence_channel_data_without_a_valid_user_id_is_refused(
    topology: Topology, custom_data: dict[str, Any]
) -> None:
    channel = unique("presence-invalid")
    sdk = topology.sdk()

    frame = await subscription_answer(
        topology.ws_port(1), APP_KEY, channel, sign=lambda socket_id: sdk.authenticate(channel, socket_id, custom_data)
    )

    assert frame.event == "pusher:subscription_error"
    assert frame.data["status"] == 400
