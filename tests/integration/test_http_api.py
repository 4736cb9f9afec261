"""The Pusher HTTP API as the real `pusher` Python SDK uses it, with real pusher-js subscribers.

Every test runs against each topology: one `hub serve`, and the Redis cluster (two `hub ws` nodes and
one `hub ingest`), where subscribers sit on different nodes so delivery and counts cross nodes.
The SDK is blocking, so its calls run in a thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pusher
import pytest

from tests.support.auth_server import AuthServer
from tests.support.js_clients import JsClients
from tests.support.names import unique
from tests.support.polling import eventually
from tests.support.request_signing import signed_params
from tests.support.topology import APP_ID, APP_KEY, APP_SECRET, Topology


async def call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking SDK call without blocking the event loop."""
    return await asyncio.to_thread(func, *args, **kwargs)


async def signed_post(topology: Topology, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    """POST a JSON body signed the way the SDK signs (its own helpers), for bodies the SDK will not build."""
    raw = json.dumps(body).encode()
    params = signed_params("POST", path, raw, key=APP_KEY, secret=APP_SECRET)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            topology.api_url(path), params=params, data=raw, headers={"Content-Type": "application/json"}
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


@pytest.fixture
def sdk(topology: Topology) -> pusher.Pusher:
    """The official SDK for app 1 of the topology."""
    return topology.sdk()


async def connect_subscribed(js: JsClients, topology: Topology, cid: str, node: int, *channels: str, **kw: Any) -> str:
    """A pusher-js client on ws node `node`, subscribed to `channels`; returns its socket id."""
    socket_id = await js.connect(cid, port=topology.ws_port(node), key=APP_KEY, **kw)
    for channel in channels:
        await js.subscribe(cid, channel)
    return socket_id


async def join_presence(js: JsClients, topology: Topology, auth: AuthServer, cid: str, node: int, channel: str) -> str:
    """A pusher-js client on node `node` that joined presence `channel` as user `cid`."""
    return await connect_subscribed(
        js, topology, cid, node, channel, auth_url=auth.channel_auth_url, auth_params={"user_id": cid}
    )


# --- trigger ---------------------------------------------------------------------------------------


async def test_trigger_to_one_channel_reaches_subscribers_on_every_node_and_answers_empty_object(
    topology: Topology, js: JsClients, sdk: pusher.Pusher
) -> None:
    channel = unique("news")
    await connect_subscribed(js, topology, "a", 0, channel)
    await connect_subscribed(js, topology, "b", 1, channel)

    response = await call(sdk.trigger, channel, "headline", {"title": "hello"})

    assert response == {}
    for cid in ("a", "b"):
        record = await js.wait_for(cid, source="channel", channel=channel, event="headline")
        assert record.data == {"title": "hello"}


async def test_trigger_to_many_channels_delivers_to_each_channel_up_to_the_limit_of_100(
    topology: Topology, js: JsClients, sdk: pusher.Pusher
) -> None:
    prefix = unique("many")
    channels = [f"{prefix}-{i}" for i in range(100)]
    watched = [channels[0], channels[57], channels[99]]
    await connect_subscribed(js, topology, "a", 0, watched[0], watched[1])
    await connect_subscribed(js, topology, "b", 1, watched[2])

    response = await call(sdk.trigger, channels, "fanout", {"n": 100})

    assert response == {}
    for cid, channel in (("a", watched[0]), ("a", watched[1]), ("b", watched[2])):
        record = await js.wait_for(cid, source="channel", channel=channel, event="fanout")
        assert record.data == {"n": 100}


async def test_trigger_to_101_channels_is_refused_with_400_and_delivers_nothing(
    topology: Topology, js: JsClients
) -> None:
    prefix = unique("toomany")
    channels = [f"{prefix}-{i}" for i in range(101)]
    await connect_subscribed(js, topology, "a", 0, channels[0])
    mark = js.mark()

    # The SDK refuses more than 100 channels itself, so the request is built and signed by hand.
    status, body = await signed_post(
        topology, f"/apps/{APP_ID}/events", {"name": "fanout", "data": "{}", "channels": channels}
    )

    assert status == 400
    assert body["code"] == 400
    assert "100 channels" in body["error"]
    await js.expect_none("a", source="channel", event="fanout", since=mark, within=0.3)


async def test_batch_trigger_delivers_each_event_to_its_own_channel(
    topology: Topology, js: JsClients, sdk: pusher.Pusher
) -> None:
    first, second = unique("batch-a"), unique("batch-b")
    await connect_subscribed(js, topology, "a", 0, first)
    await connect_subscribed(js, topology, "b", 1, second)

    response = await call(
        sdk.trigger_batch,
        [
            {"channel": first, "name": "one", "data": {"i": 1}},
            {"channel": second, "name": "two", "data": {"i": 2}},
            {"channel": first, "name": "three", "data": {"i": 3}},
        ],
    )

    assert response == {}
    assert (await js.wait_for("a", source="channel", channel=first, event="one")).data == {"i": 1}
    assert (await js.wait_for("a", source="channel", channel=first, event="three")).data == {"i": 3}
    assert (await js.wait_for("b", source="channel", channel=second, event="two")).data == {"i": 2}
    assert not js.events("a", source="channel", event="two")
    assert not js.events("b", source="channel", event="one")


async def test_batch_of_more_than_10_events_is_refused_with_400(topology: Topology, sdk: pusher.Pusher) -> None:
    channel = unique("bigbatch")
    batch = [{"channel": channel, "name": f"e{i}", "data": {"i": i}} for i in range(11)]

    with pytest.raises(pusher.errors.PusherBadRequest) as refused:
        await call(sdk.trigger_batch, batch)

    body = json.loads(str(refused.value))
    assert body == {"error": "A batch can hold at most 10 events.", "code": 400}


async def test_trigger_with_socket_id_excludes_only_that_connection(
    topology: Topology, js: JsClients, sdk: pusher.Pusher
) -> None:
    channel = unique("others")
    sender = await connect_subscribed(js, topology, "sender", 0, channel)
    await connect_subscribed(js, topology, "peer-far", 1, channel)
    await connect_subscribed(js, topology, "peer-near", 0, channel)

    assert await call(sdk.trigger, channel, "said", {"n": 1}, socket_id=sender) == {}
    assert await call(sdk.trigger, channel, "said", {"n": 2}) == {}

    for peer in ("peer-far", "peer-near"):
        await js.wait_for(peer, source="channel", channel=channel, event="said", data={"n": 1})
    # Events of one publisher arrive in order, so once the second one is in, the first was skipped.
    await js.wait_for("sender", source="channel", channel=channel, event="said", data={"n": 2})
    assert [r.data for r in js.events("sender", source="channel", event="said")] == [{"n": 2}]


async def test_trigger_with_info_answers_user_and_subscription_counts_per_channel(
    topology: Topology, js: JsClients, auth: AuthServer
) -> None:
    presence, public = unique("presence-room"), unique("lobby")
    await join_presence(js, topology, auth, "alice", 0, presence)
    await join_presence(js, topology, auth, "bob", 1, presence)
    await js.subscribe("alice", public)
    await js.subscribe("bob", public)
    path = f"/apps/{APP_ID}/events"
    body = {"name": "hi", "data": "{}", "channels": [presence, public], "info": "user_count,subscription_count"}

    async def counts() -> tuple[int, Any]:
        return await signed_post(topology, path, body)

    await eventually(
        counts,
        (
            200,
            {
                "channels": {
                    presence: {"user_count": 2, "subscription_count": 2},
                    public: {"subscription_count": 2},
                }
            },
        ),
    )
    await js.wait_for("alice", source="channel", channel=public, event="hi")


async def test_plain_trigger_answers_an_empty_json_object(topology: Topology) -> None:
    status, body = await signed_post(
        topology, f"/apps/{APP_ID}/events", {"name": "e", "data": "x", "channel": unique("plain")}
    )

    assert (status, body) == (200, {})


# --- channel queries -------------------------------------------------------------------------------


async def test_channels_lists_only_occupied_channels_matching_the_prefix(
    topology: Topology, js: JsClients, sdk: pusher.Pusher
) -> None:
    prefix = unique("room")
    first, second, elsewhere = f"{prefix}-1", f"{prefix}-2", unique("elsewhere")
    await connect_subscribed(js, topology, "a", 0, first, elsewhere)
    await connect_subscribed(js, topology, "b", 1, second)

    async def listed() -> Any:
        return await call(sdk.channels_info, prefix_filter=prefix)

    await eventually(listed, {"channels": {first: {}, second: {}}})
    everything = await call(sdk.channels_info)
    assert {first, second, elsewhere} <= set(everything["channels"])

    await js.unsubscribe("b", second)
    await eventually(listed, {"channels": {first: {}}})


async def test_channels_with_user_count_reports_members_of_each_presence_channel(
    topology: Topology, js: JsClients, auth: AuthServer, sdk: pusher.Pusher
) -> None:
    prefix = unique("presence-team")
    busy, quiet = f"{prefix}-busy", f"{prefix}-quiet"
    await join_presence(js, topology, auth, "alice", 0, busy)
    await join_presence(js, topology, auth, "bob", 1, busy)
    await js.subscribe("alice", quiet)

    async def listed() -> Any:
        return await call(sdk.channels_info, prefix_filter=prefix, attributes=["user_count"])

    await eventually(listed, {"channels": {busy: {"user_count": 2}, quiet: {"user_count": 1}}})


async def test_channels_with_user_count_needs_a_presence_prefix(topology: Topology, sdk: pusher.Pusher) -> None:
    for prefix in (None, "private-", "news"):
        with pytest.raises(pusher.errors.PusherBadRequest) as refused:
            await call(sdk.channels_info, prefix_filter=prefix, attributes=["user_count"])
        body = json.loads(str(refused.value))
        assert body["code"] == 400
        assert "filter_by_prefix=presence-" in body["error"]


async def test_channel_info_sums_subscription_count_across_nodes(
    topology: Topology, js: JsClients, sdk: pusher.Pusher
) -> None:
    channel = unique("counted")
    await connect_subscribed(js, topology, "a", 0, channel)
    await connect_subscribed(js, topology, "b", 1, channel)
    await connect_subscribed(js, topology, "c", 1, channel)

    async def info() -> Any:
        return await call(sdk.channel_info, channel, ["subscription_count"])

    await eventually(info, {"occupied": True, "subscription_count": 3})
    await js.disconnect("c")
    await eventually(info, {"occupied": True, "subscription_count": 2})


async def test_channel_info_of_presence_channel_counts_users_once_and_sockets_each(
    topology: Topology, js: JsClients, auth: AuthServer, sdk: pusher.Pusher
) -> None:
    channel = unique("presence-desk")
    await join_presence(js, topology, auth, "alice", 0, channel)
    await join_presence(js, topology, auth, "bob", 1, channel)
    # alice again, from a second socket on the other node: still one user, one more subscription
    await connect_subscribed(
        js, topology, "alice-2", 1, channel, auth_url=auth.channel_auth_url, auth_params={"user_id": "alice"}
    )

    async def info() -> Any:
        return await call(sdk.channel_info, channel, ["user_count", "subscription_count"])

    await eventually(info, {"occupied": True, "user_count": 2, "subscription_count": 3})


async def test_channel_info_of_unoccupied_channel_says_not_occupied(topology: Topology, sdk: pusher.Pusher) -> None:
    channel = unique("empty")

    assert await call(sdk.channel_info, channel, ["subscription_count"]) == {
        "occupied": False,
        "subscription_count": 0,
    }


async def test_channel_info_user_count_of_non_presence_channel_is_400(topology: Topology, sdk: pusher.Pusher) -> None:
    with pytest.raises(pusher.errors.PusherBadRequest) as refused:
        await call(sdk.channel_info, unique("public"), ["user_count"])

    body = json.loads(str(refused.value))
    assert body == {"error": "info=user_count is only available for presence channels.", "code": 400}


async def test_users_lists_the_members_of_a_presence_channel(
    topology: Topology, js: JsClients, auth: AuthServer, sdk: pusher.Pusher
) -> None:
    channel = unique("presence-users")
    await join_presence(js, topology, auth, "alice", 0, channel)
    await join_presence(js, topology, auth, "bob", 1, channel)

    async def users() -> list[str]:
        answer = await call(sdk.users_info, channel)
        return sorted(user["id"] for user in answer["users"])

    await eventually(users, ["alice", "bob"])
    await js.disconnect("bob")
    await eventually(users, ["alice"])


async def test_users_of_a_non_presence_channel_is_400(topology: Topology, sdk: pusher.Pusher) -> None:
    for channel in (unique("public"), unique("private-x")):
        with pytest.raises(pusher.errors.PusherBadRequest) as refused:
            await call(sdk.users_info, channel)
        body = json.loads(str(refused.value))
        assert body == {"error": "Users can only be listed for presence channels.", "code": 400}


# --- users -----------------------------------------------------------------------------------------


async def test_terminate_user_connections_closes_every_socket_of_that_user_only(
    topology: Topology, js: JsClients, auth: AuthServer, sdk: pusher.Pusher
) -> None:
    user, other = unique("user"), unique("user")
    for cid, node, user_id in (("u-0", 0, user), ("u-1", 1, user), ("other", 1, other)):
        await js.connect(
            cid,
            port=topology.ws_port(node),
            key=APP_KEY,
            user_auth_url=auth.user_auth_url,
            auth_params={"user_id": user_id},
        )
        await js.signin(cid)
    channel = unique("after")
    await js.subscribe("other", channel)

    response = await call(sdk.terminate_user_connections, user)

    assert response == {}
    for cid in ("u-0", "u-1"):
        closed = await js.wait_for(cid, source="transport", event="closed")
        assert closed.data["code"] == 4009
    await call(sdk.trigger, channel, "still-here", {})
    await js.wait_for("other", source="channel", channel=channel, event="still-here")
    assert (await js.state("other")).state == "connected"
