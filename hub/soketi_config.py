"""Starting hub from a Soketi setup: its ``config.json`` and ``SOKETI_*`` variables, mapped onto hub.

Every Soketi option is one row of SOKETI_OPTIONS: its dotted path, its environment variable and what hub
does with it. A row *maps* the value onto a hub option or app default, *warns* that hub does not apply it
(named in one start-up line, with why), or *refuses* start where running without it would be wrong (an
app manager or transport hub lacks). Soketi reads the file first and the variables over it, accepts
flat dotted keys (``"appManager.array.apps": [...]``) and nested objects alike, and parses a variable as
JSON when it can; so does this module. Keys Soketi does not know are warned about too.

The result is a Translation: hub option values (below explicit flags and ``HUB_*`` variables) and the
apps, in hub's apps-file form, so ``hub soketi-config`` can print the equivalent hub setup.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hub.apps import ConfigError, snake_case

ENV_PREFIX = "SOKETI_"


@dataclass
class Translation:
    """What a Soketi setup means for hub: option values, apps and what hub leaves out."""

    options: dict[str, Any] = field(default_factory=dict)
    apps: list[dict[str, Any]] = field(default_factory=list)
    not_applied: list[str] = field(default_factory=list)
    apps_given: bool = False  # the setup names apps (else the apps are Soketi's one default app)


@dataclass
class _Builder:
    """Collects what the rows decide, then resolves what depends on several rows (Redis, apps)."""

    values: Mapping[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    app_defaults: dict[str, Any] = field(default_factory=dict)
    redis: dict[str, Any] = field(default_factory=dict)
    postgres: dict[str, Any] = field(default_factory=dict)
    redis_drivers: list[str] = field(default_factory=list)
    not_applied: list[str] = field(default_factory=list)

    def skip(self, path: str, why: str) -> None:
        self.not_applied.append(f"{path} ({why})")


Apply = Callable[[_Builder, str, Any], None]


@dataclass(frozen=True)
class SoketiOption:
    """One Soketi option: its dotted path, its ``SOKETI_`` variable (if any) and what hub does with it."""

    path: str
    env: str | None
    apply: Apply
    hub: str  # what hub does, in words: the README's "Coming from Soketi" table shows it


def _option(name: str, convert: Callable[[Any], Any] = lambda v: v) -> Apply:
    def apply(b: _Builder, path: str, value: Any) -> None:
        b.options[name] = convert(value)

    return apply


def _app_default(name: str, convert: Callable[[Any], Any] = lambda v: v) -> Apply:
    def apply(b: _Builder, path: str, value: Any) -> None:
        b.app_defaults[name] = convert(value)

    return apply


def _warned(path: str, env: str | None, why: str) -> SoketiOption:
    """A row for an option hub does not apply: named at start-up with ``why``."""
    return SoketiOption(path, env, _warn(why), f"warned: {why}")


def _warn(why: str) -> Apply:
    def apply(b: _Builder, path: str, value: Any) -> None:
        b.skip(path, why)

    return apply


def _redis_part(name: str) -> Apply:
    def apply(b: _Builder, path: str, value: Any) -> None:
        b.redis[name] = value

    return apply


def _driver(
    *fine: str, redis: bool = False, warned: Mapping[str, str] | None = None, refused: Mapping[str, str] | None = None
) -> Apply:
    """A ``driver`` option: a value hub matches, one that needs Redis, one it warns about or refuses."""
    warned, refused = warned or {}, refused or {}

    def apply(b: _Builder, path: str, value: Any) -> None:
        if redis and value == "redis":
            b.redis_drivers.append(path)
        elif value in warned:
            b.skip(f"{path}={value}", warned[value])
        elif value in refused:
            raise ConfigError(f"Soketi option {path}={json.dumps(value)} is not supported: {refused[value]}")
        elif value not in fine:
            known = ", ".join(sorted([*fine, *(["redis"] if redis else []), *warned, *refused]))
            raise ConfigError(f"Soketi option {path}={json.dumps(value)} is not a Soketi driver (known: {known})")

    return apply


def _app_manager(b: _Builder, path: str, value: Any) -> None:
    refused = {"dynamodb": "hub has no DynamoDB app store", "mysql": "hub has no MySQL app store"}
    if value == "postgres":
        b.options["app_store"] = "postgres"
    elif value in refused:
        raise ConfigError(f"Soketi option {path}={json.dumps(value)} is not supported: {refused[value]}")
    elif value != "array":
        raise ConfigError(
            f"Soketi option {path}={json.dumps(value)} is not a Soketi app manager (array, postgres, mysql, dynamodb)"
        )


def _postgres_part(name: str) -> Apply:
    def apply(b: _Builder, path: str, value: Any) -> None:
        b.postgres[name] = value

    return apply


def _mode(b: _Builder, path: str, value: Any) -> None:
    if value == "worker":
        raise ConfigError(
            'Soketi option mode="worker" is not supported: hub has no queue-only process; '
            "every hub node delivers the webhooks it queues"
        )
    if value == "server":
        b.skip(path, "every hub node also delivers webhooks; there is no separate worker")
    elif value != "full":
        raise ConfigError(f"Soketi option mode={json.dumps(value)} is not a Soketi mode (full, server, worker)")


def _debug(b: _Builder, path: str, value: Any) -> None:
    if value:
        b.options["log_level"] = "debug"


def _metrics_enabled(b: _Builder, path: str, value: Any) -> None:
    # hub serves /metrics by default; only an explicit false turns the metrics port off.
    if value is False:
        b.options["metrics_port"] = 0


def _metrics_port(b: _Builder, path: str, value: Any) -> None:
    if b.values.get("metrics.enabled") is False:
        b.skip(path, "metrics.enabled is false, so hub opens no metrics port")
    else:
        b.options["metrics_port"] = value


def _metrics_host(b: _Builder, path: str, value: Any) -> None:
    if value != b.values.get("host", "0.0.0.0"):
        b.skip(path, "hub serves metrics on --host")


def _metrics_driver(b: _Builder, path: str, value: Any) -> None:
    if value != "prometheus":
        b.skip(path, "hub exports Prometheus metrics only")


def _redis_prefix(b: _Builder, path: str, value: Any) -> None:
    if not value:
        return
    current = b.options.get("redis_prefix")
    if current is not None and current != value:
        b.skip(path, f"hub uses one prefix for keys and channels: {current!r} from adapter.redis.prefix")
        return
    b.options["redis_prefix"] = value


def _cluster_mode(b: _Builder, path: str, value: Any) -> None:
    if value:
        b.redis["cluster_mode"] = True


def _batching_enabled(b: _Builder, path: str, value: Any) -> None:
    duration = b.values.get("webhooks.batching.duration", 50)
    b.options["webhook_batch_ms"] = int(duration) if value else 0


def _batching_duration(b: _Builder, path: str, value: Any) -> None:
    if not b.values.get("webhooks.batching.enabled"):
        b.skip(path, "webhooks.batching.enabled is not true")


def _cors_origins(b: _Builder, path: str, value: Any) -> None:
    origins = value if isinstance(value, list) else [value]
    b.options["cors_origins"] = ",".join(str(o) for o in origins)


def _tls(name: str) -> Apply:
    # Soketi leaves the TLS paths empty when it serves plain HTTP.
    def apply(b: _Builder, path: str, value: Any) -> None:
        if value:
            b.options[name] = str(value)

    return apply


def _ssl_ca(b: _Builder, path: str, value: Any) -> None:
    if value:
        b.skip(path, "hub does not verify client certificates; a chain file for your certificate goes in --tls-ca")


def _apps(b: _Builder, path: str, value: Any) -> None:
    if not isinstance(value, list):
        raise ConfigError(f"Soketi option {path} must be a list of apps")


def _seconds(ms: Any) -> float:
    return float(ms) / 1000


def _kb_from_mb(mb: Any) -> int:
    return max(1, int(float(mb) * 1024))


NO_NODE_REQUESTS = "hub nodes read shared state from Redis and send each other no requests"
REDIS_FROM_URL = "hub connects with its own client, configured from the Redis URL"
APPS_IN_MEMORY = "hub holds its apps in memory"
NO_DISCOVERY = "hub nodes find each other through Redis, not by UDP discovery"
NOT_SELECTED = "its driver is not selected"
POOL = "the postgres app store keeps one connection for queries and one for change notices"
_SQL_CONNECTION = (
    ("host", "HOST"),
    ("port", "PORT"),
    ("user", "USERNAME"),
    ("password", "PASSWORD"),
    ("database", "DATABASE"),
)
HUB_CORS = "hub allows GET, POST, OPTIONS and a fixed list of headers"
QUEUE_IN_REDIS = "hub queues webhooks in Redis (in memory without Redis) and delivers them itself"

SOKETI_OPTIONS: tuple[SoketiOption, ...] = (
    SoketiOption("host", "HOST", _option("host"), "`--host`"),
    SoketiOption("port", "PORT", _option("port", int), "`--port`"),
    SoketiOption("debug", "DEBUG", _debug, "`true`: `--log-level debug`"),
    SoketiOption(
        "mode", "MODE", _mode, "`full`: as given; `server`: warned (hub nodes also deliver webhooks); `worker`: refused"
    ),
    SoketiOption("pathPrefix", "PATH_PREFIX", _option("path_prefix", str), "`--path-prefix`"),
    SoketiOption(
        "shutdownGracePeriod",
        "SHUTDOWN_GRACE_PERIOD",
        _option("drain_seconds", _seconds),
        "`--drain-seconds` (ms to s)",
    ),
    SoketiOption("instance.process_id", None, _option("node_id", str), "`--node-id`"),
    # Apps
    SoketiOption(
        "appManager.driver",
        "APP_MANAGER_DRIVER",
        _app_manager,
        "`array`: the apps below; `postgres`: `--app-store postgres` on `database.postgres`; `dynamodb`, `mysql`: refused",
    ),
    SoketiOption(
        "appManager.array.apps", None, _apps, "the apps (see the app keys below); `SOKETI_DEFAULT_APP_*` set the first"
    ),
    _warned("appManager.cache.enabled", "APP_MANAGER_CACHE_ENABLED", APPS_IN_MEMORY),
    _warned("appManager.cache.ttl", "APP_MANAGER_CACHE_TTL", APPS_IN_MEMORY),
    _warned("appManager.dynamodb.table", "APP_MANAGER_DYNAMODB_TABLE", NOT_SELECTED),
    _warned("appManager.dynamodb.region", "APP_MANAGER_DYNAMODB_REGION", NOT_SELECTED),
    _warned("appManager.dynamodb.endpoint", "APP_MANAGER_DYNAMODB_ENDPOINT", NOT_SELECTED),
    _warned("appManager.mysql.table", "APP_MANAGER_MYSQL_TABLE", NOT_SELECTED),
    _warned("appManager.mysql.version", "APP_MANAGER_MYSQL_VERSION", NOT_SELECTED),
    _warned("appManager.mysql.useMysql2", "APP_MANAGER_MYSQL_USE_V2", NOT_SELECTED),
    SoketiOption(
        "appManager.postgres.table", "APP_MANAGER_POSTGRES_TABLE", _postgres_part("table"), "`--postgres-table`"
    ),
    _warned(
        "appManager.postgres.version", "APP_MANAGER_POSTGRES_VERSION", "hub's PostgreSQL client needs no server version"
    ),
    # Server-wide defaults of the apps' limits
    SoketiOption(
        "channelLimits.maxNameLength",
        "CHANNEL_LIMITS_MAX_NAME_LENGTH",
        _app_default("max_channel_name_length"),
        "apps' `max_channel_name_length`",
    ),
    SoketiOption(
        "channelLimits.cacheTtl",
        "CHANNEL_CACHE_TTL",
        _option("cache_ttl", int),
        "`--cache-ttl` (Soketi's 3600 when absent)",
    ),
    SoketiOption(
        "eventLimits.maxChannelsAtOnce",
        "EVENT_MAX_CHANNELS_AT_ONCE",
        _app_default("max_event_channels_at_once", int),
        "apps' `max_event_channels_at_once`",
    ),
    SoketiOption(
        "eventLimits.maxNameLength",
        "EVENT_MAX_NAME_LENGTH",
        _app_default("max_event_name_length", int),
        "apps' `max_event_name_length`",
    ),
    SoketiOption(
        "eventLimits.maxPayloadInKb",
        "EVENT_MAX_SIZE_IN_KB",
        _app_default("max_event_payload_in_kb", int),
        "apps' `max_event_payload_in_kb`",
    ),
    SoketiOption(
        "eventLimits.maxBatchSize",
        "EVENT_MAX_BATCH_SIZE",
        _app_default("max_event_batch_size", int),
        "apps' `max_event_batch_size`",
    ),
    SoketiOption(
        "presence.maxMembersPerChannel",
        "PRESENCE_MAX_MEMBERS",
        _app_default("max_presence_members_per_channel", int),
        "apps' `max_presence_members_per_channel`",
    ),
    SoketiOption(
        "presence.maxMemberSizeInKb",
        "PRESENCE_MAX_MEMBER_SIZE",
        _app_default("max_presence_member_size_in_kb", int),
        "apps' `max_presence_member_size_in_kb`",
    ),
    SoketiOption(
        "userAuthenticationTimeout",
        "USER_AUTHENTICATION_TIMEOUT",
        _app_default("user_authentication_timeout", _seconds),
        "apps' `user_authentication_timeout` (ms to s)",
    ),
    # HTTP API
    SoketiOption(
        "httpApi.requestLimitInMb", None, _option("max_http_body_kb", _kb_from_mb), "`--max-http-body-kb` (MB to KB)"
    ),
    _warned(
        "httpApi.acceptTraffic.memoryThreshold",
        "HTTP_ACCEPT_TRAFFIC_MEMORY_THRESHOLD",
        "hub has no /accept-traffic; probe /ready",
    ),
    SoketiOption("cors.origin", None, _cors_origins, "`--cors-origins`"),
    _warned("cors.credentials", None, "hub sends no Access-Control-Allow-Credentials (nor does Soketi)"),
    _warned("cors.methods", None, HUB_CORS),
    _warned("cors.allowedHeaders", None, HUB_CORS),
    # Webhooks
    SoketiOption(
        "webhooks.batching.enabled",
        "WEBHOOKS_BATCHING",
        _batching_enabled,
        "`--webhook-batch-ms` (the duration, 50 when absent)",
    ),
    SoketiOption(
        "webhooks.batching.duration",
        "WEBHOOKS_BATCHING_DURATION",
        _batching_duration,
        "`--webhook-batch-ms` when batching is enabled",
    ),
    # Metrics
    SoketiOption(
        "metrics.enabled",
        "METRICS_ENABLED",
        _metrics_enabled,
        "`false`: `--metrics-port 0` (hub serves metrics by default)",
    ),
    SoketiOption("metrics.port", "METRICS_SERVER_PORT", _metrics_port, "`--metrics-port`"),
    SoketiOption("metrics.host", "METRICS_HOST", _metrics_host, "warned unless it equals `host`"),
    SoketiOption("metrics.driver", "METRICS_DRIVER", _metrics_driver, "`prometheus`: as given; others warned"),
    _warned("metrics.prometheus.prefix", "METRICS_PROMETHEUS_PREFIX", "hub's metric names start with hub_"),
    # Scaling: the adapter and the Redis behind it
    SoketiOption(
        "adapter.driver",
        "ADAPTER_DRIVER",
        _driver(
            "local",
            redis=True,
            refused={"cluster": "hub scales over Redis; use the redis adapter", "nats": "hub has no NATS transport"},
        ),
        "`local`: in-memory; `redis`: Redis from `database.redis`; `cluster`, `nats`: refused",
    ),
    SoketiOption("adapter.redis.prefix", "ADAPTER_REDIS_PREFIX", _redis_prefix, "`--redis-prefix`"),
    SoketiOption(
        "adapter.redis.clusterMode",
        "ADAPTER_REDIS_CLUSTER_MODE",
        _cluster_mode,
        "`true`: `--redis-url redis+cluster://...` from `database.redis.clusterNodes`",
    ),
    _warned("adapter.redis.requestsTimeout", "ADAPTER_REDIS_REQUESTS_TIMEOUT", NO_NODE_REQUESTS),
    _warned("adapter.redis.redisPubOptions", "ADAPTER_REDIS_PUB_OPTIONS", REDIS_FROM_URL),
    _warned("adapter.redis.redisSubOptions", "ADAPTER_REDIS_SUB_OPTIONS", REDIS_FROM_URL),
    _warned("adapter.cluster.requestsTimeout", "ADAPTER_CLUSTER_REQUESTS_TIMEOUT", NO_NODE_REQUESTS),
    *(
        _warned(f"adapter.nats.{key}", f"ADAPTER_NATS_{env}", NOT_SELECTED)
        for key, env in (
            ("requestsTimeout", "REQUESTS_TIMEOUT"),
            ("prefix", "PREFIX"),
            ("servers", "SERVERS"),
            ("user", "USER"),
            ("pass", "PASSWORD"),
            ("token", "TOKEN"),
            ("timeout", "TIMEOUT"),
            ("nodesNumber", "NODES_NUMBER"),
        )
    ),
    SoketiOption("database.redis.host", "DB_REDIS_HOST", _redis_part("host"), "host of `--redis-url`"),
    SoketiOption("database.redis.port", "DB_REDIS_PORT", _redis_part("port"), "port of `--redis-url`"),
    SoketiOption("database.redis.db", "DB_REDIS_DB", _redis_part("db"), "database of `--redis-url`"),
    SoketiOption("database.redis.username", "DB_REDIS_USERNAME", _redis_part("username"), "user of `--redis-url`"),
    SoketiOption("database.redis.password", "DB_REDIS_PASSWORD", _redis_part("password"), "password of `--redis-url`"),
    SoketiOption(
        "database.redis.keyPrefix",
        "DB_REDIS_KEY_PREFIX",
        _redis_prefix,
        "`--redis-prefix` (unless `adapter.redis.prefix` gives another)",
    ),
    SoketiOption(
        "database.redis.sentinels",
        "DB_REDIS_SENTINELS",
        _redis_part("sentinels"),
        "hosts of `--redis-url redis+sentinel://...`",
    ),
    SoketiOption(
        "database.redis.sentinelPassword",
        "DB_REDIS_SENTINEL_PASSWORD",
        _redis_part("sentinel_password"),
        "`sentinel_password` of the `redis+sentinel://` URL",
    ),
    SoketiOption(
        "database.redis.name", "DB_REDIS_INSTANCE_NAME", _redis_part("name"), "service of the `redis+sentinel://` URL"
    ),
    SoketiOption(
        "database.redis.clusterNodes",
        "DB_REDIS_CLUSTER_NODES",
        _redis_part("cluster_nodes"),
        "seed nodes of `--redis-url redis+cluster://...`",
    ),
    *(
        _warned(f"database.mysql.{key}", f"DB_MYSQL_{env}", "hub has no MySQL app store")
        for key, env in _SQL_CONNECTION
    ),
    *(
        SoketiOption(
            f"database.postgres.{key}", f"DB_POSTGRES_{env}", _postgres_part(key), f"{key} of `--postgres-url`"
        )
        for key, env in _SQL_CONNECTION
    ),
    _warned("databasePooling.enabled", "DB_POOLING_ENABLED", POOL),
    _warned("databasePooling.min", "DB_POOLING_MIN", POOL),
    _warned("databasePooling.max", "DB_POOLING_MAX", POOL),
    # Drivers of the parts hub builds in
    SoketiOption(
        "cache.driver",
        "CACHE_DRIVER",
        _driver("memory", redis=True),
        "`memory`: as given; `redis`: Redis from `database.redis`",
    ),
    _warned("cache.redis.redisOptions", "CACHE_REDIS_OPTIONS", REDIS_FROM_URL),
    SoketiOption(
        "cache.redis.clusterMode",
        "CACHE_REDIS_CLUSTER_MODE",
        _cluster_mode,
        "as `adapter.redis.clusterMode` (hub uses one Redis for everything)",
    ),
    SoketiOption(
        "queue.driver",
        "QUEUE_DRIVER",
        _driver("sync", redis=True, warned={"sqs": QUEUE_IN_REDIS}),
        "`sync`: as given; `redis`: Redis from `database.redis`; `sqs`: warned",
    ),
    _warned("queue.redis.concurrency", "QUEUE_REDIS_CONCURRENCY", "each hub node sends up to 16 webhooks at once"),
    _warned("queue.redis.redisOptions", "QUEUE_REDIS_OPTIONS", REDIS_FROM_URL),
    SoketiOption(
        "queue.redis.clusterMode",
        "QUEUE_REDIS_CLUSTER_MODE",
        _cluster_mode,
        "as `adapter.redis.clusterMode` (hub uses one Redis for everything)",
    ),
    *(
        _warned(f"queue.sqs.{key}", f"QUEUE_SQS_{env}" if env else None, QUEUE_IN_REDIS)
        for key, env in (
            ("region", "REGION"),
            ("endpoint", "ENDPOINT"),
            ("clientOptions", "CLIENT_OPTIONS"),
            ("consumerOptions", None),
            ("queueUrl", "URL"),
            ("processBatch", "PROCESS_BATCH"),
            ("batchSize", "BATCH_SIZE"),
            ("pollingWaitTimeMs", "POLLING_WAIT_TIME_MS"),
        )
    ),
    SoketiOption(
        "rateLimiter.driver",
        "RATE_LIMITER_DRIVER",
        _driver("local", redis=True),
        "`local`: as given; `redis`: Redis from `database.redis`",
    ),
    _warned("rateLimiter.redis.redisOptions", "RATE_LIMITER_REDIS_OPTIONS", REDIS_FROM_URL),
    SoketiOption(
        "rateLimiter.redis.clusterMode",
        "RATE_LIMITER_REDIS_CLUSTER_MODE",
        _cluster_mode,
        "as `adapter.redis.clusterMode` (hub uses one Redis for everything)",
    ),
    # Node discovery of Soketi's cluster adapter
    *(
        _warned(f"cluster.{key}", f"CLUSTER_{env}" if env else None, NO_DISCOVERY)
        for key, env in (
            ("hostname", "HOST"),
            ("helloInterval", "KEEPALIVE_INTERVAL"),
            ("checkInterval", "CHECK_INTERVAL"),
            ("nodeTimeout", "NODE_TIMEOUT"),
            ("masterTimeout", "MASTER_TIMEOUT"),
            ("port", "PORT"),
            ("prefix", "PREFIX"),
            ("ignoreProcess", "IGNORE_PROCESS"),
            ("broadcast", "BROADCAST_ADDRESS"),
            ("unicast", "UNICAST_ADDRESSES"),
            ("multicast", "MULTICAST_ADDRESS"),
        )
    ),
    # TLS
    SoketiOption("ssl.certPath", "SSL_CERT", _tls("tls_cert"), "`--tls-cert`"),
    SoketiOption("ssl.keyPath", "SSL_KEY", _tls("tls_key"), "`--tls-key`"),
    SoketiOption("ssl.passphrase", "SSL_PASS", _tls("tls_key_password"), "`--tls-key-password`"),
    SoketiOption("ssl.caPath", "SSL_CA", _ssl_ca, "warned: hub does not ask clients for certificates"),
)

_BY_PATH = {row.path: row for row in SOKETI_OPTIONS}

# SOKETI_DEFAULT_APP_*: fields of the first app (Soketi's appManager.array.apps.0.*).
DEFAULT_APP_ENV: dict[str, str] = {
    "DEFAULT_APP_ID": "id",
    "DEFAULT_APP_KEY": "key",
    "DEFAULT_APP_SECRET": "secret",
    "DEFAULT_APP_MAX_CONNS": "maxConnections",
    "DEFAULT_APP_ENABLE_CLIENT_MESSAGES": "enableClientMessages",
    "DEFAULT_APP_ENABLED": "enabled",
    "DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC": "maxBackendEventsPerSecond",
    "DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC": "maxClientEventsPerSecond",
    "DEFAULT_APP_MAX_READ_REQ_PER_SEC": "maxReadRequestsPerSecond",
    "DEFAULT_APP_USER_AUTHENTICATION": "enableUserAuthentication",
    "DEFAULT_APP_WEBHOOKS": "webhooks",
}

# Soketi's one default app, used when the setup names no apps.
SOKETI_DEFAULT_APP: dict[str, Any] = {"id": "app-id", "key": "app-key", "secret": "app-secret"}

# Soketi's names for app fields that are not the camelCase of hub's (its SQL and DynamoDB column names).
_APP_ALIASES = {
    "AppId": "id",
    "AppKey": "key",
    "AppSecret": "secret",
    "max_backend_events_per_sec": "max_backend_events_per_second",
    "max_client_events_per_sec": "max_client_events_per_second",
    "max_read_req_per_sec": "max_read_requests_per_second",
}

# Soketi's defaults where hub's differ and an app would notice: applied when the setup does not say.
SOKETI_DEFAULTS: dict[str, Any] = {"cache_ttl": 3600}
SOKETI_APP_DEFAULTS: dict[str, Any] = {"max_client_events_per_second": -1}


def _parse_env_value(raw: str) -> Any:
    """Soketi parses each variable as JSON when it can (``true``, ``100``, ``["*"]``), else keeps the string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _is_prefix(path: str) -> bool:
    return any(known.startswith(path + ".") for known in _BY_PATH)


