"""HTTP API request signing (auth_version 1.0): the worked vector of protocol.md 2.2 and the real pusher SDK."""

from __future__ import annotations

import hashlib
import time

import pytest
from pusher.http import Request
from pusher.pusher_client import PusherClient

from hub.protocol.errors import ApiError
from hub.protocol.signatures import EMPTY_BODY_MD5, api_string_to_sign, sign, verify_api_request

APP_ID = "3"
KEY = "278d425bdf160c739803"
SECRET = "7ad3773142a6692b25b8"

VECTOR_BODY = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
VECTOR_MD5 = "ec365a775a4cd0599faeb73354201b6f"
VECTOR_TIMESTAMP = "1353088179"
VECTOR_STRING = (
    "POST\n/apps/3/events\n"
    "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
)
VECTOR_SIG = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"


def _vector_params(signature: str = VECTOR_SIG) -> list[tuple[str, str]]:
    return [
        ("auth_key", KEY),
        ("auth_timestamp", VECTOR_TIMESTAMP),
        ("auth_version", "1.0"),
        ("body_md5", VECTOR_MD5),
        ("auth_signature", signature),
    ]


def _verify(
    method: str,
    path: str,
    params: list[tuple[str, str]],
    body: bytes,
    now: float,
    *,
    key: str = KEY,
    secret: str = SECRET,
) -> None:
    verify_api_request(method=method, path=path, params=params, body=body, key=key, secret=secret, now=now)


def _rejection(method: str, path: str, params: list[tuple[str, str]], body: bytes, now: float, **kw: str) -> ApiError:
    with pytest.raises(ApiError) as caught:
        _verify(method, path, params, body, now, **kw)
    assert caught.value.status == 401
    return caught.value


def _client() -> PusherClient:
    return PusherClient(app_id=APP_ID, key=KEY, secret=SECRET)


def _params(request: Request) -> list[tuple[str, str]]:
    """The query the SDK sends, as the server parses it (the SDK does not URL-escape; neither do we here)."""
    return list(request.query_params.items())


