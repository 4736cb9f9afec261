"""Presence channel_data and sign-in user_data: who a socket says it is."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from hub.protocol.users import InvalidUserData, PresenceMember, parse_channel_data, parse_user_data

INFO_LIMIT = 1024


def _error(parse: Callable[[], object]) -> str:
    with pytest.raises(InvalidUserData) as caught:
        parse()
    return str(caught.value)


# --- presence channel_data ------------------------------------------------------------------------------------------


def test_channel_data_with_string_user_id_and_info() -> None:
    member = parse_channel_data('{"user_id":"u1","user_info":{"name":"Ann"}}', INFO_LIMIT)
    assert member == PresenceMember(user_id="u1", user_info={"name": "Ann"})


def test_numeric_user_id_is_normalised_to_a_string() -> None:
    assert parse_channel_data('{"user_id":10}', INFO_LIMIT).user_id == "10"


def test_numeric_and_string_ids_of_the_same_user_are_equal() -> None:
    assert parse_channel_data('{"user_id":10}', INFO_LIMIT) == parse_channel_data('{"user_id":"10"}', INFO_LIMIT)


def test_negative_integer_user_id_is_its_decimal_string() -> None:
    assert parse_channel_data('{"user_id":-3}', INFO_LIMIT).user_id == "-3"


def test_missing_user_info_is_none() -> None:
    assert parse_channel_data('{"user_id":"u1"}', INFO_LIMIT).user_info is None


def test_missing_user_id_is_rejected() -> None:
    assert (
        _error(lambda: parse_channel_data('{"user_info":{"name":"Ann"}}', INFO_LIMIT))
        == "channel_data must contain user_id."
    )


@pytest.mark.parametrize("user_id", ["null", "true", "1.5", "[1]", '{"id":1}'])
def test_user_id_that_is_not_a_string_or_integer_is_rejected(user_id: str) -> None:
    assert (
        _error(lambda: parse_channel_data(f'{{"user_id":{user_id}}}', INFO_LIMIT))
        == "user_id must be a string or an integer."
    )


def test_empty_user_id_is_rejected() -> None:
    assert _error(lambda: parse_channel_data('{"user_id":""}', INFO_LIMIT)) == "User id must be a non-empty string."


def test_user_id_outside_the_alphabet_is_rejected() -> None:
    with pytest.raises(InvalidUserData, match="User id may only contain"):
        parse_channel_data('{"user_id":"a b"}', INFO_LIMIT)


def test_user_id_longer_than_128_characters_is_rejected() -> None:
    with pytest.raises(InvalidUserData, match="longer than 128"):
        parse_channel_data(json.dumps({"user_id": "u" * 129}), INFO_LIMIT)


def test_integer_user_id_with_more_than_128_digits_is_rejected() -> None:
    with pytest.raises(InvalidUserData, match="longer than 128"):
        parse_channel_data('{"user_id":' + "9" * 129 + "}", INFO_LIMIT)


def test_user_info_at_the_size_limit_is_accepted() -> None:
    info = "x" * (INFO_LIMIT - 2)  # JSON-encoded with its two quotes: exactly the limit
    assert parse_channel_data(json.dumps({"user_id": "1", "user_info": info}), INFO_LIMIT).user_info == info


def test_oversize_user_info_is_rejected() -> None:
    info = "x" * (INFO_LIMIT - 1)
    with pytest.raises(InvalidUserData, match=f"^user_info is larger than {INFO_LIMIT} bytes.$"):
        parse_channel_data(json.dumps({"user_id": "1", "user_info": info}), INFO_LIMIT)


@pytest.mark.parametrize("raw", ["", "{", "user_id=1", '{"user_id":1'])
def test_channel_data_that_is_not_json_is_rejected(raw: str) -> None:
    assert _error(lambda: parse_channel_data(raw, INFO_LIMIT)) == "channel_data is not valid JSON."


@pytest.mark.parametrize("raw", ["[]", '"u1"', "10", "null"])
def test_channel_data_that_is_not_an_object_is_rejected(raw: str) -> None:
    assert _error(lambda: parse_channel_data(raw, INFO_LIMIT)) == "channel_data must be a JSON object."


@pytest.mark.parametrize(
    "raw", [r'{"user_id":"1","user_info":{"name":"\ud800"}}', '{"user_id":"1","user_info":"\udfff"}']
)
def test_channel_data_with_a_lone_surrogate_is_rejected(raw: str) -> None:
    assert _error(lambda: parse_channel_data(raw, INFO_LIMIT)) == (
        "channel_data holds a lone surrogate escape (not valid Unicode text)."
    )


def test_channel_data_with_an_escaped_surrogate_pair_is_accepted() -> None:
    assert parse_channel_data(r'{"user_id":"1","user_info":"\ud83d\ude00"}', INFO_LIMIT).user_info == "\U0001f600"


def test_deeply_nested_channel_data_is_rejected_not_a_recursion_error() -> None:
    with pytest.raises(InvalidUserData):
        parse_channel_data('{"user_id":"1","user_info":' + "[" * 100_000, INFO_LIMIT)


# --- sign-in user_data ------------------------------------------------------------------------------------------


def test_user_data_with_id_info_and_watchlist() -> None:
    raw = '{"id":"u1","user_info":{"name":"Ann"},"watchlist":["u2","u3"]}'
    user, truncated = parse_user_data(raw)
    assert (user.user_id, user.user_info, user.watchlist, truncated) == ("u1", {"name": "Ann"}, ("u2", "u3"), False)


def test_user_data_keeps_the_exact_signed_string() -> None:
    raw = '{ "id" : "u1" }'
    assert parse_user_data(raw)[0].user_data == raw


def test_user_data_without_watchlist_has_an_empty_one() -> None:
    user, truncated = parse_user_data('{"id":"u1"}')
    assert (user.watchlist, truncated) == ((), False)


def test_null_watchlist_is_empty() -> None:
    assert parse_user_data('{"id":"u1","watchlist":null}')[0].watchlist == ()


@pytest.mark.parametrize("raw", ['{"user_info":{}}', '{"id":""}', '{"id":true}', '{"id":null}', '{"id":["1"]}'])
def test_user_data_id_must_be_a_non_empty_string_or_an_integer(raw: str) -> None:
    assert _error(lambda: parse_user_data(raw)) == "user_data must contain a non-empty string or integer id."


def test_integer_user_data_id_is_the_user_named_by_its_string_form() -> None:
    # Laravel signs {"id": $user->id}: an integer. Soketi accepts it; the user is "12345" everywhere.
    user, _ = parse_user_data('{"id":12345,"user_info":{"name":"Ann"},"watchlist":[7]}')
    assert (user.user_id, user.user_info, user.watchlist) == ("12345", {"name": "Ann"}, ("7",))


def test_integer_user_data_id_is_given_back_as_a_string() -> None:
    # pusher-js drops a signin_success whose user_data.id is not a string, so the socket is told the string form.
    user, _ = parse_user_data('{"id": 12345, "user_info": {"name": "Änne"}}')
    assert json.loads(user.user_data) == {"id": "12345", "user_info": {"name": "Änne"}}


def test_user_data_id_outside_the_alphabet_is_rejected() -> None:
    with pytest.raises(InvalidUserData, match="User id may only contain"):
        parse_user_data('{"id":"a/b"}')


def test_user_data_with_a_lone_surrogate_is_rejected() -> None:
    assert _error(lambda: parse_user_data(r'{"id":"1","user_info":{"name":"\udc00"}}')) == (
        "user_data holds a lone surrogate escape (not valid Unicode text)."
    )


def test_user_data_that_is_not_json_is_rejected() -> None:
    assert _error(lambda: parse_user_data("id=1")) == "user_data is not valid JSON."


def test_user_data_that_is_not_an_object_is_rejected() -> None:
    assert _error(lambda: parse_user_data('["u1"]')) == "user_data must be a JSON object."


@pytest.mark.parametrize("watchlist", ['"u2"', '{"u2":true}', "5", "true"])
def test_watchlist_that_is_not_a_list_is_rejected(watchlist: str) -> None:
    assert (
        _error(lambda: parse_user_data(f'{{"id":"u1","watchlist":{watchlist}}}'))
        == "watchlist must be a list of user ids."
    )


def test_numeric_watchlist_ids_are_normalised_to_strings() -> None:
    assert parse_user_data('{"id":"u1","watchlist":[2,"3"]}')[0].watchlist == ("2", "3")


def test_invalid_watchlist_id_is_rejected() -> None:
    with pytest.raises(InvalidUserData, match="watchlist entry must be a string or an integer"):
        parse_user_data('{"id":"u1","watchlist":[null]}')


def test_watchlist_at_the_limit_is_not_truncated() -> None:
    user, truncated = parse_user_data(json.dumps({"id": "u1", "watchlist": [str(i) for i in range(100)]}))
    assert (len(user.watchlist), truncated) == (100, False)


def test_watchlist_over_the_limit_keeps_the_first_ids_and_flags_truncation() -> None:
    user, truncated = parse_user_data(json.dumps({"id": "u1", "watchlist": [str(i) for i in range(105)]}))
    assert user.watchlist == tuple(str(i) for i in range(100))
    assert truncated is True


def test_watchlist_limit_is_configurable() -> None:
    user, truncated = parse_user_data('{"id":"u1","watchlist":["a","b","c"]}', max_watchlist=2)
    assert (user.watchlist, truncated) == (("a", "b"), True)
