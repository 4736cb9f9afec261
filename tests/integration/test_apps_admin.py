"""Apps changed through the admin API and `hub apps` on a running 2-node cluster, with Redis and PostgreSQL stores.

What a change does to live traffic (README "Apps without restarts"): a new app works on every node
without a restart; a rotated secret applies from the next request and subscription; a disabled or
deleted app's sockets close on every node (4003/4001, pusher-js does not come back) and its API calls
get 403/404; a changed limit applies to the next connection. Each test uses apps of its own.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pusher
import pytest

from hub.appstore.postgres import migrate
from tests.support.app_store_cluster import ADMIN_TOKEN, StoreCluster
from tests.support.js_clients import JsClients, require_js_harness
from tests.support.ports import LOOPBACK
from tests.support.postgres_server import PostgresServer
from tests.support.raw_ws import RawClient, open_established, refusal
from tests.support.redis_server import RedisServer
from tests.support.request_signing import signed_params
from tests.support.requirements import require_executable

pytestmark = pytest.mark.cluster

STORES = ("redis", "postgres")
# The store's contract: a change is on every node within a second (plus test and machine slack).
PROPAGATION_SECONDS = 1.0


@pytest.fixture(scope="module", params=STORES)
def cluster(request: pytest.FixtureRequest) -> Iterator[StoreCluster]:
    """A 2-ws + 1-ingest cluster whose apps live in Redis, or in PostgreSQL."""
    require_executable("redis-server")
    with RedisServer() as redis:
        if request.param == "redis":
            with StoreCluster(redis.url, ["--app-store", "redis"]) as running:
                yield running
            return
        with PostgresServer() as pg:
            asyncio.run(migrate(pg.url, "apps"))
            with StoreCluster(redis.url, ["--app-store", "postgres", "--postgres-url", pg.url]) as running:
                yield running


@pytest.fixture
async def js() -> AsyncIterator[JsClients]:
    """Real pusher-js clients."""
    require_js_harness()
    async with JsClients() as clients:
        yield clients


def _new_id() -> str:
    return str(uuid.uuid4().int % 10**9 + 10**9)


def admin(
    cluster: StoreCluster, node: int, method: str, path: str, body: Any = None, token: str | None = ADMIN_TOKEN
) -> tuple[int, Any]:
    """One admin API call to node ``node``: (status, decoded JSON body or None)."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(cluster.admin_url(node) + path, data=data, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, json.loads(raw) if raw else None