def _flatten(doc: Mapping[str, Any], into: dict[str, Any], unknown: list[str], apps: dict[int, dict[str, Any]]) -> None:
    """Dotted keys for nested objects, stopping at known options (whose values may be objects themselves)."""

    def walk(path: str, value: Any) -> None:
        index = _app_index(path)
        if index is not None:
            number, rest = index
            if rest:
                apps.setdefault(number, {})[rest] = value
            elif isinstance(value, dict):
                apps.setdefault(number, {}).update(value)
            else:
                unknown.append(path)
            return
        if path in _BY_PATH:
            into[path] = value
        elif isinstance(value, dict) and _is_prefix(path):
            for key, inner in value.items():
                walk(f"{path}.{key}", inner)
        else:
            unknown.append(path)

    for key, value in doc.items():
        walk(str(key), value)


def _app_index(path: str) -> tuple[int, str] | None:
    """``appManager.array.apps.0.key`` -> (0, "key"): Soketi's dotted form of one app's field."""
    head = "appManager.array.apps."
    if not path.startswith(head):
        return None
    number, _, rest = path[len(head) :].partition(".")
    return (int(number), rest) if number.isdigit() else None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The JSON object of a Soketi config file; ConfigError with one line when it cannot be read."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read Soketi config {p}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Soketi config {p} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"Soketi config {p} must be a JSON object")
    return doc


