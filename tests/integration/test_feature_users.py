"""User authentication with real pusher-js: sign-in, server-to-user events, terminate, auth timeout, watchlist.

Each test runs on one `hub serve` and on the Redis cluster (two `hub ws` nodes, one `hub ingest`); a
user's sockets sit on both ws nodes, so every delivery, close and online/offline transition crosses
nodes. Signatures come from the real `pusher` SDK (tests/support/auth_server.py).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pusher
import pytest

from tests.support.auth_server import AuthServer
from tests.support.js_clients import JsClients, find_code
from tests.support.names import unique
from tests.support.request_signing import signed_params
from tests.support.topology import TOPOLOGIES, Topology, running_topology

# Watchlist events on; sign-in optional.
USERS: dict[str, Any] = {"id": "31", "key": "users-key", "secret": "users-secret", "enable_watchlist_events": True}
# Sockets must sign in (or subscribe to a private channel) within 1.5 s; no watchlist events.
STRICT: dict[str, Any] = {
    "id": "32",
    "key": "strict-key",
    "secret": "strict-secret",
    "enable_user_authentication": True,
    "user_authentication_timeout": 1.5,
}


@pytest.fixture(scope="module", params=TOPOLOGIES)
def topology(request: pytest.FixtureRequest) -> Iterator[Topology]:
    """A deployment serving this module's apps (overrides the suite's shared topology)."""
    apps = [USERS, STRICT]
    with running_topology(request.param, apps) as running:
        yield running


@pytest.fixture
async def auth() -> AsyncIterator[AuthServer]:
    """Sign-in and channel auth for the watchlist app."""
    async with AuthServer(app_id=USERS["id"], key=USERS["key"], secret=USERS["secret"]) as server:
        yield server


@pytest.fixture
async def strict_auth() -> AsyncIterator[AuthServer]:
    """Sign-in and channel auth for the app that requires authentication."""
    async with AuthServer(app_id=STRICT["id"], key=STRICT["key"], secret=STRICT["secret"]) as server:
        yield server


def sdk(topology: Topology, app: dict[str, Any]) -> pusher.Pusher:
    """The official Python SDK for one of this module's apps."""
    return topology.sdk(app_id=app["id"], key=app["key"], secret=app["secret"])


