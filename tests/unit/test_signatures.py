"""Channel auth, sign-in and webhook signatures: the published vectors (protocol.md 1.9) and both directions."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pusher
import pytest

from hub.protocol.signatures import (
    auth_token,
    channel_auth_message,
    sign,
    signin_message,
    verify_token,
    webhook_signature,
)

KEY = "278d425bdf160c739803"
SECRET = "7ad3773142a6692b25b8"
SOCKET = "1234.1234"

PRIVATE_SIG = "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
CHANNELS_DATA = '{"user_id":10,"user_info":{"name":"Mr. Channels"}}'
CHANNELS_SIG = "31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"
PUSHER_DATA = '{"user_id":10,"user_info":{"name":"Mr. Pusher"}}'
PUSHER_SIG = "afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c"
USER_DATA = '{"id":"12345"}'
SIGNIN_SIG = "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"


# --- the strings that are signed -------------------------------------------------------------------------------


def test_private_auth_message_is_socket_id_colon_channel() -> None:
    assert channel_auth_message(SOCKET, "private-foobar") == "1234.1234:private-foobar"


def test_presence_auth_message_appends_channel_data_after_a_colon() -> None:
    assert (
        channel_auth_message(SOCKET, "presence-foobar", CHANNELS_DATA) == f"1234.1234:presence-foobar:{CHANNELS_DATA}"
    )


def test_presence_auth_message_with_empty_channel_data_keeps_the_trailing_colon() -> None:
    assert channel_auth_message(SOCKET, "presence-x", "") == "1234.1234:presence-x:"


def test_signin_message_uses_double_colon_user_double_colon() -> None:
    assert signin_message(SOCKET, USER_DATA) == '1234.1234::user::{"id":"12345"}'


# --- the published test vectors --------------------------------------------------------------------------------


def test_private_channel_vector() -> None:
    assert sign(SECRET, "1234.1234:private-foobar") == PRIVATE_SIG


def test_presence_vector_mr_channels() -> None:
    assert sign(SECRET, channel_auth_message(SOCKET, "presence-foobar", CHANNELS_DATA)) == CHANNELS_SIG


def test_presence_vector_mr_pusher_is_the_hash_printed_in_the_pusher_docs() -> None:
    assert sign(SECRET, channel_auth_message(SOCKET, "presence-foobar", PUSHER_DATA)) == PUSHER_SIG


def test_signin_vector() -> None:
    assert sign(SECRET, signin_message(SOCKET, USER_DATA)) == SIGNIN_SIG


def test_sign_accepts_bytes_and_str_alike() -> None:
    assert sign(SECRET, b"1234.1234:private-foobar") == PRIVATE_SIG


def test_auth_token_is_key_colon_signature() -> None:
    assert auth_token(KEY, SECRET, "1234.1234:private-foobar") == f"{KEY}:{PRIVATE_SIG}"


# --- verification accepts ----------------------------------------------------------------------------------------


def test_private_vector_token_verifies() -> None:
    assert verify_token(KEY, SECRET, "1234.1234:private-foobar", f"{KEY}:{PRIVATE_SIG}") is True


def test_presence_vector_tokens_verify_for_both_names() -> None:
    channels = channel_auth_message(SOCKET, "presence-foobar", CHANNELS_DATA)
    pusher_ = channel_auth_message(SOCKET, "presence-foobar", PUSHER_DATA)
    assert verify_token(KEY, SECRET, channels, f"{KEY}:{CHANNELS_SIG}") is True
    assert verify_token(KEY, SECRET, pusher_, f"{KEY}:{PUSHER_SIG}") is True


def test_signin_vector_token_verifies() -> None:
    assert verify_token(KEY, SECRET, signin_message(SOCKET, USER_DATA), f"{KEY}:{SIGNIN_SIG}") is True


# --- verification rejects ----------------------------------------------------------------------------------------


def test_presence_signature_covers_the_exact_channel_data_string() -> None:
    # Same JSON value, different spelling: the signature is over the string, not the parsed value.
    respelled = json.dumps(json.loads(CHANNELS_DATA))
    assert respelled != CHANNELS_DATA
    message = channel_auth_message(SOCKET, "presence-foobar", respelled)
    assert verify_token(KEY, SECRET, message, f"{KEY}:{CHANNELS_SIG}") is False


def test_mr_channels_signature_does_not_verify_mr_pusher_data() -> None:
    message = channel_auth_message(SOCKET, "presence-foobar", PUSHER_DATA)
    assert verify_token(KEY, SECRET, message, f"{KEY}:{CHANNELS_SIG}") is False


def test_token_with_another_apps_key_prefix_is_rejected() -> None:
    assert verify_token(KEY, SECRET, "1234.1234:private-foobar", f"other-key:{PRIVATE_SIG}") is False


def test_token_without_key_prefix_is_rejected() -> None:
    assert verify_token(KEY, SECRET, "1234.1234:private-foobar", PRIVATE_SIG) is False


def test_token_with_empty_key_prefix_is_rejected() -> None:
    assert verify_token(KEY, SECRET, "1234.1234:private-foobar", f":{PRIVATE_SIG}") is False


def test_token_signed_with_a_wrong_secret_is_rejected() -> None:
    forged = auth_token(KEY, "not-the-secret", "1234.1234:private-foobar")
    assert verify_token(KEY, SECRET, "1234.1234:private-foobar", forged) is False


def test_truncated_signature_is_rejected() -> None:
    assert verify_token(KEY, SECRET, "1234.1234:private-foobar", f"{KEY}:{PRIVATE_SIG[:-1]}") is False


def test_signature_with_extra_characters_is_rejected() -> None:
    assert verify_token(KEY, SECRET, "1234.1234:private-foobar", f"{KEY}:{PRIVATE_SIG}0") is False


def test_uppercase_hex_signature_is_rejected() -> None:
    assert verify_token(KEY, SECRET, "1234.1234:private-foobar", f"{KEY}:{PRIVATE_SIG.upper()}") is False


def test_signature_for_another_socket_is_rejected() -> None:
    assert verify_token(KEY, SECRET, "1234.1235:private-foobar", f"{KEY}:{PRIVATE_SIG}") is False


def test_signature_for_another_channel_is_rejected() -> None:
    assert verify_token(KEY, SECRET, "1234.1234:private-foobaz", f"{KEY}:{PRIVATE_SIG}") is False


def test_private_signature_does_not_authorise_the_signin_string() -> None:
    assert verify_token(KEY, SECRET, signin_message(SOCKET, USER_DATA), f"{KEY}:{PRIVATE_SIG}") is False


@pytest.mark.parametrize("auth", [None, 42, b"278d425bdf160c739803:" + PRIVATE_SIG.encode(), ["x"], {"auth": "x"}])
def test_non_string_auth_is_rejected(auth: object) -> None:
    assert verify_token(KEY, SECRET, "1234.1234:private-foobar", auth) is False


def test_empty_auth_is_rejected() -> None:
    assert verify_token(KEY, SECRET, "1234.1234:private-foobar", "") is False


def test_non_ascii_auth_is_rejected_without_raising() -> None:
    assert verify_token(KEY, SECRET, "1234.1234:private-foobar", f"{KEY}:é{PRIVATE_SIG[1:]}") is False


# --- the real pusher SDK's tokens ---------------------------------------------------------------------------------


def _sdk() -> pusher.Pusher:
    return pusher.Pusher(app_id="3", key=KEY, secret=SECRET)


def test_private_token_from_the_pusher_sdk_verifies() -> None:
    auth = _sdk().authenticate("private-foobar", SOCKET)["auth"]
    assert auth == f"{KEY}:{PRIVATE_SIG}"
    assert verify_token(KEY, SECRET, channel_auth_message(SOCKET, "private-foobar"), auth) is True


def test_presence_token_from_the_pusher_sdk_verifies_over_its_own_channel_data() -> None:
    response = _sdk().authenticate("presence-room", SOCKET, {"user_id": 10, "user_info": {"name": "Mr. Channels"}})
    message = channel_auth_message(SOCKET, "presence-room", response["channel_data"])
    assert verify_token(KEY, SECRET, message, response["auth"]) is True


def test_signin_token_from_the_pusher_sdk_verifies_over_its_own_user_data() -> None:
    response = _sdk().authenticate_user(SOCKET, {"id": "12345", "user_info": {"name": "Ann"}})
    assert verify_token(KEY, SECRET, signin_message(SOCKET, response["user_data"]), response["auth"]) is True


# --- webhooks ----------------------------------------------------------------------------------------------------


def test_webhook_signature_is_hex_hmac_sha256_of_the_raw_body() -> None:
    body = b'{"time_ms":1,"events":[{"name":"channel_occupied","channel":"a"}]}'
    assert webhook_signature(SECRET, body) == hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def test_webhook_signature_is_accepted_by_the_pusher_sdk() -> None:
    body = json.dumps({"time_ms": int(time.time() * 1000), "events": [{"name": "channel_vacated", "channel": "a"}]})
    result = _sdk().validate_webhook(KEY, webhook_signature(SECRET, body.encode()), body)
    assert result is not None
    assert result["events"] == [{"name": "channel_vacated", "channel": "a"}]