def soketi_env(env: Mapping[str, str]) -> dict[str, str]:
    """The ``SOKETI_*`` variables Soketi reads, by their name without the prefix."""
    known = {row.env for row in SOKETI_OPTIONS if row.env} | set(DEFAULT_APP_ENV)
    return {
        name[len(ENV_PREFIX) :]: value
        for name, value in env.items()
        if name.startswith(ENV_PREFIX) and name[len(ENV_PREFIX) :] in known
    }


def translate(doc: Mapping[str, Any] | None, env: Mapping[str, str]) -> Translation:
    """Map a Soketi config object (or None) and the ``SOKETI_*`` variables in ``env`` onto hub."""
    values: dict[str, Any] = {}
    unknown: list[str] = []
    indexed_apps: dict[int, dict[str, Any]] = {}
    _flatten(doc or {}, values, unknown, indexed_apps)
    by_env = {row.env: row.path for row in SOKETI_OPTIONS if row.env}
    for name, raw in soketi_env(env).items():
        if name in DEFAULT_APP_ENV:
            indexed_apps.setdefault(0, {})[DEFAULT_APP_ENV[name]] = _parse_env_value(raw)
        else:
            values[by_env[name]] = _parse_env_value(raw)
    unknown.extend(
        name
        for name in env
        if name.startswith(ENV_PREFIX)
        and name[len(ENV_PREFIX) :] not in by_env
        and name[len(ENV_PREFIX) :] not in DEFAULT_APP_ENV
    )

    b = _Builder(values)
    # Rows run in table order, so one row can read another's raw value (metrics.enabled before metrics.port).
    for row in SOKETI_OPTIONS:
        if row.path in values:
            try:
                row.apply(b, row.path, values[row.path])
            except (TypeError, ValueError):
                raise ConfigError(
                    f"Soketi option {row.path}={json.dumps(values[row.path])} has the wrong type"
                ) from None
    for path in unknown:
        b.skip(path, "not a Soketi option")
    try:
        _resolve_redis(b)
        _resolve_postgres(b)
    except (TypeError, ValueError):
        raise ConfigError("Soketi option database.redis or database.postgres has a port that is not a number") from None
    options = {**{k: v for k, v in SOKETI_DEFAULTS.items() if k not in b.options}, **b.options}
    apps = _apps_of(values.get("appManager.array.apps"), indexed_apps, b.app_defaults)
    given = "appManager.array.apps" in values or bool(indexed_apps)
    return Translation(options=options, apps=apps, not_applied=b.not_applied, apps_given=given)


