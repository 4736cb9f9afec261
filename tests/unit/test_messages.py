"""Client frames in and server frames out, byte for byte (double encoding included)."""

from __future__ import annotations

import json

import pytest

from hub.protocol.errors import CloseCode, PusherError, SubscriptionError
from hub.protocol.messages import (
    PING,
    PONG,
    InvalidMessage,
    cache_miss,
    connection_established,
    dumps,
    error_frame,
    event_frame,
    member_added_data,
    member_removed_data,
    parse_client_message,
    parse_signin,
    parse_subscribe,
    presence_payload,
    signin_success,
    subscription_count,
    subscription_error,
    subscription_succeeded,
    watchlist_events,
)

# --- parse_client_message ---------------------------------------------------------------------------------------


def _invalid(raw: str | bytes) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as caught:
        parse_client_message(raw)
    return caught.value


def test_parses_event_channel_and_object_data() -> None:
    message = parse_client_message('{"event":"client-x","channel":"private-a","data":{"k":[1,2]}}')
    assert (message.event, message.channel, message.data) == ("client-x", "private-a", {"k": [1, 2]})


def test_parses_bytes_as_utf8() -> None:
    message = parse_client_message('{"event":"pusher:ping","data":"é"}'.encode())
    assert (message.event, message.data) == ("pusher:ping", "é")


def test_missing_channel_and_data_are_none() -> None:
    message = parse_client_message('{"event":"pusher:ping"}')
    assert (message.channel, message.data) == (None, None)


def test_string_data_is_kept_as_the_string() -> None:
    assert parse_client_message('{"event":"e","data":"{\\"a\\":1}"}').data == '{"a":1}'


def test_extra_keys_are_ignored() -> None:
    message = parse_client_message('{"event":"e","user_id":"spoofed","extra":1}')
    assert message.event == "e"


def test_invalid_json_is_rejected() -> None:
    assert str(_invalid("{not json")) == "Invalid message format: not JSON."


def test_invalid_utf8_bytes_are_rejected() -> None:
    assert str(_invalid(b'{"event":"\xff"}')) == "Invalid message format: not JSON."


def test_deeply_nested_json_is_rejected_not_a_recursion_error() -> None:
    assert str(_invalid("[" * 100_000)) == "Invalid message format: not JSON."


@pytest.mark.parametrize(
    "raw",
    [
        r'{"event":"client-x","channel":"private-a","data":"\ud800"}',
        r'{"event":"client-\udfff","channel":"private-a","data":{}}',
        r'{"event":"client-x","data":{"nested":["ok","\uDC00"]}}',
        rb'{"event":"client-x","data":"\ud83d"}',
    ],
)
def test_lone_surrogate_escape_is_rejected(raw: str | bytes) -> None:
    assert str(_invalid(raw)) == "Invalid message format: lone surrogate escape (not valid Unicode text)."


def test_escaped_surrogate_pair_and_other_escapes_are_accepted() -> None:
    message = parse_client_message(r'{"event":"client-x","data":"\ud83d\ude00 \u00e9 \n"}')
    assert message.data == "\U0001f600 é \n"


@pytest.mark.parametrize("raw", ["[]", '"event"', "1", "null", "true", '[{"event":"e"}]'])
def test_non_object_json_is_rejected(raw: str) -> None:
    assert str(_invalid(raw)) == "Invalid message format: expected a JSON object."


@pytest.mark.parametrize("raw", ["{}", '{"event":""}', '{"event":null}', '{"event":1}', '{"event":["e"]}'])
def test_missing_or_non_string_event_is_rejected(raw: str) -> None:
    assert str(_invalid(raw)) == "Invalid message format: missing event name."


@pytest.mark.parametrize("channel", ["1", "[]", "{}", "true"])
def test_non_string_channel_is_rejected(channel: str) -> None:
    error = _invalid(f'{{"event":"e","channel":{channel}}}')
    assert str(error) == "Invalid message format: channel must be a string."


def test_null_channel_is_treated_as_absent() -> None:
    assert parse_client_message('{"event":"e","channel":null}').channel is None


def test_invalid_message_carries_a_4200_pusher_error() -> None:
    error = _invalid("nope").error
    assert (error.code, error.message, error.close) == (4200, "Invalid message format: not JSON.", False)


# --- parse_subscribe ----------------------------------------------------------------------------------------------


def test_subscribe_with_object_data() -> None:
    request = parse_subscribe({"channel": "presence-a", "auth": "k:s", "channel_data": '{"user_id":1}'})
    assert (request.channel, request.auth, request.channel_data) == ("presence-a", "k:s", '{"user_id":1}')


