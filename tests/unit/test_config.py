"""Node settings: flags, HUB_* environment defaults, the per-role rules and where apps come from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.apps import AppRegistry, ConfigError
from hub.appstore.factory import make_app_store
from hub.config import OPTIONS, Role, parse_settings, unknown_variables

REDIS = "redis://localhost:6379/0"


def _error(argv: list[str], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_settings(argv, env or {})
    return str(caught.value)


# --- defaults -------------------------------------------------------------------------------------------------------


def test_serve_defaults_match_the_contract() -> None:
    settings = parse_settings(["serve"], {})
    assert settings.role is Role.SERVE
    assert (settings.host, settings.port, settings.metrics_port) == ("0.0.0.0", 6001, 9601)
    assert (settings.redis_url, settings.apps_file, settings.redis_prefix) == (None, None, "hub")


def test_serve_timing_defaults() -> None:
    settings = parse_settings(["serve"], {})
    assert (settings.activity_timeout, settings.pong_timeout, settings.drain_seconds) == (120, 30.0, 10.0)
    assert (settings.node_timeout, settings.cache_ttl) == (15.0, 1800)


def test_default_node_id_is_random_hex() -> None:
    first = parse_settings(["serve"], {}).node_id
    second = parse_settings(["serve"], {}).node_id
    assert len(first) == 12
    int(first, 16)
    assert first != second


def test_node_id_flag_is_kept() -> None:
    assert parse_settings(["serve", "--node-id", "ws-1"], {}).node_id == "ws-1"


# --- flags and environment ----------------------------------------------------------------------------------------


def test_every_option_reads_a_hub_environment_variable_named_after_its_flag() -> None:
    for option in OPTIONS:
        assert option.env == "HUB_" + option.flag[2:].replace("-", "_").upper()


def test_contract_flags_exist() -> None:
    flags = {option.flag for option in OPTIONS}
    assert {"--host", "--port", "--redis-url", "--apps-file", "--metrics-port"} <= flags


def test_environment_sets_the_default() -> None:
    settings = parse_settings(["serve"], {"HUB_PORT": "7000", "HUB_HOST": "127.0.0.1", "HUB_DRAIN_SECONDS": "2.5"})
    assert (settings.port, settings.host, settings.drain_seconds) == (7000, "127.0.0.1", 2.5)


def test_flag_wins_over_environment() -> None:
    assert parse_settings(["serve", "--port", "7001"], {"HUB_PORT": "7000"}).port == 7001


def test_flags_are_converted_to_their_types() -> None:
    settings = parse_settings(["serve", "--metrics-port", "0", "--pong-timeout", "1.5"], {})
    assert (settings.metrics_port, settings.pong_timeout) == (0, 1.5)


def test_bad_environment_value_names_the_variable() -> None:
    assert _error(["serve"], {"HUB_PORT": "abc"}) == "HUB_PORT='abc' is not a valid int"


def test_bad_float_environment_value_names_the_variable() -> None:
    assert _error(["serve"], {"HUB_DRAIN_SECONDS": "soon"}) == "HUB_DRAIN_SECONDS='soon' is not a valid float"


def test_bad_flag_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_settings(["serve", "--port", "abc"], {})
    assert caught.value.code == 2
    assert "--port" in capsys.readouterr().err


def test_missing_role_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_settings([], {})
    assert caught.value.code == 2


def test_unrelated_environment_variables_are_ignored() -> None:
    assert parse_settings(["serve"], {"PORT": "1", "HUB_UNKNOWN": "x"}).port == 6001


# --- role rules ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["ws", "ingest"])
def test_cluster_roles_need_a_redis_url(role: str) -> None:
    assert _error([role]) == f"hub {role} needs --redis-url (or HUB_REDIS_URL)"


@pytest.mark.parametrize("role", ["ws", "ingest"])
def test_cluster_roles_reject_an_empty_redis_url(role: str) -> None:
    assert _error([role], {"HUB_REDIS_URL": ""}) == f"hub {role} needs --redis-url (or HUB_REDIS_URL)"


@pytest.mark.parametrize("role", ["ws", "ingest"])
def test_cluster_roles_take_the_redis_url_from_the_flag(role: str) -> None:
    assert parse_settings([role, "--redis-url", REDIS], {}).redis_url == REDIS


def test_cluster_role_takes_the_redis_url_from_the_environment() -> None:
    assert parse_settings(["ws"], {"HUB_REDIS_URL": REDIS}).redis_url == REDIS


def test_serve_runs_without_redis() -> None:
    assert parse_settings(["serve"], {}).redis_url is None


def test_serve_accepts_a_redis_url() -> None:
    assert parse_settings(["serve", "--redis-url", REDIS], {}).redis_url == REDIS


@pytest.mark.parametrize(
    ("role", "websocket", "http_api"),
    [(Role.SERVE, True, True), (Role.WS, True, False), (Role.INGEST, False, True)],
)
def test_what_each_role_serves(role: Role, websocket: bool, http_api: bool) -> None:
    assert (role.websocket, role.http_api) == (websocket, http_api)


def test_unknown_log_format_is_a_config_error() -> None:
    assert _error(["serve", "--log-format", "xml"]) == "log format must be auto, json or console, not 'xml'"


@pytest.mark.parametrize("log_format", ["auto", "json", "console"])
def test_known_log_formats_are_accepted(log_format: str) -> None:
    assert parse_settings(["serve", "--log-format", log_format], {}).log_format == log_format


@pytest.mark.parametrize("timeout", ["0", "-5"])
def test_activity_timeout_must_be_positive(timeout: str) -> None:
    assert _error(["serve", "--activity-timeout", timeout]) == "activity timeout must be positive"


# --- apps -----------------------------------------------------------------------------------------------------------


async def _loaded(argv: list[str], env: dict[str, str]) -> AppRegistry:
    store = make_app_store(parse_settings(argv, env), env)
    await store.start()
    await store.close()
    return store.apps


async def test_without_an_apps_file_the_default_app_comes_from_pusher_environment() -> None:
    env = {"PUSHER_APP_ID": "7", "PUSHER_APP_KEY": "key7", "PUSHER_APP_SECRET": "secret7"}
    registry = await _loaded(["serve"], env)
    assert len(registry) == 1
    app = registry.by_key("key7")
    assert app is not None
    assert (app.id, app.secret) == ("7", "secret7")


async def test_apps_file_from_the_environment_is_loaded(tmp_path: Path) -> None:
    path = tmp_path / "apps.json"
    path.write_text(json.dumps({"apps": [{"id": "1", "key": "k1", "secret": "s1"}]}))
    env = {"HUB_APPS_FILE": str(path), "PUSHER_APP_KEY": "ignored"}
    registry = await _loaded(["serve"], env)
    assert [app.key for app in registry] == ["k1"]


async def test_missing_apps_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read apps file"):
        await _loaded(["serve", "--apps-file", str(tmp_path / "none.json")], {})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--app-store", "mysql"], "app store must be one of env, file, redis, postgres, not 'mysql'"),
        (["serve", "--app-store", "file"], "the file app store needs --apps-file (or HUB_APPS_FILE)"),
        (["serve", "--app-store", "redis"], "the redis app store needs --redis-url (or HUB_REDIS_URL)"),
        (["serve", "--app-store", "postgres"], "the postgres app store needs --postgres-url (or HUB_POSTGRES_URL)"),
        (
            ["serve", "--app-store", "redis", "--redis-url", REDIS, "--apps-file", "a.json"],
            "--apps-file is read by the file app store only, not by the redis one",
        ),
        (["serve", "--apps-reload-seconds", "0"], "apps reload seconds must be positive"),
    ],
)
def test_app_store_needs_its_options(argv: list[str], message: str) -> None:
    assert _error(argv) == message


def test_app_store_defaults_to_the_file_with_an_apps_file_and_to_env_without() -> None:
    assert parse_settings(["serve"], {}).app_store == "env"
    assert parse_settings(["serve", "--apps-file", "a.json"], {}).app_store == "file"
    assert parse_settings(["ws", "--redis-url", REDIS], {"HUB_APP_STORE": "redis"}).app_store == "redis"


# --- admin port ---------------------------------------------------------------------------------------------------


def test_admin_port_is_off_without_a_token() -> None:
    settings = parse_settings(["serve"], {})
    assert (settings.admin_port, settings.admin_token, settings.admin_enabled) == (9602, None, False)


def test_admin_token_from_the_environment_turns_the_admin_port_on() -> None:
    settings = parse_settings(["ws", "--redis-url", REDIS], {"HUB_ADMIN_TOKEN": "t" * 16})
    assert settings.admin_enabled and settings.admin_token == "t" * 16


def test_admin_port_zero_keeps_it_off_even_with_a_token() -> None:
    assert not parse_settings(["serve", "--admin-port", "0", "--admin-token", "t" * 16], {}).admin_enabled


def test_admin_token_file_is_read_without_its_newline(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s" * 20 + "\n")
    assert parse_settings(["serve", "--admin-token-file", str(token_file)], {}).admin_token == "s" * 20


def test_empty_admin_token_variable_means_no_admin_port() -> None:
    assert not parse_settings(["serve"], {"HUB_ADMIN_TOKEN": ""}).admin_enabled


def test_short_admin_token_is_refused() -> None:
    assert _error(["serve", "--admin-token", "short"]) == "the admin token must be at least 16 characters"


def test_admin_token_given_twice_is_refused(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s" * 20)
    message = _error(["serve", "--admin-token-file", str(token_file)], {"HUB_ADMIN_TOKEN": "t" * 16})
    assert message.startswith("give the admin token once")


def test_missing_admin_token_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert _error(["serve", "--admin-token-file", str(missing)]).startswith(f"cannot read admin token file {missing}")


def test_empty_admin_token_file_is_refused(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("\n")
    assert _error(["serve", "--admin-token-file", str(token_file)]) == f"admin token file {token_file} is empty"


def test_hub_variables_that_are_no_option_are_named() -> None:
    env = {"HUB_PORTT": "1", "HUB_PORT": "2", "PUSHER_APP_CLUSTER": "mt1", "HUB_REDIS_UR": "x"}
    assert unknown_variables(env) == ["HUB_PORTT", "HUB_REDIS_UR"]


@pytest.mark.parametrize(("given", "kept"), [("/ws", "/ws"), ("/ws/", "/ws"), ("/a/b", "/a/b"), ("", "")])
def test_path_prefix_is_kept_without_a_trailing_slash(given: str, kept: str) -> None:
    assert parse_settings(["serve", "--path-prefix", given], {}).path_prefix == kept


@pytest.mark.parametrize("bad", ["ws", "/ws/{key}", "/ws?x"])
def test_a_path_prefix_that_is_no_path_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="path prefix"):
        parse_settings(["serve", "--path-prefix", bad], {})