async def call(func: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking SDK call without blocking the event loop."""
    return await asyncio.to_thread(func, *args)


async def connect(
    js: JsClients, topology: Topology, auth: AuthServer, cid: str, node: int, app: dict[str, Any], **params: Any
) -> str:
    """A pusher-js client of `app` on ws node `node`, whose auth requests carry `params`."""
    return await js.connect(
        cid,
        port=topology.ws_port(node),
        key=app["key"],
        auth_url=auth.channel_auth_url,
        user_auth_url=auth.user_auth_url,
        auth_params=params,
    )


async def sign_in(
    js: JsClients,
    topology: Topology,
    auth: AuthServer,
    cid: str,
    node: int,
    user_id: str,
    *,
    app: dict[str, Any] = USERS,
    watchlist: list[str | int] | None = None,
) -> str:
    """A pusher-js client on node `node` signed in as `user_id` (its server-to-user channel acknowledged)."""
    params: dict[str, Any] = {"user_id": user_id}
    if watchlist is not None:
        params["watchlist"] = watchlist
    socket_id = await connect(js, topology, auth, cid, node, app, **params)
    await js.signin(cid)
    return socket_id


async def post_user_event(topology: Topology, user_id: str, event: str, data: Any) -> int:
    """POST /apps/{id}/users/{user_id}/events, signed as the SDKs sign (the Python SDK has no such call)."""
    path = f"/apps/{USERS['id']}/users/{user_id}/events"
    raw = json.dumps({"name": event, "data": json.dumps(data)}).encode()
    params = signed_params("POST", path, raw, key=USERS["key"], secret=USERS["secret"])
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            topology.api_url(path), params=params, data=raw, headers={"Content-Type": "application/json"}
        ) as response,
    ):
        return response.status


async def closed_with(js: JsClients, cid: str) -> int | None:
    """Wait until the client's WebSocket closes; return the close code."""
    record = await js.wait_for(cid, source="transport", event="closed")
    return find_code(record.data)


# --- sign-in and server-to-user --------------------------------------------------------------------


@pytest.mark.parametrize("route", ["sdk_send_to_user", "users_events_endpoint"])
async def test_server_to_user_event_reaches_every_socket_of_the_user_on_every_node_and_no_one_else(
    topology: Topology, js: JsClients, auth: AuthServer, route: str
) -> None:
    alice, bob = unique("alice"), unique("bob")
    await sign_in(js, topology, auth, "alice-0", 0, alice)
    await sign_in(js, topology, auth, "alice-1", 1, alice)
    await sign_in(js, topology, auth, "bob", 1, bob)
    await connect(js, topology, auth, "anonymous", 0, USERS)
    mark = js.mark()

    if route == "sdk_send_to_user":
        await call(sdk(topology, USERS).send_to_user, alice, "note", {"text": "hi alice"})
    else:
        assert await post_user_event(topology, alice, "note", {"text": "hi alice"}) == 200

    for cid in ("alice-0", "alice-1"):
        record = await js.wait_for(cid, source="user", event="note", since=mark)
        assert record.data == {"text": "hi alice"}
    for cid in ("bob", "anonymous"):
        await js.expect_none(cid, event="note", since=mark, within=0.5)


# --- terminate_connections -------------------------------------------------------------------------


async def test_terminate_connections_closes_every_socket_of_the_user_on_every_node_and_no_one_elses(
    topology: Topology, js: JsClients, auth: AuthServer
) -> None:
    alice, bob = unique("alice"), unique("bob")
    presence = unique("presence-room")
    await sign_in(js, topology, auth, "alice-0", 0, alice)
    await sign_in(js, topology, auth, "alice-1", 1, alice)
    await sign_in(js, topology, auth, "bob", 0, bob)
    # Joined a presence channel as "alice" without signing in: terminate is about signed-in users only.
    await connect(js, topology, auth, "alice-presence-only", 1, USERS, user_id=alice)
    await js.subscribe("alice-presence-only", presence)

    assert await call(sdk(topology, USERS).terminate_user_connections, alice) == {}

    assert await closed_with(js, "alice-0") == 4009
    assert await closed_with(js, "alice-1") == 4009
    mark = js.mark()
    await call(sdk(topology, USERS).send_to_user, bob, "still-here", {"ok": True})
    await js.wait_for("bob", source="user", event="still-here", since=mark)
    assert not js.events("bob", source="transport", event="closed")
    assert not js.events("alice-presence-only", source="transport", event="closed")
    assert (await js.state("alice-presence-only")).state == "connected"


# --- authorized connections (user authentication timeout) ------------------------------------------


async def test_unsigned_sockets_are_closed_with_4009_after_the_user_authentication_timeout(
    topology: Topology, js: JsClients, strict_auth: AuthServer
) -> None:
    started = time.time()
    await connect(js, topology, strict_auth, "lurker-0", 0, STRICT)
    await connect(js, topology, strict_auth, "lurker-1", 1, STRICT)
    await sign_in(js, topology, strict_auth, "member", 0, unique("member"), app=STRICT)
    await connect(js, topology, strict_auth, "private", 1, STRICT)
    await js.subscribe("private", unique("private-room"))

    last_closed = started
    for cid in ("lurker-0", "lurker-1"):
        record = await js.wait_for(cid, source="transport", event="closed", timeout=6.0)
        assert find_code(record.data) == 4009
        assert record.time - started >= STRICT["user_authentication_timeout"]
        last_closed = max(last_closed, record.time)

    # The timeout is enforced by a once-a-second sweep: one more sweep has passed the others' deadline too.
    await asyncio.sleep(max(0.0, last_closed + 1.2 - time.time()))
    for cid in ("member", "private"):
        assert not js.events(cid, source="transport", event="closed")
        assert (await js.state(cid)).state == "connected"


# --- watchlist -------------------------------------------------------------------------------------


async def test_watchlist_online_and_offline_follow_the_watched_users_sockets_on_two_nodes(
    topology: Topology, js: JsClients, auth: AuthServer
) -> None:
    carol = unique("carol")
    await sign_in(js, topology, auth, "watcher-0", 0, unique("watcher"), watchlist=[carol])
    await sign_in(js, topology, auth, "watcher-1", 1, unique("watcher"), watchlist=[carol])
    watchers = ("watcher-0", "watcher-1")
    for watcher in watchers:
        # On sign-in the watcher is told the current status of everyone it watches.
        initial = await js.wait_for(watcher, source="watchlist", event="offline")
        assert initial.data["user_ids"] == [carol]
    mark = js.mark()

    await sign_in(js, topology, auth, "carol-0", 0, carol)
    for watcher in watchers:
        record = await js.wait_for(watcher, source="watchlist", event="online", since=mark)
        assert record.data["user_ids"] == [carol]

    mark = js.mark()
    await sign_in(js, topology, auth, "carol-1", 1, carol)
    await js.disconnect("carol-0")
    for watcher in watchers:
        await js.expect_none(watcher, source="watchlist", since=mark, within=0.7)

    await js.disconnect("carol-1")
    for watcher in watchers:
        record = await js.wait_for(watcher, source="watchlist", event="offline", since=mark)
        assert record.data["user_ids"] == [carol]


async def test_watchlist_reports_users_already_online_when_the_watcher_signs_in(
    topology: Topology, js: JsClients, auth: AuthServer
) -> None:
    dave, erin = unique("dave"), unique("erin")
    await sign_in(js, topology, auth, "dave", 1, dave)

    await sign_in(js, topology, auth, "watcher", 0, unique("watcher"), watchlist=[dave, erin])

    online = await js.wait_for("watcher", source="watchlist", event="online")
    offline = await js.wait_for("watcher", source="watchlist", event="offline")
    assert online.data["user_ids"] == [dave]
    assert offline.data["user_ids"] == [erin]


async def test_watchlist_events_are_not_sent_for_an_app_without_watchlist_events(
    topology: Topology, js: JsClients, strict_auth: AuthServer
) -> None:
    frank = unique("frank")
    await sign_in(js, topology, strict_auth, "watcher", 0, unique("watcher"), app=STRICT, watchlist=[frank])
    await sign_in(js, topology, strict_auth, "frank", 1, frank, app=STRICT)

    await js.expect_none("watcher", source="watchlist", within=0.7)


# --- Laravel-shaped sign-in: an integer user id ----------------------------------------------------


async def test_laravel_integer_user_id_signs_in_gets_its_user_events_watchlist_and_terminate(
    topology: Topology, js: JsClients, auth: AuthServer
) -> None:
    # Laravel signs {"id": $user->id}, an integer; hub, like Soketi, takes it as the user "<id>".
    user_id = secrets.randbelow(10**9) + 1
    watcher = unique("watcher")
    await sign_in(js, topology, auth, "watcher", 0, watcher, watchlist=[user_id])
    await js.wait_for("watcher", source="watchlist", event="offline")
    mark = js.mark()

    await connect(js, topology, auth, "laravel", 1, USERS, user_id=str(user_id), user_id_is_number="1")
    user_data = await js.signin("laravel")

    assert json.loads(auth.requests_for("user")[-1].body["user_data"])["id"] == user_id
    assert user_data["id"] == str(user_id)
    online = await js.wait_for("watcher", source="watchlist", event="online", since=mark)
    assert online.data["user_ids"] == [str(user_id)]
    await call(sdk(topology, USERS).send_to_user, str(user_id), "note", {"text": "hi"})
    record = await js.wait_for("laravel", source="user", event="note", since=mark)
    assert record.data == {"text": "hi"}
    assert await call(sdk(topology, USERS).terminate_user_connections, str(user_id)) == {}
    assert await closed_with(js, "laravel") == 4009
