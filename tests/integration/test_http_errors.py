"""HTTP API error paths: each refused request gets Pusher's status and a JSON body saying what is wrong.

Requests are built by hand and signed with the `pusher` SDK's own helpers (`make_query_string`, `sign`),
so a test can break exactly one thing (key, timestamp, body_md5, body) and keep the rest valid.
Runs against every topology (on the cluster the HTTP API is the `hub ingest` node).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.support.names import unique
from tests.support.request_signing import signed_params
from tests.support.topology import APP_ID, APP_KEY, APP_SECRET, Topology

LIMITED = ("2", "limited-key", "limited-secret")  # 1 KB payloads, 40-character channel names
DISABLED = ("3", "disabled-key", "disabled-secret")


@dataclass(frozen=True)
class Answer:
    """Status and decoded JSON body of one response."""

    status: int
    body: Any
    content_type: str


async def send(
    topology: Topology, method: str, path: str, body: bytes = b"", params: Mapping[str, str] | None = None
) -> Answer:
    """Send one request to the topology's HTTP API and decode its JSON answer."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            topology.api_url(path),
            params=dict(params or {}),
            data=body or None,
            headers={"Content-Type": "application/json"} if body else {},
        ) as response,
    ):
        text = await response.text()
        return Answer(response.status, json.loads(text), response.content_type)


async def trigger(
    topology: Topology, event: Any, *, app: tuple[str, str, str] = (APP_ID, APP_KEY, APP_SECRET), **signing: Any
) -> Answer:
    """POST /apps/{id}/events with `event` (an object, or raw bytes) signed for `app` unless overridden."""
    app_id, key, secret = app
    path = f"/apps/{app_id}/events"
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    signing = {"key": key, "secret": secret, **signing}
    return await send(topology, "POST", path, body, signed_params("POST", path, body, **signing))


def event_to(channel: str | None = None, **fields: Any) -> dict[str, Any]:
    """A valid trigger body to a fresh channel, with `fields` replaced."""
    return {"name": "e", "data": '{"ok":true}', "channel": channel or unique("err"), **fields}


def assert_error(answer: Answer, status: int, *words: str) -> None:
    """`answer` is `status` with Pusher's JSON error body whose message names the problem."""
    assert answer.status == status, answer
    assert answer.content_type == "application/json"
    assert set(answer.body) == {"error", "code"}
    assert answer.body["code"] == status
    message = answer.body["error"]
    assert isinstance(message, str)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


# --- app and signature -----------------------------------------------------------------------------


async def test_unknown_app_is_404_naming_the_app(topology: Topology) -> None:
    answer = await trigger(topology, event_to(), app=("999", APP_KEY, APP_SECRET))

    assert_error(answer, 404, "999")


async def test_bad_signature_is_401(topology: Topology) -> None:
    answer = await trigger(topology, event_to(), secret="not-the-secret")

    assert_error(answer, 401, "signature")


async def test_key_of_another_app_is_401(topology: Topology) -> None:
    # Signed correctly with app 2's credentials, but sent to app 1.
    answer = await trigger(topology, event_to(), key=LIMITED[1], secret=LIMITED[2])

    assert_error(answer, 401, "auth_key")


async def test_unknown_key_is_401(topology: Topology) -> None:
    answer = await trigger(topology, event_to(), key="no-such-key")

    assert_error(answer, 401, "auth_key")


@pytest.mark.parametrize("offset", [-601, 601])
async def test_timestamp_more_than_600_seconds_off_is_401(topology: Topology, offset: int) -> None:
    answer = await trigger(topology, event_to(), timestamp=time.time() + offset)

    assert_error(answer, 401, "auth_timestamp", "600")


async def test_timestamp_within_600_seconds_is_accepted(topology: Topology) -> None:
    answer = await trigger(topology, event_to(), timestamp=time.time() - 590)

    assert (answer.status, answer.body) == (200, {})


async def test_body_md5_that_does_not_match_the_body_is_401(topology: Topology) -> None:
    answer = await trigger(topology, event_to(), body_md5=hashlib.md5(b"another body").hexdigest())

    assert_error(answer, 401, "body_md5")


async def test_missing_auth_signature_is_401(topology: Topology) -> None:
    path = f"/apps/{APP_ID}/events"
    body = json.dumps(event_to()).encode()
    params = signed_params("POST", path, body)
    del params["auth_signature"]

    answer = await send(topology, "POST", path, body, params)

    assert_error(answer, 401, "auth_signature")