def publish_status(cluster: StoreCluster, app: dict[str, Any], secret: str | None = None, channel: str = "ch") -> int:
    """HTTP status of a signed publish to ``app`` on the ingest node."""
    path = f"/apps/{app['id']}/events"
    body = json.dumps({"name": "news", "channels": [channel], "data": json.dumps({"n": 1})}).encode()
    params = signed_params("POST", path, body, key=app["key"], secret=secret or app["secret"])
    request = urllib.request.Request(
        cluster.api_url(f"{path}?{urllib.parse.urlencode(params)}"),
        data=body,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code


async def on_every_node(cluster: StoreCluster, app_id: str, check: Any, what: str) -> float:
    """Seconds until every node's admin API shows app ``app_id`` passing ``check`` (None: the app is gone)."""
    started = time.monotonic()
    for node in range(len(cluster.admin_ports)):
        while True:
            status, body = await asyncio.to_thread(admin, cluster, node, "GET", f"/api/apps/{app_id}")
            if check(body if status == 200 else None):
                break
            if time.monotonic() - started > PROPAGATION_SECONDS + 1.0:
                pytest.fail(f"{what} not on node {node} within {PROPAGATION_SECONDS} s (+1 s slack)")
            await asyncio.sleep(0.01)
    return time.monotonic() - started


# --- authentication -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong-token-wrong-token", ADMIN_TOKEN + "x"])
def test_admin_api_refuses_a_missing_or_wrong_token(cluster: StoreCluster, token: str | None) -> None:
    app_id = _new_id()
    for method, path, body in [
        ("GET", "/api/apps", None),
        ("POST", "/api/apps", {"id": app_id}),
        ("PATCH", f"/api/apps/{app_id}", {"enabled": False}),
        ("DELETE", f"/api/apps/{app_id}", None),
    ]:
        status, answer = admin(cluster, 0, method, path, body, token=token)
        assert status == 401, (method, path)
        assert answer["code"] == 401
    assert admin(cluster, 0, "GET", f"/api/apps/{app_id}")[0] == 404


def test_hub_apps_with_a_wrong_token_exits_1_naming_the_401(cluster: StoreCluster) -> None:
    result = cluster.hub_apps(0, "list", token="wrong-token-wrong-token")
    assert result.returncode == 1
    assert result.stderr.startswith("hub apps: 401 ")


# --- errors ---------------------------------------------------------------------------------------------------


def test_admin_api_names_the_wrong_field_and_refuses_duplicates(cluster: StoreCluster) -> None:
    app_id = _new_id()
    status, body = admin(cluster, 0, "POST", "/api/apps", {"id": app_id, "max_connections": "many"})
    assert (status, body["field"]) == (400, "max_connections")
    status, body = admin(cluster, 0, "POST", "/api/apps", {"id": app_id, "colour": "red"})
    assert (status, body["field"]) == (400, "colour")
    assert admin(cluster, 0, "POST", "/api/apps", b"{not json")[1]["field"] == "body"
    status, created = admin(cluster, 0, "POST", "/api/apps", {"id": app_id})
    assert status == 201
    status, body = admin(cluster, 1, "POST", "/api/apps", {"id": app_id, "key": "another-key-" + app_id})
    assert (status, body["field"]) == (409, "id")
    status, body = admin(cluster, 1, "POST", "/api/apps", {"id": _new_id(), "key": created["key"]})
    assert (status, body["field"]) == (409, "key")
    status, body = admin(cluster, 0, "PATCH", f"/api/apps/{app_id}", {"id": "other"})
    assert (status, body["field"]) == (400, "id")
    assert admin(cluster, 0, "PATCH", "/api/apps/no-such-app", {"enabled": False})[0] == 404
    assert admin(cluster, 0, "DELETE", "/api/apps/no-such-app")[0] == 404


def test_hub_apps_set_with_a_bad_value_exits_1_naming_the_field(cluster: StoreCluster) -> None:
    app = cluster.created(0)
    result = cluster.hub_apps(0, "set", app["id"], "max_connections=lots")
    assert result.returncode == 1
    assert "400" in result.stderr and "(field max_connections)" in result.stderr


# --- live traffic ---------------------------------------------------------------------------------------------


async def test_app_created_with_hub_apps_serves_pusher_js_on_every_node_without_a_restart(
    cluster: StoreCluster, js: JsClients
) -> None:
    app = await asyncio.to_thread(cluster.created, 0, f"id={_new_id()}")
    seconds = await on_every_node(cluster, app["id"], lambda a: a is not None, "the new app")
    print(f"new app on every node after {seconds * 1000:.0f} ms")
    for node, port in enumerate(cluster.ws_ports):
        await js.connect(f"c{node}", port=port, key=app["key"])
        await js.subscribe(f"c{node}", "news")
    sdk = pusher.Pusher(
        app_id=app["id"], key=app["key"], secret=app["secret"], host=LOOPBACK, port=cluster.api_port, ssl=False
    )
    await asyncio.to_thread(sdk.trigger, "news", "headline", {"n": 1})
    for node in range(len(cluster.ws_ports)):
        record = await js.wait_for(f"c{node}", source="channel", event="headline")
        assert record.data == {"n": 1}


async def test_rotated_secret_applies_from_the_next_request_and_subscription(cluster: StoreCluster) -> None:
    app = await asyncio.to_thread(cluster.created, 0)
    await on_every_node(cluster, app["id"], lambda a: a is not None, "the new app")
    old = pusher.Pusher(app_id=app["id"], key=app["key"], secret=app["secret"])
    client = await open_established(cluster.ws_ports[1], app["key"])
    try:
        answer = await client.subscribe("private-a", auth=old.authenticate("private-a", client.socket_id)["auth"])
        assert answer.event == "pusher_internal:subscription_succeeded"
        result = await asyncio.to_thread(cluster.hub_apps, 0, "set", app["id"], "secret=rotated-secret-value")
        assert result.returncode == 0, result.stderr
        await on_every_node(cluster, app["id"], lambda a: a and a["secret"] == "rotated-secret-value", "new secret")
        assert publish_status(cluster, app) == 401
        mark = client.mark()
        assert publish_status(cluster, app, "rotated-secret-value", channel="private-a") == 200
        await client.wait_event("news", channel="private-a", since=mark)  # the subscription made before stays
        refused = await client.subscribe("private-b", auth=old.authenticate("private-b", client.socket_id)["auth"])
        assert refused.event == "pusher:subscription_error"
        new = pusher.Pusher(app_id=app["id"], key=app["key"], secret="rotated-secret-value")
        answer = await client.subscribe("private-c", auth=new.authenticate("private-c", client.socket_id)["auth"])
        assert answer.event == "pusher_internal:subscription_succeeded"
    finally:
        await client.close()


async def test_disabling_an_app_closes_its_sockets_on_every_node_and_pusher_js_stays_away(
    cluster: StoreCluster, js: JsClients
) -> None:
    app = await asyncio.to_thread(cluster.created, 0)
    await on_every_node(cluster, app["id"], lambda a: a is not None, "the new app")
    for node, port in enumerate(cluster.ws_ports):
        await js.connect(f"d{node}", port=port, key=app["key"])
    mark = js.mark()
    result = await asyncio.to_thread(cluster.hub_apps, 1, "disable", app["id"])
    assert result.returncode == 0, result.stderr
    for node in range(len(cluster.ws_ports)):
        await js.wait_for(f"d{node}", source="transport", event="closed", since=mark, timeout=5)
        assert js.close_code(f"d{node}") == 4003
    for node in range(len(cluster.ws_ports)):
        # 4000-4099 is "refused" to pusher-js: no reconnection attempt, not even after a backoff.
        await js.expect_none(
            f"d{node}",
            source="connection",
            event="state_change",
            within=3.0,
            since=mark,
            data=lambda d: d["current"] in ("connecting", "connected"),
        )
    assert publish_status(cluster, app) == 403
    assert (await refusal(cluster.ws_ports[0], app["key"]))[1] == 4003
    result = await asyncio.to_thread(cluster.hub_apps, 0, "enable", app["id"])
    assert result.returncode == 0, result.stderr
    await on_every_node(cluster, app["id"], lambda a: a and a["enabled"], "enabled again")
    assert publish_status(cluster, app) == 200


async def test_removing_an_app_closes_its_sockets_with_4001_and_its_api_answers_404(cluster: StoreCluster) -> None:
    app = await asyncio.to_thread(cluster.created, 0)
    await on_every_node(cluster, app["id"], lambda a: a is not None, "the new app")
    sockets = [await open_established(port, app["key"]) for port in cluster.ws_ports]
    try:
        result = await asyncio.to_thread(cluster.hub_apps, 0, "remove", app["id"])
        assert result.returncode == 0, result.stderr
        for client in sockets:
            assert await client.wait_closed(timeout=5) == 4001
        await on_every_node(cluster, app["id"], lambda a: a is None, "the removal")
        assert publish_status(cluster, app) == 404
        assert (await refusal(cluster.ws_ports[1], app["key"]))[1] == 4001
    finally:
        for client in sockets:
            await client.close()


async def test_a_lowered_connection_limit_applies_to_the_next_connection(cluster: StoreCluster) -> None:
    app = await asyncio.to_thread(cluster.created, 0)
    await on_every_node(cluster, app["id"], lambda a: a is not None, "the new app")
    sockets: list[RawClient] = [await open_established(port, app["key"]) for port in cluster.ws_ports]
    try:
        result = await asyncio.to_thread(cluster.hub_apps, 0, "set", app["id"], "max_connections=2")
        assert result.returncode == 0, result.stderr
        await on_every_node(cluster, app["id"], lambda a: a and a["max_connections"] == 2, "the new limit")
        assert (await refusal(cluster.ws_ports[0], app["key"]))[1] == 4004
        assert not any(client.closed for client in sockets)  # open sockets are not cut to fit
    finally:
        for client in sockets:
            await client.close()


def test_hub_apps_list_shows_the_store_and_the_apps(cluster: StoreCluster) -> None:
    app = cluster.created(0, "enable_client_messages=true")
    result = cluster.hub_apps(2, "list")
    assert result.returncode == 0, result.stderr
    assert f"({cluster.store_args[1]} store)" in result.stdout.splitlines()[0]
    got = cluster.hub_apps(0, "get", app["id"])
    assert json.loads(got.stdout)["enable_client_messages"] is True
