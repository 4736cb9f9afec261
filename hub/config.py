"""Node settings from command-line flags and ``HUB_*`` environment variables.

Every option is one row of OPTIONS: its flag, the variable ``HUB_<FLAG>``, its type and default. The
README's configuration table is this table.
"""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from hub.apps import AppRegistry, ConfigError, app_from_mapping, default_app, load_apps_file
from hub.redis_connection import RedisUrlError
from hub.redis_topology import parse_topology
from hub.soketi_config import Translation, soketi_setup
from hub.tls import TlsFiles


class Role(Enum):
    """What a process serves."""

    SERVE = "serve"
    WS = "ws"
    INGEST = "ingest"

    @property
    def websocket(self) -> bool:
        """Whether this role accepts WebSocket clients."""
        return self in (Role.SERVE, Role.WS)

    @property
    def http_api(self) -> bool:
        """Whether this role answers the Pusher HTTP API."""
        return self in (Role.SERVE, Role.INGEST)


@dataclass(frozen=True)
class Option:
    """One setting: flag name, type, default and help."""

    name: str
    type: type
    default: Any
    help: str

    @property
    def flag(self) -> str:
        """The command-line flag."""
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        """The environment variable."""
        return "HUB_" + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("host", str, "0.0.0.0", "Address to listen on."),
    Option("port", int, 6001, "Port for WebSocket clients and the HTTP API."),
    Option(
        "redis_url",
        str,
        None,
        "Redis URL: redis:// or rediss:// (one server), redis+sentinel://, redis+cluster://. Required for ws/ingest.",
    ),
    Option("redis_prefix", str, "hub", "Prefix of every Redis key and channel; separates deployments."),
    Option(
        "redis_replay_seconds",
        float,
        60.0,
        "Seconds each channel's recent events stay in Redis so a node that resubscribes catches up (0: off).",
    ),
    Option("redis_replay_events", int, 500, "Most events each channel keeps for that catch-up."),
    Option(
        "redis_publish_acks",
        int,
        -1,
        "Replicas that must confirm a publish before it is answered 200 (-1: one if the primary has any; 0: none).",
    ),
    Option("apps_file", str, None, "JSON apps file, watched: changes apply without a restart."),
    Option(
        "soketi_config",
        str,
        None,
        "Soketi config.json to start from (SOKETI_* variables are read too); flags and HUB_* win over it.",
    ),
    Option(
        "app_store",
        str,
        None,
        "Where apps live: env, file, redis or postgres (default: file with --apps-file, else env).",
    ),
    Option("postgres_url", str, None, "PostgreSQL URL of the postgres app store (postgresql://user:password@host/db)."),
    Option("postgres_table", str, "apps", "Table of the postgres app store (Soketi's name by default)."),
    Option(
        "apps_reload_seconds",
        float,
        10.0,
        "Full reload period of a Redis or PostgreSQL app store (changes arrive sooner).",
    ),
    Option("metrics_port", int, 9601, "Port for GET /metrics (Prometheus); 0 disables."),
    Option("node_id", str, None, "This node's id in the cluster (default: random)."),
    Option("drain_seconds", float, 10.0, "On SIGTERM, close clients spread over this many seconds."),
    Option("activity_timeout", int, 120, "Seconds of silence after which a client pings (sent in the handshake)."),
    Option("pong_timeout", float, 30.0, "Seconds to wait for any frame after a server ping before closing 4201."),
    Option("max_send_buffer_kb", int, 1024, "Send buffer past which a socket is a slow consumer (closed 4100)."),
    Option("max_message_kb", int, 256, "Largest WebSocket message a client may send (closed 1009 beyond)."),
    Option(
        "compression",
        str,
        "on",
        "permessage-deflate for clients that offer it, compressed once per message: on or off.",
    ),
    Option("compression_min_bytes", int, 256, "Messages shorter than this go uncompressed even when deflate is on."),
    Option(
        "max_http_body_kb",
        int,
        4096,
        "Largest HTTP API request body (larger: 413); the default fits a full batch at the largest payloads.",
    ),
    Option(
        "path_prefix",
        str,
        None,
        "Serve the WebSocket, the HTTP API and health under this path too (Soketi's pathPrefix): /prefix/app/...",
    ),
    Option(
        "cors_origins",
        str,
        "*",
        "Origins allowed to call the HTTP API from a browser (comma-separated, * for any, empty for no CORS).",
    ),
    Option("node_timeout", float, 15.0, "Seconds without a heartbeat after which a node's sockets are reaped."),
    Option("cache_ttl", int, 1800, "Seconds a cache channel keeps its last event."),
    Option(
        "webhook_batch_ms",
        int,
        0,
        "Collect each webhook's events this many ms and send them in one request; 0 sends one per request.",
    ),
    Option("log_format", str, "auto", "json, console, or auto (console on a terminal, JSON otherwise)."),
    Option("log_level", str, "info", "debug, info, warning or error."),
    Option("admin_port", int, 9602, "Port of the admin API; served only when an admin token is set; 0 disables."),
    Option("admin_token", str, None, "Bearer token of the admin API (prefer HUB_ADMIN_TOKEN or a token file)."),
    Option("admin_token_file", str, None, "File holding the admin token (e.g. a mounted Secret)."),
    Option(
        "max_pending_connections",
        int,
        2048,
        "Connections still sending their request head after 1 s, per port; more: 503.",
    ),
    Option(
        "http_request_timeout", float, 10.0, "Seconds a client may take to send a request head or an API body (408)."
    ),
    Option("max_api_connections", int, 1024, "Open HTTP API (non-WebSocket) connections per node; more: 503."),
    Option("max_connects_per_ip", int, -1, "New WebSocket connections per second from one address (429); -1: off."),
    Option("max_bad_signatures_per_second", int, 100, "401 answers per address per second before 429."),
    Option("max_channels_per_socket", int, 1000, "Channels one socket may join; more: subscription_error."),
    Option("max_client_kb_per_second", int, 256, "KB per second a socket may send before its reads are slowed."),
    Option("tls_cert", str, None, "PEM certificate: serve TLS (wss://, https://) on every port of this node."),
    Option("tls_key", str, None, "PEM private key of --tls-cert (default: read from the certificate file)."),
    Option("tls_ca", str, None, "PEM intermediate/CA chain sent after the certificate."),
    Option("tls_key_password", str, None, "Passphrase of an encrypted --tls-key."),
    Option("console_max_events", int, 200, "Events per second a console stream shows (per app); the rest are counted."),
    Option("webhook_retry_window", float, 300.0, "Seconds a webhook is retried before it is given up."),
    Option("webhook_dead_letter_ttl", float, 604800.0, "Seconds a webhook given up after retrying is kept for replay."),
)

