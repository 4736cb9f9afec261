"""HTTP API bodies: POST /events and /batch_events parsed and checked against the app's limits."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pusher.pusher_client import PusherClient

from hub.protocol.api import TriggerEvent, load_json_object, parse_batch, parse_info, parse_trigger
from hub.protocol.errors import ApiError
from hub.protocol.limits import Limits

LIMITS = Limits()


def _body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def _event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"name": "my-event", "data": '{"x":1}', "channels": ["my-channel"]}
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not None}


def _error(parse: Callable[[], object]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse()
    return caught.value


def _trigger_error(body: bytes, limits: Limits = LIMITS) -> ApiError:
    return _error(lambda: parse_trigger(body, limits))


# --- accepted bodies -----------------------------------------------------------------------------------------------


def test_trigger_with_channels_list() -> None:
    event = parse_trigger(_body(**_event(channels=["a", "private-b"])), LIMITS)
    assert event == TriggerEvent(
        name="my-event", data='{"x":1}', channels=("a", "private-b"), socket_id=None, info=frozenset()
    )


def test_trigger_with_a_single_channel_string() -> None:
    assert parse_trigger(_body(name="e", data="d", channel="a"), LIMITS).channels == ("a",)


def test_channels_list_wins_over_channel() -> None:
    assert parse_trigger(_body(name="e", data="d", channels=["a"], channel="b"), LIMITS).channels == ("a",)


def test_duplicate_channels_are_removed_keeping_first_order() -> None:
    event = parse_trigger(_body(**_event(channels=["b", "a", "b", "a", "c"])), LIMITS)
    assert event.channels == ("b", "a", "c")


def test_data_string_is_kept_exactly() -> None:
    data = '{ "spaced" : 1.50 }'
    assert parse_trigger(_body(**_event(data=data)), LIMITS).data == data


def test_non_string_data_is_encoded_as_compact_json() -> None:
    assert parse_trigger(_body(**_event(data={"a": [1, "é"]})), LIMITS).data == '{"a":[1,"é"]}'


def test_socket_id_is_kept() -> None:
    assert parse_trigger(_body(**_event(socket_id="123.456")), LIMITS).socket_id == "123.456"


def test_info_is_parsed_into_attributes() -> None:
    event = parse_trigger(_body(**_event(info="user_count, subscription_count")), LIMITS)
    assert event.info == frozenset({"user_count", "subscription_count"})


def test_server_to_user_channel_is_accepted_from_backends() -> None:
    assert parse_trigger(_body(**_event(channels=["#server-to-user-42"])), LIMITS).channels == ("#server-to-user-42",)


def test_single_encrypted_channel_is_accepted() -> None:
    assert parse_trigger(_body(**_event(channels=["private-encrypted-a"])), LIMITS).channels == ("private-encrypted-a",)


def test_body_of_the_real_pusher_sdk_trigger_parses() -> None:
    client = PusherClient(app_id="1", key="k", secret="s")
    request = client.trigger.make_request(["a", "b"], "my-event", {"message": "hi"}, socket_id="1.2")
    event = parse_trigger(request.body, LIMITS)
    assert (event.name, event.channels, event.socket_id) == ("my-event", ("a", "b"), "1.2")
    assert json.loads(event.data) == {"message": "hi"}


def test_body_of_the_real_pusher_sdk_batch_parses() -> None:
    client = PusherClient(app_id="1", key="k", secret="s")
    batch = [{"channel": "a", "name": "e1", "data": {"x": 1}}, {"channel": "b", "name": "e2", "data": "y"}]
    events = parse_batch(client.trigger_batch.make_request(batch).body, LIMITS)
    assert [(e.name, e.channels, e.data) for e in events] == [("e1", ("a",), '{"x": 1}'), ("e2", ("b",), "y")]


# --- 400: missing or wrong fields -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [None, "", 5, ["e"]])
def test_missing_or_non_string_name_is_400(name: object) -> None:
    body = _body(**_event(name=None), **({} if name is None else {"name": name}))
    error = _trigger_error(body)
    assert (error.status, error.message) == (400, "Event name (name) is required and must be a string.")


def test_name_over_the_limit_is_400() -> None:
    error = _trigger_error(_body(**_event(name="e" * 201)))
    assert (error.status, error.message) == (400, "Event name is longer than 200 characters.")


def test_name_at_the_limit_is_accepted() -> None:
    assert parse_trigger(_body(**_event(name="e" * 200)), LIMITS).name == "e" * 200


def test_missing_data_is_400() -> None:
    error = _trigger_error(_body(name="e", channels=["a"]))
    assert (error.status, error.message) == (400, "Event data (data) is required.")


def test_missing_channels_and_channel_is_400() -> None:
    error = _trigger_error(_body(name="e", data="d"))
    assert (error.status, error.message) == (400, "Either channels (a list) or channel (a string) is required.")


def test_non_string_channel_without_channels_is_400() -> None:
    error = _trigger_error(_body(name="e", data="d", channel=5))
    assert error.message == "Either channels (a list) or channel (a string) is required."


@pytest.mark.parametrize("channels", [[], "a", {"a": 1}, None])
def test_channels_that_is_not_a_non_empty_list_is_400(channels: object) -> None:
    error = _trigger_error(json.dumps({"name": "e", "data": "d", "channels": channels}).encode())
    assert (error.status, error.message) == (400, "channels must be a non-empty list of channel names.")


def test_more_than_100_channels_is_400() -> None:
    error = _trigger_error(_body(**_event(channels=[f"c{i}" for i in range(101)])))
    assert (error.status, error.message) == (400, "An event can be sent to at most 100 channels.")


def test_100_channels_are_accepted() -> None:
    assert len(parse_trigger(_body(**_event(channels=[f"c{i}" for i in range(100)])), LIMITS).channels) == 100


def test_channel_count_limit_comes_from_the_app() -> None:
    error = _trigger_error(_body(**_event(channels=["a", "b", "c"])), Limits(max_event_channels_at_once=2))
    assert error.message == "An event can be sent to at most 2 channels."


@pytest.mark.parametrize(
    ("channel", "problem"),
    [
        ("bad channel", "Channel name may only contain letters, digits and _ - = @ , . ;"),
        ("#general", "Channel names starting with # are reserved."),
        ("", "Channel name must be a non-empty string."),
        (5, "Channel name must be a non-empty string."),
        ("c" * 201, "Channel name is longer than 200 characters."),
    ],
)
def test_bad_channel_name_is_400_naming_the_channel(channel: object, problem: str) -> None:
    error = _trigger_error(_body(**_event(channels=["ok", channel])))
    assert (error.status, error.message) == (400, f"Invalid channel {channel!r}: {problem}")


def test_multi_channel_trigger_with_an_encrypted_channel_is_400() -> None:
    error = _trigger_error(_body(**_event(channels=["a", "private-encrypted-b"])))
    assert (error.status, error.message) == (400, "Events to encrypted channels must be sent to one channel at a time.")


@pytest.mark.parametrize("socket_id", ["abc", "1.2.3", "1", "", 12, 1.2, "1.2\n"])
def test_bad_socket_id_is_400(socket_id: object) -> None:
    error = _trigger_error(_body(**_event(socket_id=socket_id)))
    assert (error.status, error.message) == (400, "socket_id must look like 123.456.")


def test_null_socket_id_means_none() -> None:
    assert parse_trigger(b'{"name":"e","data":"d","channel":"a","socket_id":null}', LIMITS).socket_id is None


def test_unknown_info_attribute_is_400() -> None:
    error = _trigger_error(_body(**_event(info="user_count,bogus,also_bad")))
    assert (error.status, error.message) == (400, "Unsupported info attributes: also_bad, bogus.")


def test_non_string_info_is_400() -> None:
    error = _trigger_error(_body(**_event(info=["user_count"])))
    assert (error.status, error.message) == (400, "info must be a comma-separated string.")


def test_lone_surrogate_in_data_is_400_not_a_unicode_error() -> None:
    error = _trigger_error(b'{"name":"e","data":"\\ud800","channel":"a"}')
    assert (error.status, error.message) == (400, "Event name and data must be valid Unicode text.")


def test_lone_surrogate_in_name_is_400() -> None:
    error = _trigger_error(b'{"name":"\\udfff","data":"d","channel":"a"}')
    assert error.status == 400


def test_escaped_surrogate_pair_in_data_is_accepted() -> None:
    assert parse_trigger(b'{"name":"e","data":"\\ud83d\\ude00","channel":"a"}', LIMITS).data == "\U0001f600"


# --- 413: payload size -----------------------------------------------------------------------------------------


def test_data_at_the_payload_limit_is_accepted() -> None:
    limits = Limits(max_event_payload_in_kb=1)
    assert len(parse_trigger(_body(**_event(data="x" * 1024)), limits).data) == 1024


def test_data_over_the_payload_limit_is_413() -> None:
    error = _trigger_error(_body(**_event(data="x" * 1025)), Limits(max_event_payload_in_kb=1))
    assert (error.status, error.message) == (413, "Event data is larger than 1 KB.")


def test_payload_limit_counts_utf8_bytes_not_characters() -> None:
    error = _trigger_error(_body(**_event(data="é" * 513)), Limits(max_event_payload_in_kb=1))
    assert error.status == 413


# --- body shape ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"{", b"name=e&data=d", b"\xff\xfe", b"[" * 100_000])
def test_body_that_is_not_json_is_400(body: bytes) -> None:
    error = _error(lambda: load_json_object(body))
    assert (error.status, error.message) == (400, "Request body is not valid JSON.")


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"1", b"null", b'[{"name":"e"}]'])
def test_body_that_is_not_an_object_is_400(body: bytes) -> None:
    error = _error(lambda: parse_trigger(body, LIMITS))
    assert (error.status, error.message) == (400, "Request body must be a JSON object.")


# --- info parameter --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, "", " , ,"])
def test_empty_info_means_no_attributes(raw: object) -> None:
    assert parse_info(raw) == frozenset()


def test_info_parts_are_stripped() -> None:
    assert parse_info(" user_count ,subscription_count") == frozenset({"user_count", "subscription_count"})


# --- batches ------------------------------------------------------------------------------------------------------


def _batch(*events: dict[str, Any]) -> bytes:
    return json.dumps({"batch": list(events)}).encode()


def test_batch_events_keep_their_order_and_channel() -> None:
    events = parse_batch(
        _batch({"name": "e1", "data": "1", "channel": "a"}, {"name": "e2", "data": "2", "channel": "b"}), LIMITS
    )
    assert [(e.name, e.data, e.channels) for e in events] == [("e1", "1", ("a",)), ("e2", "2", ("b",))]


def test_batch_event_keeps_socket_id_and_info() -> None:
    [event] = parse_batch(
        _batch({"name": "e", "data": "d", "channel": "presence-a", "socket_id": "1.2", "info": "user_count"}), LIMITS
    )
    assert (event.socket_id, event.info) == ("1.2", frozenset({"user_count"}))


def test_batch_of_ten_is_accepted() -> None:
    assert len(parse_batch(_batch(*[{"name": "e", "data": "d", "channel": "a"}] * 10), LIMITS)) == 10


def test_batch_larger_than_the_limit_is_400() -> None:
    error = _error(lambda: parse_batch(_batch(*[{"name": "e", "data": "d", "channel": "a"}] * 11), LIMITS))
    assert (error.status, error.message) == (400, "A batch can hold at most 10 events.")


@pytest.mark.parametrize("batch", [[], {}, "x", None])
def test_batch_that_is_not_a_non_empty_list_is_400(batch: object) -> None:
    error = _error(lambda: parse_batch(json.dumps({"batch": batch}).encode(), LIMITS))
    assert (error.status, error.message) == (400, "batch must be a non-empty list of events.")


def test_missing_batch_key_is_400() -> None:
    error = _error(lambda: parse_batch(b"{}", LIMITS))
    assert error.message == "batch must be a non-empty list of events."


def test_non_object_batch_item_is_400() -> None:
    error = _error(lambda: parse_batch(_batch({"name": "e", "data": "d", "channel": "a"}, "x"), LIMITS))  # type: ignore[arg-type]
    assert (error.status, error.message) == (400, "Each batch item must be an object.")


def test_batch_event_needs_a_channel_string_even_with_channels() -> None:
    error = _error(lambda: parse_batch(_batch({"name": "e", "data": "d", "channels": ["a"]}), LIMITS))
    assert (error.status, error.message) == (400, "Each batch event needs a channel string.")


def test_batch_event_with_a_bad_channel_is_400() -> None:
    error = _error(lambda: parse_batch(_batch({"name": "e", "data": "d", "channel": "a b"}), LIMITS))
    assert error.status == 400
    assert error.message.startswith("Invalid channel 'a b'")


def test_batch_event_with_oversize_data_is_413() -> None:
    body = _batch({"name": "e", "data": "x" * 2000, "channel": "a"})
    error = _error(lambda: parse_batch(body, Limits(max_event_payload_in_kb=1)))
    assert error.status == 413


def test_batch_body_that_is_not_an_object_is_400() -> None:
    error = _error(lambda: parse_batch(b'[{"name":"e","data":"d","channel":"a"}]', LIMITS))
    assert (error.status, error.message) == (400, "Request body must be a JSON object.")