def test_subscribe_with_data_as_a_json_string() -> None:
    request = parse_subscribe('{"channel":"private-a","auth":"k:s"}')
    assert (request.channel, request.auth, request.channel_data) == ("private-a", "k:s", None)


def test_subscribe_with_empty_auth_from_pusher_js_public_channel_has_no_auth() -> None:
    assert parse_subscribe({"channel": "public", "auth": ""}).auth is None


def test_subscribe_ignores_non_string_auth_and_channel_data() -> None:
    request = parse_subscribe({"channel": "presence-a", "auth": 5, "channel_data": {"user_id": 1}})
    assert (request.auth, request.channel_data) == (None, None)


def test_subscribe_keeps_empty_channel_data_string() -> None:
    assert parse_subscribe({"channel": "presence-a", "channel_data": ""}).channel_data == ""


@pytest.mark.parametrize("data", [{}, {"channel": ""}, {"channel": 1}, {"channel": None}, {"auth": "k:s"}])
def test_subscribe_without_a_channel_string_is_rejected(data: object) -> None:
    with pytest.raises(InvalidMessage, match="subscribe needs a channel"):
        parse_subscribe(data)


@pytest.mark.parametrize("data", [None, 1, ["channel"], True])
def test_subscribe_with_non_object_data_is_rejected(data: object) -> None:
    with pytest.raises(InvalidMessage, match="data must be an object"):
        parse_subscribe(data)


@pytest.mark.parametrize("data", ['"private-a"', "[1]", "null"])
def test_subscribe_with_a_json_string_holding_a_non_object_is_rejected(data: str) -> None:
    with pytest.raises(InvalidMessage, match="data must be an object"):
        parse_subscribe(data)


def test_subscribe_data_string_with_a_lone_surrogate_escape_is_rejected() -> None:
    with pytest.raises(InvalidMessage, match="lone surrogate escape"):
        parse_subscribe(r'{"channel":"presence-a","auth":"k:s","channel_data":"\ud800"}')


def test_subscribe_with_a_non_json_string_is_rejected() -> None:
    with pytest.raises(InvalidMessage, match="data is not a JSON object"):
        parse_subscribe("private-a")


def test_subscribe_with_a_deeply_nested_string_is_rejected() -> None:
    with pytest.raises(InvalidMessage):
        parse_subscribe("[" * 100_000)


# --- parse_signin ---------------------------------------------------------------------------------------------------


def test_signin_with_object_data() -> None:
    request = parse_signin({"auth": "k:s", "user_data": '{"id":"1"}'})
    assert (request.auth, request.user_data) == ("k:s", '{"id":"1"}')


def test_signin_with_data_as_a_json_string() -> None:
    request = parse_signin('{"auth":"k:s","user_data":"{\\"id\\":\\"1\\"}"}')
    assert request.user_data == '{"id":"1"}'


@pytest.mark.parametrize(
    "data",
    [{"auth": "k:s"}, {"user_data": "{}"}, {"auth": 1, "user_data": "{}"}, {"auth": "k:s", "user_data": {"id": "1"}}],
)
def test_signin_without_auth_and_user_data_strings_is_rejected(data: object) -> None:
    with pytest.raises(InvalidMessage, match="signin needs auth and user_data strings"):
        parse_signin(data)


def test_signin_with_non_object_data_is_rejected() -> None:
    with pytest.raises(InvalidMessage):
        parse_signin(["auth", "user_data"])


# --- frame builders ------------------------------------------------------------------------------------------------


def test_dumps_is_compact_and_keeps_unicode() -> None:
    assert dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'


def test_connection_established_data_is_a_json_string_with_socket_id_and_activity_timeout() -> None:
    frame = connection_established("123.456", 120)
    assert frame == (
        '{"event":"pusher:connection_established","data":"{\\"socket_id\\":\\"123.456\\",\\"activity_timeout\\":120}"}'
    )
    data = json.loads(json.loads(frame)["data"])
    assert data == {"socket_id": "123.456", "activity_timeout": 120}


def test_error_frame_data_is_an_object_with_code_and_message() -> None:
    frame = error_frame(PusherError(CloseCode.APP_NOT_FOUND, "App key x does not exist."))
    assert frame == '{"event":"pusher:error","data":{"code":4001,"message":"App key x does not exist."}}'


def test_error_frame_about_a_channel_names_it() -> None:
    frame = error_frame(PusherError(CloseCode.CLIENT_EVENT_REJECTED, "no"), "private-a")
    assert frame == '{"event":"pusher:error","channel":"private-a","data":{"code":4301,"message":"no"}}'


def test_error_frame_code_is_a_plain_integer() -> None:
    assert json.loads(error_frame(PusherError(CloseCode.PONG_TIMEOUT, "late")))["data"]["code"] == 4201