# Shorter tokens are guessable; the admin API can rewrite every app's secret.
MIN_ADMIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class Settings:
    """Everything a node needs to start, resolved from flags and environment."""

    role: Role
    host: str
    port: int
    redis_url: str | None
    redis_prefix: str
    apps_file: str | None
    soketi_config: str | None
    app_store: str
    postgres_url: str | None
    postgres_table: str
    apps_reload_seconds: float
    metrics_port: int
    node_id: str
    drain_seconds: float
    activity_timeout: int
    pong_timeout: float
    max_send_buffer_kb: int
    max_message_kb: int
    compression: str
    compression_min_bytes: int
    max_http_body_kb: int
    path_prefix: str
    cors_origins: str
    node_timeout: float
    cache_ttl: int
    webhook_batch_ms: int
    log_format: str
    log_level: str
    admin_port: int
    admin_token: str | None
    admin_token_file: str | None
    console_max_events: int
    webhook_dead_letter_ttl: float
    webhook_retry_window: float
    redis_replay_seconds: float = 60.0
    redis_replay_events: int = 500
    redis_publish_acks: int = -1
    max_pending_connections: int = 2048
    http_request_timeout: float = 10.0
    max_api_connections: int = 1024
    max_connects_per_ip: int = -1
    max_bad_signatures_per_second: int = 100
    max_channels_per_socket: int = 1000
    max_client_kb_per_second: int = 256
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_key_password: str | None = None
    soketi: Translation | None = None  # the Soketi setup these settings came from, if any

    @property
    def tls(self) -> TlsFiles | None:
        """The TLS files when the node serves TLS, else None."""
        if self.tls_cert is None:
            return None
        return TlsFiles(self.tls_cert, self.tls_key, self.tls_ca, self.tls_key_password)

    @property
    def admin_enabled(self) -> bool:
        """Whether this node serves the admin API: a token is configured and the port is not 0."""
        return bool(self.admin_token) and self.admin_port != 0