def _signed(method: str, path: str, params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``params`` plus an auth_signature computed independently of hub (plain hmac)."""
    signature = sign(SECRET, api_string_to_sign(method, path, params))
    return [*params, ("auth_signature", signature)]


def _auth_params(timestamp: float, body: bytes | None = None) -> list[tuple[str, str]]:
    params = [("auth_key", KEY), ("auth_timestamp", f"{timestamp:.0f}"), ("auth_version", "1.0")]
    if body is not None:
        params.append(("body_md5", hashlib.md5(body).hexdigest()))
    return params


# --- the worked vector ---------------------------------------------------------------------------------------------


def test_vector_body_md5() -> None:
    assert hashlib.md5(VECTOR_BODY).hexdigest() == VECTOR_MD5


def test_vector_string_to_sign_is_method_path_and_sorted_query() -> None:
    assert api_string_to_sign("POST", "/apps/3/events", _vector_params()) == VECTOR_STRING


def test_vector_string_to_sign_is_independent_of_parameter_order() -> None:
    assert api_string_to_sign("POST", "/apps/3/events", list(reversed(_vector_params()))) == VECTOR_STRING


def test_vector_signature() -> None:
    assert sign(SECRET, VECTOR_STRING) == VECTOR_SIG


def test_vector_request_verifies() -> None:
    _verify("POST", "/apps/3/events", _vector_params(), VECTOR_BODY, now=float(VECTOR_TIMESTAMP))


def test_string_to_sign_uppercases_the_method() -> None:
    assert api_string_to_sign("post", "/apps/3/events", _vector_params()) == VECTOR_STRING


def test_string_to_sign_does_not_url_escape_values() -> None:
    text = api_string_to_sign("GET", "/apps/3/channels", [("auth_key", "foo"), ("name", "Something else")])
    assert text == "GET\n/apps/3/channels\nauth_key=foo&name=Something else"


def test_string_to_sign_lowercases_keys_before_sorting() -> None:
    text = api_string_to_sign("GET", "/p", [("b", "1"), ("A", "2"), ("auth_key", "k")])
    assert text == "GET\n/p\na=2&auth_key=k&b=1"


def test_string_to_sign_joins_repeated_keys_with_commas_in_order() -> None:
    text = api_string_to_sign("GET", "/p", [("info", "user_count"), ("info", "subscription_count")])
    assert text == "GET\n/p\ninfo=user_count,subscription_count"


def test_string_to_sign_leaves_out_auth_signature_in_any_case() -> None:
    assert api_string_to_sign("GET", "/p", [("a", "1"), ("AUTH_SIGNATURE", "x")]) == "GET\n/p\na=1"


# --- the real pusher SDK -----------------------------------------------------------------------------------------


def test_sdk_trigger_post_events_verifies() -> None:
    request = _client().trigger.make_request(["my-channel", "private-a"], "my-event", {"message": "hello"})
    assert (request.method, request.path) == ("POST", "/apps/3/events")
    _verify("POST", request.path, _params(request), request.body, now=time.time())


def test_sdk_trigger_with_socket_id_verifies() -> None:
    request = _client().trigger.make_request("my-channel", "my-event", "plain text", socket_id="123.456")
    _verify("POST", request.path, _params(request), request.body, now=time.time())


def test_sdk_batch_events_verifies() -> None:
    batch = [{"channel": "a", "name": "e1", "data": {"x": 1}}, {"channel": "b", "name": "e2", "data": "y"}]
    request = _client().trigger_batch.make_request(batch)
    assert request.path == "/apps/3/batch_events"
    _verify("POST", request.path, _params(request), request.body, now=time.time())


def test_sdk_get_channels_with_empty_body_md5_verifies() -> None:
    request = _client().channels_info.make_request("presence-", ["user_count"])
    params = dict(_params(request))
    assert params["body_md5"] == EMPTY_BODY_MD5  # the Python SDK's quirk: body_md5 on GET too
    assert params["info"] == "user_count"
    assert params["filter_by_prefix"] == "presence-"
    _verify("GET", request.path, _params(request), b"", now=time.time())


def test_sdk_get_channel_verifies() -> None:
    request = _client().channel_info.make_request("presence-room", ["user_count"])
    assert request.path == "/apps/3/channels/presence-room"
    _verify("GET", request.path, _params(request), b"", now=time.time())


def test_sdk_get_users_verifies() -> None:
    request = _client().users_info.make_request("presence-room")
    _verify("GET", request.path, _params(request), b"", now=time.time())


def test_sdk_request_verifies_599_seconds_later() -> None:
    request = _client().channels_info.make_request()
    timestamp = float(request.query_params["auth_timestamp"])
    _verify("GET", request.path, _params(request), b"", now=timestamp + 599)


def test_sdk_request_older_than_600_seconds_is_rejected() -> None:
    request = _client().channels_info.make_request()
    timestamp = float(request.query_params["auth_timestamp"])
    error = _rejection("GET", request.path, _params(request), b"", now=timestamp + 601)
    assert "auth_timestamp is more than 600 s away" in error.message


def test_sdk_request_more_than_600_seconds_in_the_future_is_rejected() -> None:
    request = _client().channels_info.make_request()
    timestamp = float(request.query_params["auth_timestamp"])
    error = _rejection("GET", request.path, _params(request), b"", now=timestamp - 601)
    assert "auth_timestamp is more than 600 s away" in error.message


def test_sdk_post_with_tampered_body_is_rejected_for_body_md5() -> None:
    request = _client().trigger.make_request("my-channel", "my-event", "original")
    tampered = request.body.replace(b"original", b"tampered")
    error = _rejection("POST", request.path, _params(request), tampered, now=time.time())
    assert error.message == "body_md5 does not match the request body."


def test_sdk_get_sent_with_a_body_is_rejected_for_body_md5() -> None:
    request = _client().channels_info.make_request()
    error = _rejection("GET", request.path, _params(request), b"{}", now=time.time())
    assert error.message == "body_md5 does not match the request body."


def test_sdk_request_verified_with_another_secret_is_rejected() -> None:
    request = _client().trigger.make_request("my-channel", "my-event", "x")
    error = _rejection("POST", request.path, _params(request), request.body, now=time.time(), secret="other-secret")
    assert error.message == "Invalid signature: the request was not signed with this app's secret."


def test_sdk_request_for_another_app_path_is_rejected() -> None:
    request = _client().trigger.make_request("my-channel", "my-event", "x")
    error = _rejection("POST", "/apps/4/events", _params(request), request.body, now=time.time())
    assert error.message.startswith("Invalid signature")


def test_sdk_request_with_an_added_query_parameter_is_rejected() -> None:
    request = _client().channels_info.make_request()
    params = [*_params(request), ("filter_by_prefix", "private-")]
    error = _rejection("GET", request.path, params, b"", now=time.time())
    assert error.message.startswith("Invalid signature")


def test_sdk_request_with_a_changed_query_value_is_rejected() -> None:
    request = _client().channels_info.make_request("presence-", ["user_count"])
    params = [(k, "private-" if k == "filter_by_prefix" else v) for k, v in _params(request)]
    error = _rejection("GET", request.path, params, b"", now=time.time())
    assert error.message.startswith("Invalid signature")


def test_sdk_request_checked_against_a_method_it_was_not_signed_for_is_rejected() -> None:
    request = _client().channels_info.make_request()
    error = _rejection("POST", request.path, _params(request), b"", now=time.time())
    assert error.message.startswith("Invalid signature")


def test_signature_over_a_path_with_a_deployment_prefix_is_rejected() -> None:
    now = time.time()
    params = _auth_params(now)
    signature = sign(SECRET, api_string_to_sign("GET", "/pusher/apps/3/channels", params))
    error = _rejection("GET", "/apps/3/channels", [*params, ("auth_signature", signature)], b"", now=now)
    assert error.message.startswith("Invalid signature")


# --- missing and malformed auth parameters ---------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["auth_key", "auth_timestamp", "auth_signature"])
def test_missing_auth_parameter_is_named_in_the_error(missing: str) -> None:
    request = _client().channels_info.make_request()
    params = [(k, v) for k, v in _params(request) if k != missing]
    error = _rejection("GET", request.path, params, b"", now=time.time())
    assert error.message == f"Missing {missing} query parameter."


@pytest.mark.parametrize("empty", ["auth_key", "auth_timestamp", "auth_signature"])
def test_empty_auth_parameter_counts_as_missing(empty: str) -> None:
    request = _client().channels_info.make_request()
    params = [(k, "" if k == empty else v) for k, v in _params(request)]
    error = _rejection("GET", request.path, params, b"", now=time.time())
    assert error.message == f"Missing {empty} query parameter."


def test_post_with_body_but_without_body_md5_is_rejected() -> None:
    now = time.time()
    body = b'{"name":"e","channel":"a","data":"x"}'
    error = _rejection("POST", "/apps/3/events", _signed("POST", "/apps/3/events", _auth_params(now)), body, now=now)
    assert error.message == "Missing body_md5 query parameter for a request with a body."


def test_empty_body_with_a_non_empty_body_md5_is_rejected() -> None:
    now = time.time()
    params = _signed("GET", "/apps/3/channels", _auth_params(now, body=b"{}"))
    error = _rejection("GET", "/apps/3/channels", params, b"", now=now)
    assert error.message == "body_md5 does not match the (empty) request body."


def test_get_without_body_md5_verifies() -> None:
    now = time.time()
    _verify("GET", "/apps/3/channels", _signed("GET", "/apps/3/channels", _auth_params(now)), b"", now=now)


def test_auth_key_of_another_app_is_rejected() -> None:
    request = _client().channels_info.make_request()
    error = _rejection("GET", request.path, _params(request), b"", now=time.time(), key="another-key")
    assert error.message == "auth_key does not match the app."


def test_auth_version_other_than_1_0_is_rejected() -> None:
    now = time.time()
    params = [*_auth_params(now)[:2], ("auth_version", "2.0")]
    error = _rejection("GET", "/apps/3/channels", _signed("GET", "/apps/3/channels", params), b"", now=now)
    assert error.message == "Unsupported auth_version '2.0'; expected 1.0."


def test_missing_auth_version_is_taken_as_1_0() -> None:
    now = time.time()
    params = _auth_params(now)[:2]
    _verify("GET", "/apps/3/channels", _signed("GET", "/apps/3/channels", params), b"", now=now)


def test_non_numeric_auth_timestamp_is_rejected() -> None:
    now = time.time()
    params = [("auth_key", KEY), ("auth_timestamp", "yesterday"), ("auth_version", "1.0")]
    error = _rejection("GET", "/apps/3/channels", _signed("GET", "/apps/3/channels", params), b"", now=now)
    assert error.message == "auth_timestamp is not a number."


@pytest.mark.parametrize("timestamp", ["nan", "NaN", "inf", "-inf"])
def test_non_finite_auth_timestamp_is_outside_the_window_even_when_signed(timestamp: str) -> None:
    params = [("auth_key", KEY), ("auth_timestamp", timestamp), ("auth_version", "1.0")]
    error = _rejection("GET", "/apps/3/channels", _signed("GET", "/apps/3/channels", params), b"", now=time.time())
    assert "auth_timestamp is more than 600 s away" in error.message


def test_truncated_signature_is_rejected() -> None:
    params = _vector_params(VECTOR_SIG[:-2])
    error = _rejection("POST", "/apps/3/events", params, VECTOR_BODY, now=float(VECTOR_TIMESTAMP))
    assert error.message.startswith("Invalid signature")


def test_uppercase_hex_signature_is_rejected() -> None:
    params = _vector_params(VECTOR_SIG.upper())
    error = _rejection("POST", "/apps/3/events", params, VECTOR_BODY, now=float(VECTOR_TIMESTAMP))
    assert error.message.startswith("Invalid signature")


# --- uppercase and repeated keys --------------------------------------------------------------------------------


def test_uppercase_parameter_keys_are_read_and_signed_lowercased() -> None:
    upper = [(k.upper(), v) for k, v in _vector_params()]
    _verify("POST", "/apps/3/events", upper, VECTOR_BODY, now=float(VECTOR_TIMESTAMP))


def test_signature_over_uppercase_keys_as_sent_is_rejected() -> None:
    now = time.time()
    params = [("AUTH_KEY", KEY), ("AUTH_TIMESTAMP", f"{now:.0f}"), ("AUTH_VERSION", "1.0")]
    verbatim = "GET\n/apps/3/channels\n" + "&".join(f"{k}={v}" for k, v in sorted(params))
    params.append(("AUTH_SIGNATURE", sign(SECRET, verbatim)))
    error = _rejection("GET", "/apps/3/channels", params, b"", now=now)
    assert error.message.startswith("Invalid signature")


def test_uppercase_auth_key_parameter_with_a_wrong_value_is_rejected() -> None:
    upper = [("AUTH_KEY" if k == "auth_key" else k, "wrong" if k == "auth_key" else v) for k, v in _vector_params()]
    error = _rejection("POST", "/apps/3/events", upper, VECTOR_BODY, now=float(VECTOR_TIMESTAMP))
    assert error.message == "auth_key does not match the app."


def test_repeated_parameter_signed_comma_joined_verifies() -> None:
    now = time.time()
    params = [*_auth_params(now), ("info", "user_count"), ("info", "subscription_count")]
    _verify("GET", "/apps/3/channels", _signed("GET", "/apps/3/channels", params), b"", now=now)


def test_repeated_parameter_signed_as_a_single_value_is_rejected() -> None:
    now = time.time()
    params = [*_auth_params(now), ("info", "user_count")]
    signed = [*_signed("GET", "/apps/3/channels", params), ("info", "subscription_count")]
    error = _rejection("GET", "/apps/3/channels", signed, b"", now=now)
    assert error.message.startswith("Invalid signature")


def test_repeated_auth_key_with_a_foreign_first_value_is_rejected_as_a_key_mismatch() -> None:
    params = [("auth_key", "foreign"), *_vector_params()]
    error = _rejection("POST", "/apps/3/events", params, VECTOR_BODY, now=float(VECTOR_TIMESTAMP))
    assert error.message == "auth_key does not match the app."


def test_repeated_auth_key_appended_to_a_signed_request_is_rejected_as_a_bad_signature() -> None:
    params = [*_vector_params(), ("auth_key", "foreign")]
    error = _rejection("POST", "/apps/3/events", params, VECTOR_BODY, now=float(VECTOR_TIMESTAMP))
    assert error.message.startswith("Invalid signature")


def test_repeated_auth_timestamp_with_a_stale_first_value_is_rejected_for_the_window() -> None:
    params = [("auth_timestamp", "1000"), *_vector_params()]
    error = _rejection("POST", "/apps/3/events", params, VECTOR_BODY, now=float(VECTOR_TIMESTAMP))
    assert "auth_timestamp is more than 600 s away" in error.message


def test_repeated_auth_timestamp_appended_to_a_signed_request_is_rejected_as_a_bad_signature() -> None:
    params = [*_vector_params(), ("auth_timestamp", VECTOR_TIMESTAMP)]
    error = _rejection("POST", "/apps/3/events", params, VECTOR_BODY, now=float(VECTOR_TIMESTAMP))
    assert error.message.startswith("Invalid signature")


def test_repeated_auth_signature_uses_the_first_value() -> None:
    params = [*_vector_params(), ("auth_signature", "0" * 64)]
    _verify("POST", "/apps/3/events", params, VECTOR_BODY, now=float(VECTOR_TIMESTAMP))


def test_api_error_body_has_error_and_code() -> None:
    assert ApiError(401, "nope").body() == {"error": "nope", "code": 401}
