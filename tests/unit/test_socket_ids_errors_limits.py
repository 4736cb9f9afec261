"""Socket ids, the error code table and the default limits."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from hub.protocol.errors import ApiError, CloseCode, PusherError, SubscriptionError
from hub.protocol.limits import Limits
from hub.protocol.socket_ids import is_socket_id, new_socket_id

# --- socket ids -----------------------------------------------------------------------------------------------------


def test_new_socket_id_has_the_digits_dot_digits_shape() -> None:
    assert all(is_socket_id(new_socket_id()) for _ in range(200))


def test_new_socket_ids_do_not_repeat() -> None:
    assert len({new_socket_id() for _ in range(1000)}) == 1000


@pytest.mark.parametrize("value", ["1.2", "1234.1234", "0.0", "9999999999.9999999999"])
def test_valid_socket_ids(value: str) -> None:
    assert is_socket_id(value) is True


@pytest.mark.parametrize(
    "value", ["", "1", "1.", ".1", "1.2.3", "a.b", "1.2\n", " 1.2", "-1.2", "1,2", "1.2x", 1.2, None, b"1.2"]
)
def test_invalid_socket_ids(value: object) -> None:
    assert is_socket_id(value) is False


def test_digits_of_other_scripts_are_not_socket_id_digits() -> None:
    assert is_socket_id("\u0661.\u0662") is False  # ARABIC-INDIC DIGIT ONE . TWO


# --- error codes ----------------------------------------------------------------------------------------------------


def test_close_codes_match_the_pusher_table() -> None:
    assert {c.name: int(c) for c in CloseCode} == {
        "SSL_ONLY": 4000,
        "APP_NOT_FOUND": 4001,
        "APP_DISABLED": 4003,
        "OVER_CONNECTION_QUOTA": 4004,
        "PATH_NOT_FOUND": 4005,
        "INVALID_VERSION_FORMAT": 4006,
        "UNSUPPORTED_PROTOCOL": 4007,
        "NO_PROTOCOL": 4008,
        "UNAUTHORIZED": 4009,
        "OVER_CAPACITY": 4100,
        "RECONNECT": 4200,
        "PONG_TIMEOUT": 4201,
        "CLOSED_AFTER_INACTIVITY": 4202,
        "CLIENT_EVENT_REJECTED": 4301,
        "WATCHLIST_LIMIT": 4302,
    }


def test_pusher_error_does_not_close_by_default() -> None:
    assert PusherError(4301, "slow down").close is False


def test_subscription_error_keeps_type_error_status() -> None:
    error = SubscriptionError("AuthError", "bad signature", 401)
    assert (error.type, error.error, error.status) == ("AuthError", "bad signature", 401)


def test_api_error_is_an_exception_with_status_and_message() -> None:
    with pytest.raises(ApiError) as caught:
        raise ApiError(413, "too big")
    assert (caught.value.status, caught.value.message) == (413, "too big")


def test_api_error_passes_through_a_context_manager_unchanged() -> None:
    @contextlib.contextmanager
    def guarded() -> Iterator[None]:
        yield

    with pytest.raises(ApiError) as caught, guarded():
        raise ApiError(400, "bad")
    assert caught.value.body() == {"error": "bad", "code": 400}


def test_api_error_accepts_notes() -> None:
    error = ApiError(401, "nope")
    error.add_note("while verifying")
    assert error.__notes__ == ["while verifying"]


# --- limits ---------------------------------------------------------------------------------------------------------


def test_default_limits() -> None:
    limits = Limits()
    assert limits.max_channel_name_length == 200
    assert limits.max_event_name_length == 200
    assert limits.max_event_channels_at_once == 100
    assert limits.max_event_batch_size == 10
    assert limits.max_presence_members_per_channel == 100
    assert limits.max_watchlist_size == 100


def test_payload_limit_in_bytes_is_kilobytes_times_1024() -> None:
    assert Limits(max_event_payload_in_kb=10).max_payload_bytes == 10240


def test_member_info_limit_in_bytes_is_kilobytes_times_1024() -> None:
    assert Limits(max_presence_member_size_in_kb=1).max_member_info_bytes == 1024
