"""Apps files: what loads, and a one-line ConfigError naming the problem for everything that does not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hub.apps import (
    WEBHOOK_EVENT_TYPES,
    App,
    AppRegistry,
    ConfigError,
    Webhook,
    app_from_mapping,
    default_app,
    load_apps_file,
)
from hub.protocol.limits import Limits

BASE = {"id": "1", "key": "app-key", "secret": "app-secret"}


def _write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "apps.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def _load_error(tmp_path: Path, doc: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_apps_file(_write(tmp_path, doc))
    message = str(caught.value)
    assert "\n" not in message
    return message


def _app_error(**fields: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        app_from_mapping({**BASE, **fields})
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- what loads -----------------------------------------------------------------------------------------------


def test_minimal_app_takes_the_defaults() -> None:
    app = app_from_mapping(BASE)
    assert app == App(id="1", key="app-key", secret="app-secret")
    assert (app.enabled, app.enable_client_messages, app.max_connections) == (True, False, -1)
    assert app.limits == Limits()


def test_apps_file_apps_are_found_by_id_and_by_key(tmp_path: Path) -> None:
    registry = load_apps_file(_write(tmp_path, {"apps": [BASE, {"id": "2", "key": "k2", "secret": "s2"}]}))
    second = registry.by_id("2")
    assert second is not None
    assert (second.key, second.secret) == ("k2", "s2")
    assert registry.by_key("k2") is second


def test_registry_answers_none_for_unknown_id_and_key(tmp_path: Path) -> None:
    registry = load_apps_file(_write(tmp_path, {"apps": [BASE]}))
    assert (registry.by_id("3"), registry.by_key("nope")) == (None, None)


def test_registry_iterates_apps_in_file_order(tmp_path: Path) -> None:
    registry = load_apps_file(_write(tmp_path, {"apps": [BASE, {"id": "2", "key": "k2", "secret": "s2"}]}))
    assert (len(registry), [a.id for a in registry]) == (2, ["1", "2"])


def test_load_apps_file_accepts_a_str_path(tmp_path: Path) -> None:
    assert len(load_apps_file(str(_write(tmp_path, {"apps": [BASE]})))) == 1


def test_numeric_app_id_is_taken_as_its_string() -> None:
    assert app_from_mapping({**BASE, "id": 12345}).id == "12345"


def test_snake_case_flags_and_limits_are_applied() -> None:
    app = app_from_mapping(
        {
            **BASE,
            "enabled": False,
            "enable_client_messages": True,
            "enable_user_authentication": True,
            "user_authentication_timeout": 5,
            "enable_subscription_count": True,
            "enable_watchlist_events": True,
            "max_connections": 10,
            "max_backend_events_per_second": 20,
            "max_client_events_per_second": 30,
            "encryption_master_key_base64": "a2V5",
            "max_presence_members_per_channel": 50,
            "max_event_payload_in_kb": 12,
        }
    )
    assert app.enabled is False
    assert (app.enable_client_messages, app.enable_user_authentication) == (True, True)
    assert app.user_authentication_timeout == 5.0
    assert isinstance(app.user_authentication_timeout, float)
    assert (app.enable_subscription_count, app.enable_watchlist_events) == (True, True)
    assert (app.max_connections, app.max_backend_events_per_second, app.max_client_events_per_second) == (10, 20, 30)
    assert app.encryption_master_key_base64 == "a2V5"
    assert (app.limits.max_presence_members_per_channel, app.limits.max_event_payload_in_kb) == (50, 12)


def test_null_encryption_master_key_means_none() -> None:
    assert app_from_mapping({**BASE, "encryption_master_key_base64": None}).encryption_master_key_base64 is None


def test_soketi_camel_case_app_is_accepted() -> None:
    # Soketi's default app, as its docs show it, plus its limit fields.
    soketi = {
        "id": "app-id",
        "key": "app-key",
        "secret": "app-secret",
        "maxConnections": -1,
        "enableClientMessages": True,
        "enabled": True,
        "maxBackendEventsPerSecond": 100,
        "maxClientEventsPerSecond": 5,
        "maxReadRequestsPerSecond": 7,
        "webhooks": [],
        "maxPresenceMembersPerChannel": 50,
        "maxPresenceMemberSizeInKb": 3,
        "maxChannelNameLength": 150,
        "maxEventChannelsAtOnce": 20,
        "maxEventNameLength": 64,
        "maxEventPayloadInKb": 40,
        "maxEventBatchSize": 5,
        "enableUserAuthentication": True,
    }
    app = app_from_mapping(soketi)
    assert (app.enable_client_messages, app.enable_user_authentication) == (True, True)
    assert (app.max_backend_events_per_second, app.max_client_events_per_second) == (100, 5)
    assert app.max_read_requests_per_second == 7
    assert app.limits == Limits(
        max_channel_name_length=150,
        max_event_name_length=64,
        max_event_payload_in_kb=40,
        max_event_channels_at_once=20,
        max_event_batch_size=5,
        max_presence_members_per_channel=50,
        max_presence_member_size_in_kb=3,
    )


def test_pascal_case_keys_are_accepted() -> None:
    assert app_from_mapping({"Id": "1", "Key": "k", "Secret": "s", "MaxConnections": 3}).max_connections == 3


def test_webhook_with_event_types_and_headers() -> None:
    app = app_from_mapping(
        {
            **BASE,
            "webhooks": [
                {"url": "http://h/a", "event_types": ["member_added", "member_removed"], "headers": {"X-A": "1"}}
            ],
        }
    )
    assert app.webhooks == (
        Webhook(url="http://h/a", event_types=frozenset({"member_added", "member_removed"}), headers=(("X-A", "1"),)),
    )


def test_webhook_without_event_types_receives_every_type() -> None:
    app = app_from_mapping({**BASE, "webhooks": [{"url": "http://h/all"}]})
    assert app.webhooks[0].event_types == WEBHOOK_EVENT_TYPES


def test_webhooks_for_selects_by_event_type() -> None:
    app = app_from_mapping(
        {
            **BASE,
            "webhooks": [
                {"url": "http://h/occ", "event_types": ["channel_occupied"]},
                {"url": "http://h/all"},
            ],
        }
    )
    assert [w.url for w in app.webhooks_for("channel_occupied", "c")] == ["http://h/occ", "http://h/all"]
    assert [w.url for w in app.webhooks_for("member_added", "c")] == ["http://h/all"]


def test_webhook_filter_selects_channels_by_prefix_and_suffix() -> None:
    hooks = [
        {"url": "http://h/chat", "filter": {"channel_name_starts_with": "private-chat."}},
        {"url": "http://h/eu", "filter": {"channel_name_ends_with": "-eu"}},
        {"url": "http://h/both", "filter": {"channel_name_starts_with": "presence-", "channel_name_ends_with": "-eu"}},
        {"url": "http://h/all", "filter": {}},
    ]
    app = app_from_mapping({**BASE, "webhooks": hooks})

    def urls(channel: str) -> list[str]:
        return [w.url for w in app.webhooks_for("channel_occupied", channel)]

    assert urls("private-chat.1.2") == ["http://h/chat", "http://h/all"]
    assert urls("presence-room-eu") == ["http://h/eu", "http://h/both", "http://h/all"]
    assert urls("room-eu") == ["http://h/eu", "http://h/all"]
    assert urls("private-other") == ["http://h/all"]


@pytest.mark.parametrize(
    ("webhook", "message"),
    [
        ({"url": "http://h", "filter": "private-"}, "app 1: webhook filter must be an object"),
        (
            {"url": "http://h", "filter": {"channel_name_contains": "x"}},
            "app 1: unknown webhook filter key 'channel_name_contains' "
            "(known: channel_name_starts_with, channel_name_ends_with)",
        ),
        (
            {"url": "http://h", "filter": {"channel_name_starts_with": 5}},
            "app 1: webhook filter channel_name_starts_with must be a string, got 5",
        ),
        ({"url": "http://h", "method": "PUT"}, "app 1: unknown webhook key 'method'"),
        (
            {"lambda_function": "f", "lambda": {"async": True}},
            "app 1: webhook lambda_function is not supported; give the webhook a url",
        ),
    ],
)
def test_bad_webhook_keys_are_refused_by_name(webhook: dict[str, Any], message: str) -> None:
    assert _app_error(webhooks=[webhook]) == message


def test_webhook_event_types_are_pushers() -> None:
    assert (
        frozenset(
            {
                "channel_occupied",
                "channel_vacated",
                "member_added",
                "member_removed",
                "client_event",
                "cache_miss",
                "subscription_count",
            }
        )
        == WEBHOOK_EVENT_TYPES
    )


# --- the file itself ----------------------------------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_apps_file(tmp_path / "nope.json")
    assert str(caught.value) == f"cannot read apps file {tmp_path / 'nope.json'}: No such file or directory"


def test_directory_instead_of_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read apps file"):
        load_apps_file(tmp_path)


def test_invalid_json_names_the_file_and_position(tmp_path: Path) -> None:
    message = _load_error(tmp_path, '{"apps": [')
    assert message.startswith(f"apps file {tmp_path / 'apps.json'} is not valid JSON: ")
    assert "line 1" in message


def test_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "apps.json"
    path.write_bytes(b'{"apps": [{"id": "\xff"}]}')
    with pytest.raises(ConfigError) as caught:
        load_apps_file(path)
    assert str(caught.value).startswith(f"apps file {path} is not UTF-8 text")


def test_deeply_nested_json_is_a_config_error(tmp_path: Path) -> None:
    assert "is not valid JSON" in _load_error(tmp_path, "[" * 100_000)


@pytest.mark.parametrize("doc", [[], {"apps": {}}, {"applications": []}, "null", {"apps": "x"}])
def test_document_without_an_apps_list_is_a_config_error(tmp_path: Path, doc: Any) -> None:
    assert _load_error(tmp_path, doc) == f'apps file {tmp_path / "apps.json"} must be an object with an "apps" list'


def test_non_object_entry_is_named_by_position(tmp_path: Path) -> None:
    assert (
        _load_error(tmp_path, {"apps": [BASE, "x"]}) == f"apps file {tmp_path / 'apps.json'}: entry #2 is not an object"
    )


def test_empty_apps_list_is_a_config_error(tmp_path: Path) -> None:
    assert _load_error(tmp_path, {"apps": []}) == "no apps configured"


def test_duplicate_app_id_is_a_config_error(tmp_path: Path) -> None:
    doc = {"apps": [BASE, {**BASE, "key": "other"}]}
    assert _load_error(tmp_path, doc) == "duplicate app id '1'"


def test_duplicate_numeric_and_string_app_id_is_a_config_error(tmp_path: Path) -> None:
    doc = {"apps": [BASE, {**BASE, "id": 1, "key": "other"}]}
    assert _load_error(tmp_path, doc) == "duplicate app id '1'"


def test_duplicate_app_key_is_a_config_error(tmp_path: Path) -> None:
    doc = {"apps": [BASE, {**BASE, "id": "2"}]}
    assert _load_error(tmp_path, doc) == "duplicate app key 'app-key'"


def test_registry_rejects_duplicate_ids_directly() -> None:
    with pytest.raises(ConfigError, match="duplicate app id"):
        AppRegistry([App("1", "a", "s"), App("1", "b", "s")])


# --- entry errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["id", "key", "secret"])
def test_missing_credential_is_named(missing: str) -> None:
    raw = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(ConfigError) as caught:
        app_from_mapping(raw, position=2)
    label = "#3" if missing == "id" else "1"
    assert str(caught.value) == f"app {label}: {missing} is required and must be a non-empty string"


@pytest.mark.parametrize(("field", "value"), [("key", ""), ("secret", 5), ("id", ""), ("id", True), ("id", 1.5)])
def test_empty_or_wrong_typed_credential_is_named(field: str, value: object) -> None:
    assert f"{field} is required and must be a non-empty string" in _app_error(**{field: value})


def test_unknown_key_is_named() -> None:
    assert _app_error(enable_magic=True) == "app 1: unknown key 'enable_magic'"


def test_unknown_camel_case_key_is_named_in_snake_case() -> None:
    assert _app_error(enableMagic=True) == "app 1: unknown key 'enable_magic'"


@pytest.mark.parametrize("value", ["true", 1, 0, None])
def test_non_boolean_flag_is_named(value: object) -> None:
    assert _app_error(enable_client_messages=value) == (
        f"app 1: enable_client_messages must be true or false, got {value!r}"
    )


@pytest.mark.parametrize("value", ["10", 1.5, True, None])
def test_non_integer_app_setting_is_named(value: object) -> None:
    assert _app_error(max_connections=value) == f"app 1: max_connections must be an integer, got {value!r}"


@pytest.mark.parametrize("value", ["100", 2.5, False])
def test_non_integer_limit_is_named(value: object) -> None:
    assert _app_error(maxEventPayloadInKb=value) == f"app 1: max_event_payload_in_kb must be an integer, got {value!r}"


@pytest.mark.parametrize("value", ["30", True, None, [1]])
def test_non_numeric_timeout_is_named(value: object) -> None:
    assert _app_error(user_authentication_timeout=value) == (
        f"app 1: user_authentication_timeout must be a number, got {value!r}"
    )


def test_float_timeout_is_kept() -> None:
    assert app_from_mapping({**BASE, "user_authentication_timeout": 2.5}).user_authentication_timeout == 2.5


def test_non_string_encryption_key_is_named() -> None:
    assert _app_error(encryption_master_key_base64=5) == "app 1: encryption_master_key_base64 must be a string, got 5"


def test_webhooks_that_are_not_a_list_are_named() -> None:
    assert _app_error(webhooks={"url": "http://h"}) == "app 1: webhooks must be a list"


@pytest.mark.parametrize("webhook", ["http://h", {}, {"url": 5}])
def test_webhook_without_a_url_string_is_named(webhook: object) -> None:
    assert _app_error(webhooks=[webhook]) == "app 1: each webhook needs a url string"


@pytest.mark.parametrize("types", ["member_added", [1], {"member_added": True}])
def test_webhook_event_types_that_are_not_a_list_of_strings_are_named(types: object) -> None:
    assert _app_error(webhooks=[{"url": "http://h", "event_types": types}]) == (
        "app 1: webhook event_types must be a list of strings"
    )


def test_unknown_webhook_event_type_is_named() -> None:
    assert _app_error(webhooks=[{"url": "http://h", "event_types": ["member_added", "bogus"]}]) == (
        "app 1: unknown webhook event type 'bogus'"
    )


def test_webhook_headers_that_are_not_an_object_are_named() -> None:
    assert _app_error(webhooks=[{"url": "http://h", "headers": ["X-A: 1"]}]) == (
        "app 1: webhook headers must be an object"
    )


def test_error_in_the_second_file_entry_names_that_app(tmp_path: Path) -> None:
    doc = {"apps": [BASE, {"id": "two", "key": "k2", "secret": "s2", "maxConnections": "many"}]}
    assert _load_error(tmp_path, doc) == "app two: max_connections must be an integer, got 'many'"


# --- default app -----------------------------------------------------------------------------------------------


def test_default_app_without_environment() -> None:
    app = default_app({})
    assert (app.id, app.key, app.secret, app.enable_client_messages) == ("app-id", "app-key", "app-secret", False)


def test_default_app_from_laravel_environment() -> None:
    env = {"PUSHER_APP_ID": "42", "PUSHER_APP_KEY": "k", "PUSHER_APP_SECRET": "s"}
    assert (default_app(env).id, default_app(env).key, default_app(env).secret) == ("42", "k", "s")


def test_default_app_ignores_empty_environment_values() -> None:
    assert default_app({"PUSHER_APP_ID": "", "PUSHER_APP_KEY": ""}).id == "app-id"


@pytest.mark.parametrize(
    ("value", "enabled"), [("true", True), ("1", True), ("YES", True), ("false", False), ("0", False)]
)
def test_default_app_client_messages_flag(value: str, enabled: bool) -> None:
    assert default_app({"PUSHER_APP_CLIENT_MESSAGES": value}).enable_client_messages is enabled