def dotenv_soketi_variables(path: Path) -> dict[str, str]:
    """The ``SOKETI_*`` lines of a ``.env`` file (``KEY=value``, optional quotes, ``#`` comments, ``export``).

    ``soketi start`` loads the ``.env`` of the directory it runs in (often Laravel's own), so a setup
    may keep its ``SOKETI_*`` settings there.
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return {}
    found = {}
    for line in text.splitlines():
        name, sep, value = line.strip().removeprefix("export ").partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name.startswith(ENV_PREFIX):
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        found[name] = value
    return found


def soketi_setup(config_path: str | None, env: Mapping[str, str], cwd: Path | None = None) -> Translation | None:
    """The Soketi setup to start from: the config file and/or ``SOKETI_*`` variables; None when neither.

    With a config file, ``SOKETI_*`` lines of ``.env`` in the working directory count too, below the
    real environment, as ``soketi start`` reads them.
    """
    if config_path is not None:
        env = {**dotenv_soketi_variables((cwd or Path.cwd()) / ".env"), **env}
    elif not soketi_env(env):
        return None
    return translate(read_config_file(config_path) if config_path else None, env)


# Soketi's connection defaults for its PostgreSQL app manager (knex gets database.postgres as it is).
SOKETI_POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "password": "password", "database": "main"}


def _resolve_postgres(b: _Builder) -> None:
    """``--postgres-url`` and ``--postgres-table`` when the app manager is postgres."""
    parts = b.postgres
    if b.options.get("app_store") != "postgres":
        for key in parts:
            where = "appManager.postgres" if key == "table" else "database.postgres"
            b.skip(f"{where}.{key}", "appManager.driver is not postgres")
        return
    c = {**SOKETI_POSTGRES, **{k: v for k, v in parts.items() if k != "table"}}
    user, password = quote(str(c["user"] or ""), safe=""), quote(str(c["password"] or ""), safe="")
    auth = f"{user}:{password}@" if password else f"{user}@"
    database = quote(str(c["database"]), safe="")
    b.options["postgres_url"] = f"postgresql://{auth}{_host_text(str(c['host']))}:{int(c['port'])}/{database}"
    if parts.get("table"):
        b.options["postgres_table"] = str(parts["table"])
    if "appManager.array.apps" in b.values:
        b.skip("appManager.array.apps", "appManager.driver is postgres: the apps come from its table")


def _resolve_redis(b: _Builder) -> None:
    """The Redis URL, when any Soketi driver uses Redis (adapter, queue, cache or rate limiter).

    Sentinels make a ``redis+sentinel://`` URL, cluster mode a ``redis+cluster://`` one, else ``redis://``.
    """
    parts = b.redis
    if not b.redis_drivers:
        for key in parts:
            if key != "cluster_mode":
                b.skip(f"database.redis.{_REDIS_KEYS[key]}", "no Soketi driver uses Redis")
        return
    user, password = parts.get("username"), parts.get("password")
    auth = ""
    if password:
        auth = f"{quote(str(user or ''), safe='')}:{quote(str(password), safe='')}@"
    elif user:
        auth = f"{quote(str(user), safe='')}@"
    db = int(parts.get("db") or 0)
    if parts.get("cluster_mode"):
        nodes = _hosts("database.redis.clusterNodes", parts.get("cluster_nodes"))
        if db:
            raise ConfigError(
                "Soketi option database.redis.db cannot be used in cluster mode: a Redis Cluster has only db 0"
            )
        for key in ("host", "port", "sentinels", "sentinel_password", "name"):
            if key in parts:
                b.skip(f"database.redis.{_REDIS_KEYS[key]}", "cluster mode reaches Redis through clusterNodes")
        b.options["redis_url"] = f"redis+cluster://{auth}{nodes}"
        return
    if "cluster_nodes" in parts:
        b.skip("database.redis.clusterNodes", "no Soketi driver has clusterMode on")
    if parts.get("sentinels"):
        for key in ("host", "port"):
            if key in parts:
                b.skip(f"database.redis.{key}", "the sentinels name the Redis server")
        sentinels = _hosts("database.redis.sentinels", parts["sentinels"])
        service = quote(str(parts.get("name") or "mymaster"), safe="")
        query = ""
        if parts.get("sentinel_password"):
            query = "?sentinel_password=" + quote(str(parts["sentinel_password"]), safe="")
        b.options["redis_url"] = f"redis+sentinel://{auth}{sentinels}/{service}/{db}{query}"
        return
    for key in ("sentinel_password", "name"):
        if key in parts:
            b.skip(f"database.redis.{_REDIS_KEYS[key]}", "only used with sentinels")
    host = parts.get("host") or "127.0.0.1"
    b.options["redis_url"] = f"redis://{auth}{_host_text(str(host))}:{int(parts.get('port') or 6379)}/{db}"


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _hosts(path: str, raw: Any) -> str:
    """Soketi's ``[{"host": ..., "port": ...}]`` (or ``"host:port"`` strings) as ``h1:p1,h2:p2``."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"Soketi option {path} must be a non-empty list of {{host, port}} objects")
    hosts = []
    for item in raw:
        if isinstance(item, dict) and "host" in item:
            hosts.append(f"{_host_text(str(item['host']))}:{int(item.get('port') or 6379)}")
        elif isinstance(item, str) and item:
            hosts.append(item)
        else:
            raise ConfigError(f"Soketi option {path} must be a list of {{host, port}} objects, not {item!r}")
    return ",".join(hosts)


