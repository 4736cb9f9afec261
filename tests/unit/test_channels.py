"""Channel kinds by exact prefix, channel name rules and user id rules."""

from __future__ import annotations

import pytest

from hub.protocol.channels import (
    ChannelKind,
    channel_name_error,
    channel_type,
    server_to_user_channel,
    user_id_error,
    user_of_server_channel,
)

ALPHABET = "abcXYZ019_-=@,.;"


# --- classification ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "cache"),
    [
        ("my-channel", ChannelKind.PUBLIC, False),
        ("cache-scores", ChannelKind.PUBLIC, True),
        ("private-orders", ChannelKind.PRIVATE, False),
        ("private-cache-orders", ChannelKind.PRIVATE, True),
        ("private-encrypted-dm", ChannelKind.PRIVATE_ENCRYPTED, False),
        ("private-encrypted-cache-dm", ChannelKind.PRIVATE_ENCRYPTED, True),
        ("presence-room", ChannelKind.PRESENCE, False),
        ("presence-cache-room", ChannelKind.PRESENCE, True),
        ("#server-to-user-42", ChannelKind.SERVER_TO_USER, False),
    ],
)
def test_channel_kind_and_cache_flag_follow_the_prefix(name: str, kind: ChannelKind, cache: bool) -> None:
    assert channel_type(name).kind is kind
    assert channel_type(name).cache is cache


@pytest.mark.parametrize("name", ["privateer", "private", "presenceroom", "presence", "Private-x", "PRESENCE-x"])
def test_names_that_only_resemble_a_prefix_are_public(name: str) -> None:
    assert channel_type(name).kind is ChannelKind.PUBLIC
    assert channel_type(name).needs_auth is False


@pytest.mark.parametrize("name", ["cacheable", "cache", "private-cacheable", "presence-cached"])
def test_cache_flag_needs_the_exact_cache_dash_prefix(name: str) -> None:
    assert channel_type(name).cache is False


def test_private_encrypted_without_trailing_dash_is_plain_private() -> None:
    assert channel_type("private-encryptedroom").kind is ChannelKind.PRIVATE


def test_cache_prefix_inside_a_name_does_not_make_it_a_cache_channel() -> None:
    assert channel_type("my-cache-channel").cache is False


def test_prefix_after_the_start_does_not_count() -> None:
    assert channel_type("x-private-y").kind is ChannelKind.PUBLIC


@pytest.mark.parametrize(
    ("name", "needs_auth"),
    [
        ("public", False),
        ("cache-public", False),
        ("private-a", True),
        ("private-cache-a", True),
        ("private-encrypted-a", True),
        ("presence-a", True),
        ("presence-cache-a", True),
        ("#server-to-user-1", False),
    ],
)
def test_needs_auth_for_private_encrypted_and_presence(name: str, needs_auth: bool) -> None:
    assert channel_type(name).needs_auth is needs_auth


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("public", False),
        ("private-a", True),
        ("private-cache-a", True),
        ("presence-a", True),
        ("private-encrypted-a", False),
        ("#server-to-user-1", False),
    ],
)
def test_client_events_only_on_private_and_presence(name: str, allowed: bool) -> None:
    assert channel_type(name).allows_client_events is allowed


# --- server-to-user pseudo channels ---------------------------------------------------------------------------------


def test_server_to_user_channel_name() -> None:
    assert server_to_user_channel("user-7") == "#server-to-user-user-7"


def test_user_of_server_channel_round_trips() -> None:
    assert user_of_server_channel(server_to_user_channel("abc@x.com")) == "abc@x.com"


@pytest.mark.parametrize("name", ["#server-to-user-", "server-to-user-1", "#server-to-users-1", "private-x", "#x"])
def test_user_of_server_channel_is_none_for_other_names(name: str) -> None:
    assert user_of_server_channel(name) is None


# --- channel name validation --------------------------------------------------------------------------------------


def test_name_using_the_whole_alphabet_is_valid() -> None:
    assert channel_name_error(ALPHABET, 200, allow_server_channels=False) is None


def test_name_at_the_length_limit_is_valid() -> None:
    assert channel_name_error("a" * 164, 164, allow_server_channels=False) is None


def test_name_over_the_length_limit_is_rejected() -> None:
    assert (
        channel_name_error("a" * 165, 164, allow_server_channels=False) == "Channel name is longer than 164 characters."
    )


@pytest.mark.parametrize("name", ["", None, 7, ["a"], b"abc"])
def test_empty_or_non_string_name_is_rejected(name: object) -> None:
    assert channel_name_error(name, 200, allow_server_channels=True) == "Channel name must be a non-empty string."


@pytest.mark.parametrize("char", [" ", "/", ":", "#", "*", "?", "é", "\n", "\x00", "%", "+", "!", "'", '"', "ü"])
def test_characters_outside_the_alphabet_are_rejected(char: str) -> None:
    problem = channel_name_error(f"private-a{char}b", 200, allow_server_channels=False)
    assert problem == "Channel name may only contain letters, digits and _ - = @ , . ;"


def test_trailing_newline_is_rejected() -> None:
    # `$` in a regex would accept "abc\n"; the check must match the whole name.
    assert channel_name_error("abc\n", 200, allow_server_channels=False) is not None


def test_hash_names_are_reserved_for_clients() -> None:
    problem = channel_name_error("#server-to-user-1", 200, allow_server_channels=False)
    assert problem == "Channel names starting with # are reserved."


def test_server_to_user_channel_is_allowed_for_backends() -> None:
    assert channel_name_error("#server-to-user-1", 200, allow_server_channels=True) is None


@pytest.mark.parametrize("name", ["#general", "#server-to-user-", "#server-to-users-1", "##server-to-user-1"])
def test_other_hash_names_are_reserved_even_for_backends(name: str) -> None:
    assert channel_name_error(name, 200, allow_server_channels=True) == "Channel names starting with # are reserved."


def test_server_to_user_channel_with_an_invalid_user_id_is_rejected() -> None:
    problem = channel_name_error("#server-to-user-a b", 200, allow_server_channels=True)
    assert problem == "Channel name may only contain letters, digits and _ - = @ , . ;"


def test_server_to_user_channel_counts_towards_the_length_limit() -> None:
    name = server_to_user_channel("u" * 185)
    assert len(name) == 201
    assert channel_name_error(name, 200, allow_server_channels=True) == "Channel name is longer than 200 characters."


# --- user ids -------------------------------------------------------------------------------------------------------


def test_user_id_using_the_whole_alphabet_is_valid() -> None:
    assert user_id_error(ALPHABET) is None


def test_user_id_of_128_characters_is_valid() -> None:
    assert user_id_error("u" * 128) is None


def test_user_id_of_129_characters_is_rejected() -> None:
    assert user_id_error("u" * 129) == "User id is longer than 128 characters."


def test_user_id_limit_is_configurable() -> None:
    assert user_id_error("abcd", max_length=3) == "User id is longer than 3 characters."


@pytest.mark.parametrize("user_id", ["", None, 10, 1.5, True, ["1"]])
def test_user_id_must_be_a_non_empty_string(user_id: object) -> None:
    assert user_id_error(user_id) == "User id must be a non-empty string."


@pytest.mark.parametrize("user_id", ["a b", "a/b", "a:b", "#1", "ü", "a\n"])
def test_user_id_outside_the_alphabet_is_rejected(user_id: str) -> None:
    assert user_id_error(user_id) == "User id may only contain letters, digits and _ - = @ , . ;"