async def test_get_with_the_python_sdk_empty_body_md5_is_accepted(topology: Topology) -> None:
    path = f"/apps/{APP_ID}/channels"
    params = signed_params("GET", path, b"", extra={"filter_by_prefix": unique("none")})
    assert params["body_md5"] == "d41d8cd98f00b204e9800998ecf8427e"

    answer = await send(topology, "GET", path, params=params)

    assert (answer.status, answer.body) == (200, {"channels": {}})


async def test_get_with_a_body_md5_of_a_non_empty_body_is_401(topology: Topology) -> None:
    path = f"/apps/{APP_ID}/channels"
    params = signed_params("GET", path, b"", body_md5=hashlib.md5(b"{}").hexdigest())

    answer = await send(topology, "GET", path, params=params)

    assert_error(answer, 401, "body_md5")


async def test_disabled_app_is_403(topology: Topology) -> None:
    answer = await trigger(topology, event_to(), app=DISABLED)

    assert_error(answer, 403, "not enabled")


# --- body ------------------------------------------------------------------------------------------


async def test_data_over_the_app_payload_limit_is_413(topology: Topology) -> None:
    answer = await trigger(topology, event_to(data="x" * 1025), app=LIMITED)

    assert_error(answer, 413, "1 KB")


async def test_data_at_the_app_payload_limit_is_accepted(topology: Topology) -> None:
    answer = await trigger(topology, event_to(data="x" * 1024), app=LIMITED)

    assert (answer.status, answer.body) == (200, {})


async def test_invalid_json_is_400(topology: Topology) -> None:
    answer = await trigger(topology, b'{"name": "e", "data": ')

    assert_error(answer, 400, "not valid JSON")


@pytest.mark.parametrize("body", [b"[]", b'"event"', b"42", b"null"])
async def test_body_that_is_not_a_json_object_is_400(topology: Topology, body: bytes) -> None:
    answer = await trigger(topology, body)

    assert_error(answer, 400, "JSON object")


async def test_missing_name_is_400(topology: Topology) -> None:
    event = event_to()
    del event["name"]

    assert_error(await trigger(topology, event), 400, "name")


async def test_missing_data_is_400(topology: Topology) -> None:
    event = event_to()
    del event["data"]

    assert_error(await trigger(topology, event), 400, "data")


async def test_missing_channel_is_400(topology: Topology) -> None:
    event = event_to()
    del event["channel"]

    assert_error(await trigger(topology, event), 400, "channel")


@pytest.mark.parametrize("channel", ["has space", "emoji-\u2603", "", "a" * 201])
async def test_invalid_channel_name_is_400_naming_the_channel(topology: Topology, channel: str) -> None:
    answer = await trigger(topology, event_to(channels=[channel]))

    assert_error(answer, 400, "channel")


async def test_channel_name_longer_than_the_app_limit_is_400(topology: Topology) -> None:
    answer = await trigger(topology, event_to("c" * 41), app=LIMITED)

    assert_error(answer, 400, "c" * 41)


async def test_malformed_socket_id_is_400(topology: Topology) -> None:
    answer = await trigger(topology, event_to(socket_id="not-a-socket"))

    assert_error(answer, 400, "socket_id")


async def test_batch_item_that_is_not_an_object_is_400(topology: Topology) -> None:
    path = f"/apps/{APP_ID}/batch_events"
    body = json.dumps({"batch": [event_to(), "not an event"]}).encode()

    answer = await send(topology, "POST", path, body, signed_params("POST", path, body))

    assert_error(answer, 400, "batch item")


async def test_compressed_body_that_does_not_decompress_is_400(topology: Topology) -> None:
    path = f"/apps/{APP_ID}/events"
    garbage = b"this is not gzip data" * 10

    async def slowly() -> AsyncIterator[bytes]:
        # Arrives after the handler started reading, so the hub (not aiohttp's parser) meets the error.
        await asyncio.sleep(0.2)
        yield garbage

    params = signed_params("POST", path, garbage)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            topology.api_url(path), params=params, data=slowly(), headers={"Content-Encoding": "gzip"}
        ) as response,
    ):
        answer = Answer(response.status, json.loads(await response.text()), response.content_type)

    assert_error(answer, 400, "could not be read")


# --- paths and methods -----------------------------------------------------------------------------


async def test_unknown_path_is_404_with_a_json_body(topology: Topology) -> None:
    answer = await send(topology, "GET", f"/apps/{APP_ID}/nothing-here")

    assert_error(answer, 404, f"/apps/{APP_ID}/nothing-here")


async def test_wrong_method_is_405_with_a_json_body_naming_the_allowed_one(topology: Topology) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.put(topology.api_url(f"/apps/{APP_ID}/events")) as response,
    ):
        answer = Answer(response.status, json.loads(await response.text()), response.content_type)
        allow = response.headers.get("Allow")

    assert_error(answer, 405, "PUT", "POST")
    assert allow == "POST"