def _parse_bound(option: Option, raw: str) -> Any:
    try:
        return option.type(raw)
    except ValueError:
        raise ConfigError(f"{option.env}={raw!r} is not a valid {option.type.__name__}") from None


def _soketi_value(option: Option, value: Any) -> Any:
    try:
        return option.type(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"the Soketi setting for {option.flag}, {value!r}, is not a valid {option.type.__name__}"
        ) from None


def build_parser(env: Mapping[str, str], soketi: Mapping[str, Any] | None = None) -> argparse.ArgumentParser:
    """The ``hub`` command line: ``serve``, ``ws`` and ``ingest``, every flag defaulting from HUB_*.

    ``soketi`` holds values translated from a Soketi setup: below HUB_* variables and flags, above defaults.
    """
    soketi = soketi or {}
    parser = argparse.ArgumentParser(prog="hub", description="Pusher Channels compatible broadcast server.")
    sub = parser.add_subparsers(dest="role", required=True)
    helps = {
        Role.SERVE: "WebSocket + HTTP API in one process (in-memory unless --redis-url).",
        Role.WS: "WebSocket node of a cluster (needs --redis-url).",
        Role.INGEST: "HTTP API node of a cluster (needs --redis-url).",
    }
    converter = sub.add_parser("soketi-config", help="Print the hub apps file and flags of a Soketi config.json.")
    converter.add_argument("path", help="Soketi config file (its SOKETI_* variables are read too)")
    # Listed for `hub --help`; `hub apps ...` is parsed by hub.apps_cli.
    sub.add_parser("apps", help="List, add, change, disable or remove apps through the admin API (hub apps -h).")
    for role in Role:
        p = sub.add_parser(role.value, help=helps[role])
        for option in OPTIONS:
            if option.env in env:
                default = _parse_bound(option, env[option.env])
            elif option.name in soketi:
                default = _soketi_value(option, soketi[option.name])
            else:
                default = option.default
            p.add_argument(
                option.flag,
                dest=option.name,
                type=option.type,
                default=default,
                help=f"{option.help} [env {option.env}, default {option.default}]",
            )
    return parser