def test_pong_and_ping_frames_carry_empty_object_data() -> None:
    assert PONG == '{"event":"pusher:pong","data":{}}'
    assert PING == '{"event":"pusher:ping","data":{}}'


def test_subscription_succeeded_for_a_non_presence_channel_has_empty_object_string_data() -> None:
    frame = subscription_succeeded("private-a")
    assert frame == '{"event":"pusher_internal:subscription_succeeded","channel":"private-a","data":"{}"}'


def test_presence_payload_has_ids_hash_and_count() -> None:
    members = {"1": {"name": "Ann"}, "2": None}
    assert presence_payload(members) == {"ids": ["1", "2"], "hash": members, "count": 2}


def test_presence_subscription_succeeded_data_is_a_json_string_of_ids_hash_and_count() -> None:
    frame = subscription_succeeded("presence-a", presence_payload({"1": {"name": "Ann"}}))
    assert frame == (
        '{"event":"pusher_internal:subscription_succeeded","channel":"presence-a",'
        '"data":"{\\"presence\\":{\\"ids\\":[\\"1\\"],\\"hash\\":{\\"1\\":{\\"name\\":\\"Ann\\"}},\\"count\\":1}}"}'
    )


def test_presence_subscription_succeeded_with_no_members_still_sends_the_presence_object() -> None:
    data = json.loads(json.loads(subscription_succeeded("presence-a", presence_payload({})))["data"])
    assert data == {"presence": {"ids": [], "hash": {}, "count": 0}}


def test_subscription_error_data_is_an_object_with_type_error_status() -> None:
    frame = subscription_error("private-a", SubscriptionError("AuthError", "Invalid signature", 401))
    assert frame == (
        '{"event":"pusher:subscription_error","channel":"private-a",'
        '"data":{"type":"AuthError","error":"Invalid signature","status":401}}'
    )


def test_member_added_data_is_a_json_string_with_user_id_and_user_info() -> None:
    assert member_added_data("7", {"name": "Ann"}) == '{"user_id":"7","user_info":{"name":"Ann"}}'


def test_member_removed_data_is_a_json_string_with_only_user_id() -> None:
    assert member_removed_data("7") == '{"user_id":"7"}'


def test_member_added_frame_double_encodes_its_data() -> None:
    frame = event_frame("pusher_internal:member_added", "presence-a", member_added_data("7", None))
    assert frame == (
        '{"event":"pusher_internal:member_added","channel":"presence-a",'
        '"data":"{\\"user_id\\":\\"7\\",\\"user_info\\":null}"}'
    )


def test_http_event_data_string_is_relayed_exactly_as_published() -> None:
    published = '{"message": "hi",  "n":1.50}'
    frame = event_frame("my-event", "my-channel", published)
    assert frame == '{"event":"my-event","channel":"my-channel","data":"{\\"message\\": \\"hi\\",  \\"n\\":1.50}"}'
    assert json.loads(frame)["data"] == published


def test_client_event_object_data_is_relayed_as_an_object_with_user_id() -> None:
    frame = event_frame("client-typing", "presence-a", {"typing": True}, user_id="7")
    assert frame == '{"event":"client-typing","channel":"presence-a","data":{"typing":true},"user_id":"7"}'


def test_event_frame_without_channel_has_no_channel_key() -> None:
    assert event_frame("e", None, "d") == '{"event":"e","data":"d"}'


def test_cache_miss_frame_has_no_data() -> None:
    assert cache_miss("cache-a") == '{"event":"pusher:cache_miss","channel":"cache-a"}'


def test_signin_success_data_is_an_object_with_the_user_data_string() -> None:
    assert signin_success('{"id":"1"}') == '{"event":"pusher:signin_success","data":{"user_data":"{\\"id\\":\\"1\\"}"}}'


def test_watchlist_events_lists_online_then_offline() -> None:
    frame = watchlist_events(["1"], ["2", "3"])
    assert frame == (
        '{"event":"pusher_internal:watchlist_events","data":{"events":['
        '{"name":"online","user_ids":["1"]},{"name":"offline","user_ids":["2","3"]}]}}'
    )


def test_watchlist_events_leaves_out_empty_groups() -> None:
    assert json.loads(watchlist_events([], ["2"]))["data"] == {"events": [{"name": "offline", "user_ids": ["2"]}]}


def test_subscription_count_data_is_a_json_string() -> None:
    frame = subscription_count("my-channel", 5)
    assert frame == (
        '{"event":"pusher_internal:subscription_count","channel":"my-channel","data":"{\\"subscription_count\\":5}"}'
    )
