"""`--path-prefix` (Soketi's pathPrefix): clients, backends and health checks reach hub under a path.

pusher-js connects to `/ws/app/{key}` with `wsPath: "/ws"`; the backend posts to `/ws/apps/{id}/events`
and signs that path, as an SDK configured with a path does. Health stays at the root as well.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.js_clients import JsClients
from tests.support.names import unique
from tests.support.request_signing import signed_params
from tests.support.topology import APP_ID, APP_KEY, APP_SECRET, Topology, start_embedded

PREFIX = "/ws"


@pytest.fixture(scope="module")
def prefixed() -> Iterator[Topology]:
    running = start_embedded(Path(tempfile.mkdtemp(prefix="hub-prefix-")), "--path-prefix", PREFIX)
    try:
        yield running
    finally:
        running.close()


async def publish(topology: Topology, path: str, channel: str, data: str) -> int:
    body = json.dumps({"name": "news", "channel": channel, "data": data}).encode()
    params = signed_params("POST", path, body, key=APP_KEY, secret=APP_SECRET)
    async with (
        aiohttp.ClientSession() as session,
        session.post(topology.api_url(path), params=params, data=body) as response,
    ):
        return response.status


async def test_clients_and_backends_meet_under_the_prefix(prefixed: Topology, js: JsClients) -> None:
    channel = unique("prefixed")
    await js.connect("reader", port=prefixed.ws_port(), key=APP_KEY, options={"wsPath": PREFIX})
    await js.subscribe("reader", channel)

    assert await publish(prefixed, f"{PREFIX}/apps/{APP_ID}/events", channel, "hello") == 200

    record = await js.wait_for("reader", source="channel", channel=channel, event="news")
    assert record.data == "hello"


async def test_the_api_is_not_served_outside_the_prefix_but_health_is_served_in_both_places(prefixed: Topology) -> None:
    assert await publish(prefixed, f"/apps/{APP_ID}/events", unique("outside"), "x") == 404
    async with aiohttp.ClientSession() as session:
        for path in ("/", "/ready", f"{PREFIX}/", f"{PREFIX}/ready"):
            async with session.get(prefixed.api_url(path)) as response:
                assert response.status == 200, path