def parse_settings(argv: Sequence[str], env: Mapping[str, str]) -> Settings:
    """Resolve Settings from arguments and environment; raise ConfigError on a bad combination."""
    args = vars(build_parser(env).parse_args(list(argv)))
    soketi = soketi_setup(args.get("soketi_config"), env)
    if soketi is not None:
        if args["apps_file"] and soketi.apps_given:
            raise ConfigError("give the apps once: in the Soketi setup or in --apps-file, not both")
        args = vars(build_parser(env, soketi.options).parse_args(list(argv)))
    role = Role(args.pop("role"))
    if role in (Role.WS, Role.INGEST) and not args["redis_url"]:
        hint = " or Soketi's adapter.driver redis" if soketi is not None else ""
        raise ConfigError(f"hub {role.value} needs --redis-url (or HUB_REDIS_URL{hint})")
    if args["redis_url"]:
        try:
            parse_topology(args["redis_url"])
        except RedisUrlError as exc:
            raise ConfigError(f"--redis-url: {exc}") from None
    if args["redis_replay_seconds"] < 0 or args["redis_replay_events"] < 1:
        raise ConfigError("redis replay seconds must not be negative and replay events must be at least 1")
    if args["redis_publish_acks"] < -1:
        raise ConfigError("redis publish acks must be -1 (automatic), 0 or a number of replicas")
    if args["log_format"] not in ("auto", "json", "console"):
        raise ConfigError(f"log format must be auto, json or console, not {args['log_format']!r}")
    if args["compression"] not in ("on", "off"):
        raise ConfigError(f"compression must be on or off, not {args['compression']!r}")
    if args["compression_min_bytes"] < 0:
        raise ConfigError("compression min bytes must not be negative")
    if args["activity_timeout"] <= 0:
        raise ConfigError("activity timeout must be positive")
    if args["http_request_timeout"] <= 0:
        raise ConfigError("the HTTP request timeout must be positive")
    if args["max_pending_connections"] < 1 or args["max_api_connections"] < 1:
        raise ConfigError("max pending connections and max API connections must be at least 1")
    if not args["tls_cert"] and (args["tls_key"] or args["tls_ca"]):
        raise ConfigError("--tls-key and --tls-ca need --tls-cert (HUB_TLS_CERT)")
    prefix = (args["path_prefix"] or "").rstrip("/")
    if prefix and (not prefix.startswith("/") or "{" in prefix or "?" in prefix):
        raise ConfigError(f"path prefix must be a path like /ws, not {args['path_prefix']!r}")
    args["path_prefix"] = prefix
    if args["max_http_body_kb"] <= 0:
        raise ConfigError("max HTTP body kb must be positive")
    if args["webhook_batch_ms"] < 0:
        raise ConfigError("webhook batch ms must be 0 (off) or positive")
    if args["webhook_retry_window"] <= 0:
        raise ConfigError("webhook retry window must be positive")
    if args["console_max_events"] < 1:
        raise ConfigError("console max events must be at least 1")
    args["node_id"] = args["node_id"] or secrets.token_hex(6)
    args["app_store"] = _app_store(args)
    args["admin_token"] = _admin_token(args["admin_token"], args["admin_token_file"])
    return Settings(role=role, **args, soketi=soketi)


APP_STORES = ("env", "file", "redis", "postgres")


def _app_store(args: Mapping[str, Any]) -> str:
    """The app store named (or implied by --apps-file), checked against the options it needs."""
    store = args["app_store"] or ("file" if args["apps_file"] else "env")
    if store not in APP_STORES:
        raise ConfigError(f"app store must be one of {', '.join(APP_STORES)}, not {store!r}")
    if store == "file" and not args["apps_file"]:
        raise ConfigError("the file app store needs --apps-file (or HUB_APPS_FILE)")
    if store in ("redis", "postgres", "env") and args["apps_file"]:
        raise ConfigError(f"--apps-file is read by the file app store only, not by the {store} one")
    if store == "redis" and not args["redis_url"]:
        raise ConfigError("the redis app store needs --redis-url (or HUB_REDIS_URL)")
    if store == "postgres" and not args["postgres_url"]:
        raise ConfigError("the postgres app store needs --postgres-url (or HUB_POSTGRES_URL)")
    if args["apps_reload_seconds"] <= 0:
        raise ConfigError("apps reload seconds must be positive")
    return str(store)


def _admin_token(token: str | None, token_file: str | None) -> str | None:
    """The admin token from the flag/variable or the file; an empty HUB_ADMIN_TOKEN means none."""
    if token and token_file:
        raise ConfigError("give the admin token once: --admin-token (HUB_ADMIN_TOKEN) or --admin-token-file")
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read admin token file {token_file}: {exc}") from None
        if not token:
            raise ConfigError(f"admin token file {token_file} is empty")
    if token and len(token) < MIN_ADMIN_TOKEN_LENGTH:
        raise ConfigError(f"the admin token must be at least {MIN_ADMIN_TOKEN_LENGTH} characters")
    return token or None


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """``HUB_*`` variables that are no option (a typo would otherwise be ignored without a word)."""
    known = {option.env for option in OPTIONS}
    return sorted(name for name in env if name.startswith("HUB_") and name not in known)


def load_apps(settings: Settings, env: Mapping[str, str]) -> AppRegistry:
    """The apps of a fixed setup: the apps file, the Soketi setup's apps, or the default app from the environment."""
    if settings.apps_file:
        return load_apps_file(settings.apps_file)
    if settings.soketi is not None:
        return AppRegistry(app_from_mapping(app, i) for i, app in enumerate(settings.soketi.apps))
    return AppRegistry([default_app(env)])
