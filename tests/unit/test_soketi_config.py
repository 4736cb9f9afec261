"""A Soketi setup (config file, flat or nested, and SOKETI_* variables) means the same hub settings and apps.

The reference is the hub setup a user would write by hand: an apps file plus flags. Every Soketi variable
Soketi 1.x reads is listed here (from its documentation) so a new one cannot go unhandled.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from hub.apps import ConfigError, load_apps_file
from hub.config import OPTIONS, Settings, load_apps, parse_settings
from hub.redis_topology import parse_topology
from hub.soketi_config import DEFAULT_APP_ENV, SOKETI_OPTIONS, hub_setup, reference_table, translate

# Every SOKETI_* variable Soketi reads (its CLI's list), without the prefix.
SOKETI_VARIABLES = """
ADAPTER_DRIVER ADAPTER_CLUSTER_REQUESTS_TIMEOUT ADAPTER_REDIS_PREFIX ADAPTER_REDIS_CLUSTER_MODE
ADAPTER_REDIS_REQUESTS_TIMEOUT ADAPTER_REDIS_SUB_OPTIONS ADAPTER_REDIS_PUB_OPTIONS ADAPTER_NATS_PREFIX
ADAPTER_NATS_SERVERS ADAPTER_NATS_USER ADAPTER_NATS_PASSWORD ADAPTER_NATS_TOKEN ADAPTER_NATS_TIMEOUT
ADAPTER_NATS_REQUESTS_TIMEOUT ADAPTER_NATS_NODES_NUMBER APP_MANAGER_DRIVER APP_MANAGER_CACHE_ENABLED
APP_MANAGER_CACHE_TTL APP_MANAGER_DYNAMODB_TABLE APP_MANAGER_DYNAMODB_REGION APP_MANAGER_DYNAMODB_ENDPOINT
APP_MANAGER_MYSQL_TABLE APP_MANAGER_MYSQL_VERSION APP_MANAGER_POSTGRES_TABLE APP_MANAGER_POSTGRES_VERSION
APP_MANAGER_MYSQL_USE_V2 CHANNEL_LIMITS_MAX_NAME_LENGTH CHANNEL_CACHE_TTL CACHE_DRIVER CACHE_REDIS_CLUSTER_MODE
CACHE_REDIS_OPTIONS CLUSTER_CHECK_INTERVAL CLUSTER_HOST CLUSTER_IGNORE_PROCESS CLUSTER_BROADCAST_ADDRESS
CLUSTER_KEEPALIVE_INTERVAL CLUSTER_MASTER_TIMEOUT CLUSTER_MULTICAST_ADDRESS CLUSTER_NODE_TIMEOUT CLUSTER_PORT
CLUSTER_PREFIX CLUSTER_UNICAST_ADDRESSES DEBUG DEFAULT_APP_ID DEFAULT_APP_KEY DEFAULT_APP_SECRET
DEFAULT_APP_MAX_CONNS DEFAULT_APP_ENABLE_CLIENT_MESSAGES DEFAULT_APP_ENABLED DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC
DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC DEFAULT_APP_MAX_READ_REQ_PER_SEC DEFAULT_APP_USER_AUTHENTICATION
DEFAULT_APP_WEBHOOKS DB_POOLING_ENABLED DB_POOLING_MIN DB_POOLING_MAX DB_MYSQL_HOST DB_MYSQL_PORT
DB_MYSQL_USERNAME DB_MYSQL_PASSWORD DB_MYSQL_DATABASE DB_POSTGRES_HOST DB_POSTGRES_PORT DB_POSTGRES_USERNAME
DB_POSTGRES_PASSWORD DB_POSTGRES_DATABASE DB_REDIS_HOST DB_REDIS_PORT DB_REDIS_DB DB_REDIS_USERNAME
DB_REDIS_PASSWORD DB_REDIS_KEY_PREFIX DB_REDIS_SENTINELS DB_REDIS_SENTINEL_PASSWORD DB_REDIS_CLUSTER_NODES
DB_REDIS_INSTANCE_NAME EVENT_MAX_BATCH_SIZE EVENT_MAX_CHANNELS_AT_ONCE EVENT_MAX_NAME_LENGTH EVENT_MAX_SIZE_IN_KB
HOST HTTP_ACCEPT_TRAFFIC_MEMORY_THRESHOLD METRICS_ENABLED METRICS_DRIVER METRICS_HOST METRICS_PROMETHEUS_PREFIX
METRICS_SERVER_PORT MODE PORT PATH_PREFIX PRESENCE_MAX_MEMBER_SIZE PRESENCE_MAX_MEMBERS QUEUE_DRIVER
QUEUE_REDIS_CONCURRENCY QUEUE_REDIS_OPTIONS QUEUE_REDIS_CLUSTER_MODE QUEUE_SQS_REGION QUEUE_SQS_CLIENT_OPTIONS
QUEUE_SQS_URL QUEUE_SQS_ENDPOINT QUEUE_SQS_PROCESS_BATCH QUEUE_SQS_BATCH_SIZE QUEUE_SQS_POLLING_WAIT_TIME_MS
RATE_LIMITER_DRIVER RATE_LIMITER_REDIS_OPTIONS RATE_LIMITER_REDIS_CLUSTER_MODE SHUTDOWN_GRACE_PERIOD SSL_CERT
SSL_KEY SSL_PASS SSL_CA USER_AUTHENTICATION_TIMEOUT WEBHOOKS_BATCHING WEBHOOKS_BATCHING_DURATION
""".split()  # noqa: SIM905  -- the names as Soketi lists them, easier to compare than a list

WEBHOOK = {
    "url": "http://backend.test/hooks",
    "event_types": ["channel_occupied", "member_added"],
    "headers": {"X-Token": "t"},
    "filter": {"channel_name_starts_with": "private-chat.", "channel_name_ends_with": ".1"},
}
SOKETI_APP = {
    "id": "local-app",
    "key": "local-key",
    "secret": "local-secret",
    "maxConnections": 100,
    "enableClientMessages": True,
    "enabled": True,
    "maxBackendEventsPerSecond": 50,
    "maxClientEventsPerSecond": 20,
    "maxReadRequestsPerSecond": 30,
    "maxPresenceMembersPerChannel": 10,
    "maxPresenceMemberSizeInKb": 3,
    "maxChannelNameLength": 120,
    "maxEventChannelsAtOnce": 5,
    "maxEventNameLength": 60,
    "maxEventPayloadInKb": 20,
    "maxEventBatchSize": 4,
    "enableUserAuthentication": True,
    "webhooks": [WEBHOOK],
}
# Every Soketi option hub maps, nested as Soketi's own defaults are written.
NESTED: dict[str, Any] = {
    "host": "127.0.0.2",
    "port": 6101,
    "debug": True,
    "mode": "full",
    "pathPrefix": "/ws",
    "shutdownGracePeriod": 4500,
    "instance": {"process_id": "node-7"},
    "appManager": {"driver": "array", "array": {"apps": [SOKETI_APP, {"id": 2, "key": "k2", "secret": "s2"}]}},
    "channelLimits": {"maxNameLength": 150, "cacheTtl": 900},
    "eventLimits": {"maxChannelsAtOnce": 7, "maxNameLength": 70, "maxPayloadInKb": 30, "maxBatchSize": 6},
    "presence": {"maxMembersPerChannel": 50, "maxMemberSizeInKb": 4},
    "userAuthenticationTimeout": 12000,
    "httpApi": {"requestLimitInMb": 2},
    "cors": {"origin": ["https://app.example", "https://admin.example"]},
    "webhooks": {"batching": {"enabled": True, "duration": 80}},
    "metrics": {"enabled": True, "port": 9701, "driver": "prometheus", "host": "127.0.0.2"},
    "adapter": {"driver": "redis", "redis": {"prefix": "chat"}},
    "cache": {"driver": "redis"},
    "queue": {"driver": "redis"},
    "rateLimiter": {"driver": "redis"},
    "database": {"redis": {"host": "redis.test", "port": 6380, "db": 2, "username": "hub", "password": "p@ss:w"}},
    "ssl": {"certPath": "/etc/tls/cert.pem", "keyPath": "/etc/tls/key.pem", "passphrase": "secret"},
}
# The same, as flat dotted keys.
FLAT: dict[str, Any] = {
    "host": "127.0.0.2",
    "port": 6101,
    "debug": True,
    "mode": "full",
    "pathPrefix": "/ws",
    "shutdownGracePeriod": 4500,
    "instance.process_id": "node-7",
    "appManager.driver": "array",
    "appManager.array.apps": [SOKETI_APP, {"id": 2, "key": "k2", "secret": "s2"}],
    "channelLimits.maxNameLength": 150,
    "channelLimits.cacheTtl": 900,
    "eventLimits.maxChannelsAtOnce": 7,
    "eventLimits.maxNameLength": 70,
    "eventLimits.maxPayloadInKb": 30,
    "eventLimits.maxBatchSize": 6,
    "presence.maxMembersPerChannel": 50,
    "presence.maxMemberSizeInKb": 4,
    "userAuthenticationTimeout": 12000,
    "httpApi.requestLimitInMb": 2,
    "cors.origin": ["https://app.example", "https://admin.example"],
    "webhooks.batching.enabled": True,
    "webhooks.batching.duration": 80,
    "metrics.enabled": True,
    "metrics.port": 9701,
    "metrics.driver": "prometheus",
    "metrics.host": "127.0.0.2",
    "adapter.driver": "redis",
    "adapter.redis.prefix": "chat",
    "cache.driver": "redis",
    "queue.driver": "redis",
    "rateLimiter.driver": "redis",
    "database.redis.host": "redis.test",
    "database.redis.port": 6380,
    "database.redis.db": 2,
    "database.redis.username": "hub",
    "database.redis.password": "p@ss:w",
    "ssl.certPath": "/etc/tls/cert.pem",
    "ssl.keyPath": "/etc/tls/key.pem",
    "ssl.passphrase": "secret",
}
# What a user would write for hub by hand.
HUB_APPS = [
    {
        "id": "local-app",
        "key": "local-key",
        "secret": "local-secret",
        "max_connections": 100,
        "enable_client_messages": True,
        "enabled": True,
        "max_backend_events_per_second": 50,
        "max_client_events_per_second": 20,
        "max_read_requests_per_second": 30,
        "max_presence_members_per_channel": 10,
        "max_presence_member_size_in_kb": 3,
        "max_channel_name_length": 120,
        "max_event_channels_at_once": 5,
        "max_event_name_length": 60,
        "max_event_payload_in_kb": 20,
        "max_event_batch_size": 4,
        "enable_user_authentication": True,
        "user_authentication_timeout": 12,
        "webhooks": [WEBHOOK],
    },
    {
        "id": "2",
        "key": "k2",
        "secret": "s2",
        "max_client_events_per_second": -1,
        "max_channel_name_length": 150,
        "max_event_channels_at_once": 7,
        "max_event_name_length": 70,
        "max_event_payload_in_kb": 30,
        "max_event_batch_size": 6,
        "max_presence_members_per_channel": 50,
        "max_presence_member_size_in_kb": 4,
        "user_authentication_timeout": 12,
    },
]
HUB_FLAGS = [
    "--host", "127.0.0.2", "--port", "6101", "--log-level", "debug", "--drain-seconds", "4.5",
    "--node-id", "node-7", "--path-prefix", "/ws", "--cache-ttl", "900", "--max-http-body-kb", "2048",
    "--cors-origins", "https://app.example,https://admin.example", "--webhook-batch-ms", "80",
    "--metrics-port", "9701", "--redis-prefix", "chat", "--redis-url", "redis://hub:p%40ss%3Aw@redis.test:6380/2",
    "--tls-cert", "/etc/tls/cert.pem", "--tls-key", "/etc/tls/key.pem", "--tls-key-password", "secret",
]  # fmt: skip


def write(tmp_path: Path, name: str, doc: Any) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def comparable(settings: Settings) -> dict[str, Any]:
    """Settings without the fields that only say where they came from."""
    fields = asdict(replace(settings, soketi=None))
    for name in ("soketi", "soketi_config", "apps_file", "app_store"):
        fields.pop(name)
    return fields


def hub_reference(tmp_path: Path) -> tuple[Settings, list[Any]]:
    apps_file = write(tmp_path, "apps.json", {"apps": HUB_APPS})
    settings = parse_settings(["ws", "--apps-file", apps_file, *HUB_FLAGS], {})
    return settings, list(load_apps(settings, {}))


@pytest.mark.parametrize("doc", [NESTED, FLAT], ids=["nested", "flat"])
def test_soketi_config_gives_the_settings_and_apps_of_the_equivalent_hub_setup(
    tmp_path: Path, doc: dict[str, Any]
) -> None:
    expected_settings, expected_apps = hub_reference(tmp_path)

    settings = parse_settings(["ws", "--soketi-config", write(tmp_path, "soketi.json", doc)], {})

    assert comparable(settings) == comparable(expected_settings)
    assert list(load_apps(settings, {})) == expected_apps
    assert settings.soketi is not None and settings.soketi.not_applied == []


def test_soketi_variables_give_the_same_as_the_config_file(tmp_path: Path) -> None:
    file_only = {
        k: v for k, v in FLAT.items() if k in ("httpApi.requestLimitInMb", "cors.origin", "instance.process_id")
    }
    env = {
        "SOKETI_HOST": "127.0.0.2",
        "SOKETI_PORT": "6101",
        "SOKETI_DEBUG": "true",
        "SOKETI_MODE": "full",
        "SOKETI_PATH_PREFIX": "/ws",
        "SOKETI_SHUTDOWN_GRACE_PERIOD": "4500",
        "SOKETI_APP_MANAGER_DRIVER": "array",
        "SOKETI_CHANNEL_LIMITS_MAX_NAME_LENGTH": "150",
        "SOKETI_CHANNEL_CACHE_TTL": "900",
        "SOKETI_EVENT_MAX_CHANNELS_AT_ONCE": "7",
        "SOKETI_EVENT_MAX_NAME_LENGTH": "70",
        "SOKETI_EVENT_MAX_SIZE_IN_KB": "30",
        "SOKETI_EVENT_MAX_BATCH_SIZE": "6",
        "SOKETI_PRESENCE_MAX_MEMBERS": "50",
        "SOKETI_PRESENCE_MAX_MEMBER_SIZE": "4",
        "SOKETI_USER_AUTHENTICATION_TIMEOUT": "12000",
        "SOKETI_WEBHOOKS_BATCHING": "true",
        "SOKETI_WEBHOOKS_BATCHING_DURATION": "80",
        "SOKETI_METRICS_ENABLED": "true",
        "SOKETI_METRICS_SERVER_PORT": "9701",
        "SOKETI_METRICS_DRIVER": "prometheus",
        "SOKETI_METRICS_HOST": "127.0.0.2",
        "SOKETI_ADAPTER_DRIVER": "redis",
        "SOKETI_ADAPTER_REDIS_PREFIX": "chat",
        "SOKETI_CACHE_DRIVER": "redis",
        "SOKETI_QUEUE_DRIVER": "redis",
        "SOKETI_RATE_LIMITER_DRIVER": "redis",
        "SOKETI_DB_REDIS_HOST": "redis.test",
        "SOKETI_DB_REDIS_PORT": "6380",
        "SOKETI_DB_REDIS_DB": "2",
        "SOKETI_DB_REDIS_USERNAME": "hub",
        "SOKETI_DB_REDIS_PASSWORD": "p@ss:w",
        "SOKETI_SSL_CERT": "/etc/tls/cert.pem",
        "SOKETI_SSL_KEY": "/etc/tls/key.pem",
        "SOKETI_SSL_PASS": "secret",
        # The first app: Soketi's SOKETI_DEFAULT_APP_* (the other fields have no variable).
        "SOKETI_DEFAULT_APP_ID": "local-app",
        "SOKETI_DEFAULT_APP_KEY": "local-key",
        "SOKETI_DEFAULT_APP_SECRET": "local-secret",
        "SOKETI_DEFAULT_APP_MAX_CONNS": "100",
        "SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES": "true",
        "SOKETI_DEFAULT_APP_ENABLED": "true",
        "SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC": "50",
        "SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC": "20",
        "SOKETI_DEFAULT_APP_MAX_READ_REQ_PER_SEC": "30",
        "SOKETI_DEFAULT_APP_USER_AUTHENTICATION": "true",
        "SOKETI_DEFAULT_APP_WEBHOOKS": json.dumps([WEBHOOK]),
    }
    from_file = translate({**FLAT, "appManager.array.apps": [_env_shaped(SOKETI_APP)]}, {})

    from_env = translate(file_only, env)

    assert from_env == from_file


def _env_shaped(app: dict[str, Any]) -> dict[str, Any]:
    """The first app with only the fields SOKETI_DEFAULT_APP_* can set."""
    return {k: v for k, v in app.items() if k in DEFAULT_APP_ENV.values()}


def test_variables_win_over_the_config_file_and_flags_and_hub_variables_win_over_both(tmp_path: Path) -> None:
    path = write(tmp_path, "soketi.json", {"port": 6101, "host": "127.0.0.3"})
    assert parse_settings(["serve", "--soketi-config", path], {"SOKETI_PORT": "6102"}).port == 6102
    assert parse_settings(["serve", "--soketi-config", path], {"HUB_PORT": "6103", "SOKETI_PORT": "6102"}).port == 6103
    assert parse_settings(["serve", "--soketi-config", path, "--port", "6104"], {"HUB_PORT": "6103"}).port == 6104
    assert parse_settings(["serve", "--soketi-config", path, "--port", "6104"], {}).host == "127.0.0.3"


def test_soketi_defaults_apply_where_hub_would_differ_and_the_setup_is_silent(tmp_path: Path) -> None:
    settings = parse_settings(["serve", "--soketi-config", write(tmp_path, "s.json", {})], {})
    [app] = load_apps(settings, {"PUSHER_APP_ID": "ignored"})
    assert (app.id, app.key, app.secret) == ("app-id", "app-key", "app-secret")  # Soketi's default app
    assert app.max_client_events_per_second == -1  # Soketi: unlimited; hub alone: 10
    assert settings.cache_ttl == 3600  # Soketi's; hub alone: 1800
    assert settings.redis_url is None and settings.metrics_port == 9601


def test_soketi_variables_alone_start_from_soketi_without_a_config_file() -> None:
    env = {"SOKETI_DEFAULT_APP_ID": "7", "SOKETI_DEFAULT_APP_KEY": "k", "SOKETI_DEFAULT_APP_SECRET": "s"}
    settings = parse_settings(["serve"], env)
    assert [(a.id, a.key, a.secret) for a in load_apps(settings, env)] == [("7", "k", "s")]


def test_without_soketi_settings_nothing_changes() -> None:
    settings = parse_settings(["serve"], {"SOKETI_UNRELATED_THING": "1"})
    assert settings.soketi is None and settings.cache_ttl == 1800


def test_options_hub_does_not_apply_are_named_with_why(tmp_path: Path) -> None:
    doc = {
        "metrics": {"prometheus": {"prefix": "soketi_"}, "host": "10.0.0.1"},
        "adapter.redis.requestsTimeout": 5000,
        "cluster": {"port": 11002},
        "appManager.cache.enabled": True,
        "queue": {"driver": "sqs", "sqs": {"queueUrl": "https://sqs"}},
        "cors": {"methods": ["GET"], "credentials": False},
        "database.redis.host": "10.0.0.2",
        "ssl.caPath": "/ca.pem",
        "mode": "server",
        "nonsense": {"deep": 1},
    }
    translation = translate(doc, {"SOKETI_NOT_A_THING": "x"})
    named = {item.split(" (")[0] for item in translation.not_applied}
    assert named == {
        "metrics.prometheus.prefix",
        "metrics.host",
        "adapter.redis.requestsTimeout",
        "cluster.port",
        "appManager.cache.enabled",
        "queue.driver=sqs",
        "queue.sqs.queueUrl",
        "cors.methods",
        "cors.credentials",
        "database.redis.host",
        "ssl.caPath",
        "mode",
        "nonsense",
        "SOKETI_NOT_A_THING",
    }
    assert all("(" in item and item.endswith(")") for item in translation.not_applied)


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ({"appManager.driver": "mysql"}, ["appManager.driver", "mysql", "MySQL"]),
        ({"appManager.driver": "redis"}, ["appManager.driver", "redis", "app manager"]),
        ({"appManager": {"driver": "dynamodb"}}, ["appManager.driver", "dynamodb"]),
        ({"adapter.driver": "nats"}, ["adapter.driver", "nats"]),
        ({"adapter.driver": "cluster"}, ["adapter.driver", "cluster"]),
        ({"adapter.driver": "kafka"}, ["adapter.driver", "kafka", "known"]),
        ({"mode": "worker"}, ["mode", "worker"]),
        ({"adapter.redis.clusterMode": True, "adapter.driver": "redis"}, ["clusterNodes"]),
        ({"appManager.array.apps": {"id": 1}}, ["appManager.array.apps", "list"]),
    ],
)
def test_settings_hub_cannot_serve_refuse_start_naming_the_option(doc: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ConfigError) as refused:
        translate(doc, {})
    for word in words:
        assert word in str(refused.value)


def test_unknown_app_fields_are_refused_by_name(tmp_path: Path) -> None:
    path = write(tmp_path, "s.json", {"appManager.array.apps": [{"id": "1", "key": "k", "secret": "s", "color": 1}]})
    settings = parse_settings(["serve", "--soketi-config", path], {})
    with pytest.raises(ConfigError, match="unknown key 'color'"):
        load_apps(settings, {})


def test_soketi_sql_column_names_of_apps_are_accepted() -> None:
    raw = {"AppId": "1", "AppKey": "k", "AppSecret": "s", "max_backend_events_per_sec": 5, "max_read_req_per_sec": 6}
    [app] = translate({"appManager.array.apps": [raw]}, {}).apps
    assert app["id"] == "1" and app["max_backend_events_per_second"] == 5 and app["max_read_requests_per_second"] == 6


def test_apps_in_both_the_soketi_setup_and_an_apps_file_are_refused(tmp_path: Path) -> None:
    soketi = write(tmp_path, "s.json", {"appManager.array.apps": [{"id": "1", "key": "k", "secret": "s"}]})
    apps = write(tmp_path, "apps.json", {"apps": [{"id": "1", "key": "k", "secret": "s"}]})
    with pytest.raises(ConfigError, match="give the apps once"):
        parse_settings(["serve", "--soketi-config", soketi, "--apps-file", apps], {})
    # A Soketi file without apps leaves them to the apps file.
    settings = parse_settings(
        ["serve", "--soketi-config", write(tmp_path, "t.json", {"port": 1}), "--apps-file", apps], {}
    )
    assert [a.key for a in load_apps(settings, {})] == ["k"]


@pytest.mark.parametrize(
    ("redis", "url"),
    [
        ({}, "redis://127.0.0.1:6379/0"),
        ({"password": "pw"}, "redis://:pw@127.0.0.1:6379/0"),
        ({"username": "u"}, "redis://u@127.0.0.1:6379/0"),
        (
            {"sentinels": [{"host": "s1", "port": 26379}, {"host": "s2", "port": 26380}], "name": "main", "db": 1,
             "password": "pw", "sentinelPassword": "spw"},
            "redis+sentinel://:pw@s1:26379,s2:26380/main/1?sentinel_password=spw",
        ),
        ({"sentinels": [{"host": "s1", "port": 26379}]}, "redis+sentinel://s1:26379/mymaster/0"),
    ],
)  # fmt: skip
def test_the_redis_url_follows_database_redis(redis: dict[str, Any], url: str) -> None:
    translation = translate({"adapter.driver": "redis", "database": {"redis": redis}}, {})
    assert translation.options["redis_url"] == url
    parse_topology(url)


def test_redis_cluster_mode_gives_a_redis_cluster_url() -> None:
    nodes = [{"host": "10.0.0.1", "port": 7000}, {"host": "10.0.0.2", "port": 7001}]
    doc = {"adapter": {"driver": "redis", "redis": {"clusterMode": True}}, "database.redis.clusterNodes": nodes}
    url = translate(doc, {}).options["redis_url"]
    assert url == "redis+cluster://10.0.0.1:7000,10.0.0.2:7001"
    assert parse_topology(url).kind == "cluster"


def test_redis_host_and_port_unused_by_sentinels_or_cluster_mode_are_named() -> None:
    sentinel = {"adapter.driver": "redis", "database.redis": {"host": "h", "sentinels": [{"host": "s", "port": 1}]}}
    assert [i.split(" (")[0] for i in translate(sentinel, {}).not_applied] == ["database.redis.host"]
    nodes = [{"host": "c", "port": 7000}]
    cluster = {
        "adapter.redis.clusterMode": True,
        "adapter.driver": "redis",
        "database.redis": {"port": 1, "clusterNodes": nodes},
    }
    assert [i.split(" (")[0] for i in translate(cluster, {}).not_applied] == ["database.redis.port"]


def test_redis_settings_without_a_redis_driver_are_named_not_applied() -> None:
    translation = translate({"database": {"redis": {"host": "r", "port": 1}}}, {})
    assert "redis_url" not in translation.options
    assert {item.split(" (")[0] for item in translation.not_applied} == {"database.redis.host", "database.redis.port"}


def test_metrics_disabled_turns_the_metrics_port_off_and_names_the_unused_port() -> None:
    translation = translate({"metrics": {"enabled": False, "port": 9999}}, {})
    assert translation.options["metrics_port"] == 0
    assert [item.split(" (")[0] for item in translation.not_applied] == ["metrics.port"]


def test_a_soketi_value_of_the_wrong_type_is_a_config_error_naming_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--metrics-port"):
        parse_settings(["serve", "--soketi-config", write(tmp_path, "s.json", {"metrics.port": "many"})], {})


def test_printed_hub_setup_means_the_same_as_the_soketi_config(tmp_path: Path) -> None:
    soketi = parse_settings(["ws", "--soketi-config", write(tmp_path, "soketi.json", NESTED)], {})
    assert soketi.soketi is not None
    apps_json, command, not_applied = hub_setup(soketi.soketi, str(tmp_path / "apps.json"))
    assert apps_json is not None
    (tmp_path / "apps.json").write_text(apps_json)

    argv = command.split()
    assert argv[:2] == ["hub", "serve"]
    hub = parse_settings(["ws", *argv[2:]], {})

    assert comparable(hub) == comparable(soketi)
    assert list(load_apps_file(tmp_path / "apps.json")) == list(load_apps(soketi, {}))
    assert not_applied == []


def test_every_soketi_variable_has_a_row() -> None:
    rows = {row.env for row in SOKETI_OPTIONS if row.env} | set(DEFAULT_APP_ENV)
    assert rows == set(SOKETI_VARIABLES)


def test_rows_are_unique_and_map_only_onto_hub_options() -> None:
    paths = [row.path for row in SOKETI_OPTIONS]
    assert len(paths) == len(set(paths))
    names = {option.name for option in OPTIONS}
    assert set(translate(NESTED, {}).options) <= names


def test_the_readme_lists_every_soketi_option_as_the_table_says() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    generated = reference_table()
    assert generated in readme, (
        "README's 'Every Soketi option' table is out of date; paste the output of "
        "python -c 'from hub.soketi_config import reference_table; print(reference_table())'"
    )


def test_mixed_dotted_and_nested_keys_and_indexed_app_fields_mean_the_same() -> None:
    mixed = {
        "appManager.array": {"apps": [{"id": "1", "key": "k", "secret": "s"}]},
        "appManager.array.apps.0.enableClientMessages": True,
        "appManager.array.apps.1": {"id": "2", "key": "k2", "secret": "s2"},
        "database": {"redis.host": "r"},
        "adapter.driver": "redis",
    }
    nested = {
        "appManager": {
            "array": {
                "apps": [
                    {"id": "1", "key": "k", "secret": "s", "enableClientMessages": True},
                    {"id": "2", "key": "k2", "secret": "s2"},
                ]
            }
        },
        "database": {"redis": {"host": "r"}},
        "adapter": {"driver": "redis"},
    }
    assert translate(mixed, {}) == translate(nested, {})
    assert translate(mixed, {}).options["redis_url"] == "redis://r:6379/0"


@pytest.mark.parametrize(
    ("doc", "named"),
    [
        ({"shutdownGracePeriod": "soon"}, "shutdownGracePeriod"),
        ({"httpApi": {"requestLimitInMb": [1]}}, "httpApi.requestLimitInMb"),
        ({"eventLimits.maxBatchSize": "ten"}, "eventLimits.maxBatchSize"),
        ({"adapter.driver": "redis", "database.redis.port": "six"}, "database.redis"),
    ],
)
def test_a_soketi_value_of_the_wrong_type_is_refused_naming_the_option(doc: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        translate(doc, {})


def test_with_a_config_file_soketi_lines_of_the_working_directorys_dotenv_count_below_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "APP_NAME=Laravel\nPUSHER_APP_ID=local-app\n# SOKETI_HOST=10.0.0.1\nexport SOKETI_PORT=7001\n"
        'SOKETI_DEFAULT_APP_KEY="local-key" \nSOKETI_DEBUG=true # verbose\n'
    )
    monkeypatch.chdir(tmp_path)
    config = write(tmp_path, "soketi.json", {})

    settings = parse_settings(["serve", "--soketi-config", config], {"SOKETI_DEBUG": "false"})

    assert (settings.port, settings.host, settings.log_level) == (7001, "0.0.0.0", "info")
    assert [app.key for app in load_apps(settings, {})] == ["local-key"]
    # Without a config file hub reads no .env: a Laravel project's file must not change a plain `hub serve`.
    assert parse_settings(["serve"], {}).soketi is None


def test_the_postgres_app_manager_is_hubs_postgres_app_store_on_database_postgres(tmp_path: Path) -> None:
    doc = {
        "appManager": {"driver": "postgres", "postgres": {"table": "soketi_apps", "version": "13.3"}},
        "database": {
            "postgres": {"host": "db.test", "port": 5433, "user": "soketi", "password": "p@ss", "database": "rt"}
        },
    }
    settings = parse_settings(["serve", "--soketi-config", write(tmp_path, "s.json", doc)], {})
    assert settings.app_store == "postgres"
    assert settings.postgres_url == "postgresql://soketi:p%40ss@db.test:5433/rt"
    assert settings.postgres_table == "soketi_apps"
    assert settings.soketi is not None
    assert [i.split(" (")[0] for i in settings.soketi.not_applied] == ["appManager.postgres.version"]


def test_the_postgres_app_manager_takes_soketis_connection_defaults() -> None:
    translation = translate({"appManager.driver": "postgres"}, {})
    assert translation.options["postgres_url"] == "postgresql://postgres:password@127.0.0.1:5432/main"
    assert "postgres_table" not in translation.options  # hub's default is Soketi's: apps


def test_postgres_settings_without_the_postgres_app_manager_are_named_not_applied() -> None:
    translation = translate({"database.postgres.host": "db", "appManager.postgres.table": "t"}, {})
    assert "postgres_url" not in translation.options
    named = {i.split(" (")[0] for i in translation.not_applied}
    assert named == {"database.postgres.host", "appManager.postgres.table"}


def test_soketi_config_prints_no_apps_file_for_apps_kept_in_postgres() -> None:
    translation = translate({"appManager.driver": "postgres"}, {})
    apps, command, _ = hub_setup(translation)
    assert apps is None and "--apps-file" not in command and "--app-store postgres" in command
