"""`max_backend_events_per_second`: publishes past an app's limit get HTTP 429 with a JSON error, never a silent drop.

The limit is counted across the cluster: on the cluster topology the requests alternate between two
`hub ingest` nodes. A publish counts once per channel, as Pusher counts messages.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.support.js_clients import JsClients
from tests.support.names import unique
from tests.support.ports import LOOPBACK, free_port
from tests.support.request_signing import signed_params
from tests.support.topology import TOPOLOGIES, Topology, running_topology, start_ingest_node

LIMIT = 5
LIMITED: dict[str, Any] = {"id": "61", "key": "limited-key", "secret": "limited-secret"}
FANOUT: dict[str, Any] = {"id": "62", "key": "fanout-key", "secret": "fanout-secret"}
READ_LIMIT = 3
READER: dict[str, Any] = {
    "id": "63",
    "key": "reader-key",
    "secret": "reader-secret",
    "max_read_requests_per_second": READ_LIMIT,
}


@pytest.fixture(scope="module", params=TOPOLOGIES)
def topology(request: pytest.FixtureRequest) -> Iterator[Topology]:
    """A deployment serving the limited apps; the cluster gets a second ingest node."""
    apps = [{**app, "max_backend_events_per_second": LIMIT} for app in (LIMITED, FANOUT)] + [READER]
    with running_topology(request.param, apps) as running:
        yield running


@pytest.fixture(scope="module")
def api_ports(topology: Topology) -> list[int]:
    """Every HTTP API port of the topology: one for `hub serve`, two ingest nodes on the cluster."""
    if not topology.clustered:
        return [topology.api_port]
    second = free_port()
    start_ingest_node(topology, second)
    return [topology.api_port, second]


async def publish(port: int, app: dict[str, Any], channels: list[str], n: int) -> tuple[int, dict[str, str], Any]:
    """POST /apps/{id}/events signed as the SDK signs; returns status, headers and the JSON body."""
    path = f"/apps/{app['id']}/events"
    raw = json.dumps({"name": "tick", "data": json.dumps({"n": n}), "channels": channels}).encode()
    params = signed_params("POST", path, raw, key=app["key"], secret=app["secret"])
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://{LOOPBACK}:{port}{path}", params=params, data=raw, headers={"Content-Type": "application/json"}
        ) as response,
    ):
        return response.status, dict(response.headers), await response.json(content_type=None)


async def test_backend_events_past_the_per_second_limit_get_429_with_a_json_error_and_retry_after(
    topology: Topology, api_ports: list[int], js: JsClients
) -> None:
    channel = unique("ticker")
    await js.connect("a", port=topology.ws_port(1), key=LIMITED["key"])
    await js.subscribe("a", channel)

    answers = [await publish(api_ports[n % len(api_ports)], LIMITED, [channel], n) for n in range(LIMIT + 1)]

    assert [status for status, _, _ in answers] == [200] * LIMIT + [429]
    _, headers, body = answers[-1]
    assert body == {"error": f"Too many events: the app may publish {LIMIT} per second.", "code": 429}
    assert headers["Content-Type"].startswith("application/json")
    retry_after = float(headers["Retry-After"])
    assert 0 < retry_after <= 60
    for n in range(LIMIT):
        await js.wait_for("a", source="channel", channel=channel, event="tick", data={"n": n})
    await js.expect_none("a", source="channel", event="tick", data={"n": LIMIT}, within=0.3)


async def test_a_publish_to_several_channels_counts_once_per_channel(topology: Topology, api_ports: list[int]) -> None:
    channels = [unique("wide") for _ in range(3)]

    first = await publish(api_ports[0], FANOUT, channels, 0)
    second = await publish(api_ports[-1], FANOUT, channels, 1)

    assert first[0] == 200
    assert second[0] == 429, f"{2 * len(channels)} channel publishes within a second passed a limit of {LIMIT}"


async def query(port: int, app: dict[str, Any], path: str) -> tuple[int, dict[str, str], Any]:
    """A signed GET of the HTTP API; returns status, headers and the JSON body."""
    full = f"/apps/{app['id']}{path}"
    params = signed_params("GET", full, b"", key=app["key"], secret=app["secret"])
    async with aiohttp.ClientSession() as session, session.get(f"http://{LOOPBACK}:{port}{full}", params=params) as r:
        return r.status, dict(r.headers), await r.json(content_type=None)


async def test_channel_queries_past_the_read_limit_get_429_while_publishes_are_not_counted(
    topology: Topology, api_ports: list[int]
) -> None:
    channel = unique("read")
    published = [await publish(api_ports[0], READER, [channel], n) for n in range(READ_LIMIT + 1)]
    paths = ["/channels", f"/channels/{channel}", "/channels", f"/channels/{channel}"]

    answers = [await query(api_ports[n % len(api_ports)], READER, path) for n, path in enumerate(paths)]

    assert [status for status, _, _ in published] == [200] * (READ_LIMIT + 1), "publishes are not reads"
    assert [status for status, _, _ in answers] == [200] * READ_LIMIT + [429]
    _, headers, body = answers[-1]
    assert body == {
        "error": f"Too many requests: the app may make {READ_LIMIT} channel queries per second.",
        "code": 429,
    }
    assert float(headers["Retry-After"]) > 0