_REDIS_KEYS = {
    "host": "host",
    "port": "port",
    "db": "db",
    "username": "username",
    "password": "password",
    "sentinels": "sentinels",
    "sentinel_password": "sentinelPassword",
    "name": "name",
    "cluster_nodes": "clusterNodes",
    "cluster_mode": "clusterMode",
}


def _hub_app(raw: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """A Soketi app as an entry of hub's apps file (hub accepts camelCase; the output is snake_case)."""
    app: dict[str, Any] = {}
    for key, value in raw.items():
        name = _APP_ALIASES.get(key) or snake_case(key)
        if value in ("", None) and name not in ("id", "key", "secret"):
            continue  # Soketi treats an empty or null field as absent
        app[name] = value
    if isinstance(app.get("id"), int) and not isinstance(app.get("id"), bool):
        app["id"] = str(app["id"])
    for name, value in {**SOKETI_APP_DEFAULTS, **defaults}.items():
        app.setdefault(name, value)
    return app


def _apps_of(
    listed: Any, indexed: Mapping[int, Mapping[str, Any]], defaults: Mapping[str, Any]
) -> list[dict[str, Any]]:
    apps = [
        dict(a) if isinstance(a, dict) else a
        for a in (listed if isinstance(listed, list) else [dict(SOKETI_DEFAULT_APP)])
    ]
    for number, fields in sorted(indexed.items()):
        while len(apps) <= number:
            apps.append({})
        apps[number] = {**apps[number], **fields}
    for position, app in enumerate(apps):
        if not isinstance(app, dict):
            raise ConfigError(f"Soketi app #{position + 1} is not an object")
    return [_hub_app(app, defaults) for app in apps]


def hub_setup(translation: Translation, apps_file: str = "apps.json") -> tuple[str | None, str, list[str]]:
    """The equivalent hub setup: the apps file's JSON (None when the apps stay in PostgreSQL), the
    ``hub serve`` command line and what is left out."""
    in_database = translation.options.get("app_store") == "postgres"
    apps = None if in_database else json.dumps({"apps": translation.apps}, indent=2)
    flags = [] if in_database else [f"--apps-file {shlex.quote(apps_file)}"]
    for name, value in sorted(translation.options.items()):
        flags.append(f"--{name.replace('_', '-')} {shlex.quote(str(value))}")
    return apps, "hub serve " + " ".join(flags), list(translation.not_applied)


def _common_words(names: Sequence[str]) -> str:
    """``["CLUSTER_PORT", "CLUSTER_HOST"]`` -> ``"CLUSTER_"``: the leading words the names share."""
    split = [name.split("_") for name in names]
    shared = []
    for words in zip(*split, strict=False):
        if len(set(words)) > 1:
            break
        shared.append(words[0])
    return "".join(f"{word}_" for word in shared)


def reference_table(rows: Sequence[SoketiOption] = SOKETI_OPTIONS) -> str:
    """The README's Soketi option table: a line per option, or per run of 3+ siblings hub treats alike."""
    lines = ["| Soketi option | Variable | hub |", "|---|---|---|"]
    i = 0
    while i < len(rows):
        parent = rows[i].path.rpartition(".")[0]
        j = i + 1
        while j < len(rows) and parent and rows[j].hub == rows[i].hub and rows[j].path.rpartition(".")[0] == parent:
            j += 1
        if j - i > 2:
            envs = [row.env for row in rows[i:j] if row.env]
            env = f"`SOKETI_{_common_words(envs)}*`" if envs else ""
            lines.append(f"| `{parent}.*` | {env} | {rows[i].hub} |")
        else:
            for row in rows[i:j]:
                env = f"`SOKETI_{row.env}`" if row.env else ""
                lines.append(f"| `{row.path}` | {env} | {row.hub} |")
        i = j
    return "\n".join(lines) + "\n"
