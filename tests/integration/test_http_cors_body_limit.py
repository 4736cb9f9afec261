"""CORS headers as `--cors-origins` says, and the HTTP body limit of `--max-http-body-kb` (413 past it).

The default (`*`, Soketi's) is checked on both shared topologies; a list of origins, CORS turned off and a
smaller body limit on their own `hub serve`, since they are a property of the process that answers.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pusher
import pytest

from tests.support.names import unique
from tests.support.request_signing import signed_params
from tests.support.topology import APP_ID, APP_KEY, APP_SECRET, Topology, start_embedded

ORIGINS = "https://app.example, https://admin.example/"


@pytest.fixture(scope="module")
def listed() -> Iterator[Topology]:
    """A `hub serve` allowing two origins, with a 64 KB body limit."""
    running = start_embedded(
        Path(tempfile.mkdtemp(prefix="hub-cors-")), "--cors-origins", ORIGINS, "--max-http-body-kb", "64"
    )
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def no_cors() -> Iterator[Topology]:
    """A `hub serve` with CORS turned off."""
    running = start_embedded(Path(tempfile.mkdtemp(prefix="hub-nocors-")), "--cors-origins=")
    try:
        yield running
    finally:
        running.close()


async def request(method: str, url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session, session.request(method, url, headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


def signed_channels_url(topology: Topology) -> str:
    path = f"/apps/{APP_ID}/channels"
    query = "&".join(f"{k}={v}" for k, v in signed_params("GET", path, b"", key=APP_KEY, secret=APP_SECRET).items())
    return topology.api_url(f"{path}?{query}")


async def test_api_and_health_answers_allow_any_origin_by_default(topology: Topology) -> None:
    origin = {"Origin": "https://tool.example"}
    for url in (signed_channels_url(topology), topology.api_url("/"), topology.api_url("/ready")):
        status, headers, _ = await request("GET", url, origin)
        assert status == 200
        assert headers["Access-Control-Allow-Origin"] == "*"


async def test_an_error_answer_carries_the_cors_header_too(topology: Topology) -> None:
    status, headers, body = await request("GET", topology.api_url(f"/apps/{APP_ID}/channels"), {"Origin": "https://x"})
    assert status == 401
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert json.loads(body)["code"] == 401


async def test_preflight_is_answered_with_the_methods_and_headers_a_browser_may_use(topology: Topology) -> None:
    preflight = {
        "Origin": "https://tool.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-socket-id",
    }
    status, headers, _ = await request("OPTIONS", topology.api_url(f"/apps/{APP_ID}/events"), preflight)
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "x-socket-id"} <= allowed


async def test_a_listed_origin_is_echoed_and_an_unlisted_one_gets_no_cors_header(listed: Topology) -> None:
    url = signed_channels_url(listed)
    for origin in ("https://app.example", "https://admin.example"):
        status, headers, _ = await request("GET", url, {"Origin": origin})
        assert status == 200
        assert headers["Access-Control-Allow-Origin"] == origin
        assert headers["Vary"] == "Origin"
    status, headers, _ = await request("GET", url, {"Origin": "https://evil.example"})
    assert status == 200
    assert "Access-Control-Allow-Origin" not in headers
    status, headers, _ = await request(
        "OPTIONS", url, {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert "Access-Control-Allow-Origin" not in headers and "Access-Control-Allow-Methods" not in headers


async def test_cors_turned_off_sends_no_cors_headers(no_cors: Topology) -> None:
    status, headers, _ = await request("GET", signed_channels_url(no_cors), {"Origin": "https://app.example"})
    assert status == 200
    assert not [h for h in headers if h.lower().startswith("access-control-")]


async def test_a_body_over_the_limit_is_refused_with_413_and_one_under_it_is_published(listed: Topology) -> None:
    sdk = pusher.Pusher(
        app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host="127.0.0.1", port=listed.api_port, ssl=False
    )
    channel = unique("big")
    # Ten events of 9 KB: within the SDK's 10 KB per event, 90 KB in all, over the 64 KB body limit.
    batch = [{"channel": channel, "name": "chunk", "data": "x" * 9000} for _ in range(10)]
    with pytest.raises(pusher.errors.PusherBadStatus, match="413"):
        await asyncio.to_thread(sdk.trigger_batch, batch)
    assert await asyncio.to_thread(sdk.trigger_batch, batch[:6]) == {}

    path = f"/apps/{APP_ID}/events"
    raw = json.dumps({"name": "chunk", "channel": channel, "data": "x" * (70 * 1024)}).encode()
    params = signed_params("POST", path, raw, key=APP_KEY, secret=APP_SECRET)
    async with aiohttp.ClientSession() as session:
        async with session.post(listed.api_url(path), params=params, data=raw) as response:
            assert response.status == 413
            assert "65536 bytes" in (await response.json())["error"]

        # Without a Content-Length (chunked), the limit holds all the same.
        async def chunks() -> object:
            yield raw

        async with session.post(listed.api_url(path), params=params, data=chunks()) as response:
            assert response.status == 413
