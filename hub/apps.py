"""Apps (tenants): credentials, feature flags, limits and webhooks, and the registry that finds them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hub.protocol.limits import Limits

WEBHOOK_EVENT_TYPES = frozenset(
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


class ConfigError(Exception):
    """A configuration that cannot be served; the message is one line naming the problem."""


class AppFieldError(ConfigError):
    """An app entry that does not validate; ``field`` is the key at fault (the admin API's 400 names it)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Webhook:
    """A webhook target, the event types it receives and the channels it is about (Soketi's ``filter``)."""

    url: str
    event_types: frozenset[str]
    headers: tuple[tuple[str, str], ...] = ()
    channel_prefix: str = ""
    channel_suffix: str = ""

    def wants(self, event_type: str, channel: str) -> bool:
        """Whether an ``event_type`` event on ``channel`` goes to this webhook."""
        return (
            event_type in self.event_types
            and channel.startswith(self.channel_prefix)
            and channel.endswith(self.channel_suffix)
        )


@dataclass(frozen=True, slots=True)
class App:
    """One Pusher app: its id, key and secret, what it enables and what it limits."""

    id: str
    key: str
    secret: str
    enabled: bool = True
    enable_client_messages: bool = False
    enable_user_authentication: bool = False
    user_authentication_timeout: float = 30.0
    enable_subscription_count: bool = False
    enable_watchlist_events: bool = False
    max_connections: int = -1
    max_backend_events_per_second: int = -1
    max_client_events_per_second: int = 10
    # Soketi's per-app HTTP read (GET) rate limit; accepted so Soketi apps files load unchanged.
    max_read_requests_per_second: int = -1
    encryption_master_key_base64: str | None = None
    webhooks: tuple[Webhook, ...] = ()
    limits: Limits = field(default_factory=Limits)

    def webhooks_for(self, event_type: str, channel: str) -> list[Webhook]:
        """The webhooks that receive ``event_type`` events on ``channel``."""
        return [w for w in self.webhooks if w.wants(event_type, channel)]


_APP_FIELDS = {f.name for f in fields(App)} - {"limits", "webhooks"}
_LIMIT_FIELDS = {f.name for f in fields(Limits)}
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def snake_case(key: str) -> str:
    """``maxConnections`` -> ``max_connections``: Soketi's app fields are camelCase, hub's snake_case."""
    return _CAMEL.sub("_", key).lower()


def _check_type(app_label: str, key: str, value: Any, expected: type) -> Any:
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"app {app_label}: {key} must be a number, got {value!r}")
        return float(value)
    if expected is bool and not isinstance(value, bool):
        raise ConfigError(f"app {app_label}: {key} must be true or false, got {value!r}")
    if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"app {app_label}: {key} must be an integer, got {value!r}")
    if expected is str and not isinstance(value, str):
        raise ConfigError(f"app {app_label}: {key} must be a string, got {value!r}")
    return value


_TYPES: dict[str, type] = {
    "id": str,
    "key": str,
    "secret": str,
    "enabled": bool,
    "enable_client_messages": bool,
    "enable_user_authentication": bool,
    "user_authentication_timeout": float,
    "enable_subscription_count": bool,
    "enable_watchlist_events": bool,
    "max_connections": int,
    "max_backend_events_per_second": int,
    "max_client_events_per_second": int,
    "max_read_requests_per_second": int,
    "encryption_master_key_base64": str,
}


_WEBHOOK_KEYS = frozenset({"url", "event_types", "headers", "filter"})
_FILTER_KEYS = {"channel_name_starts_with": "channel_prefix", "channel_name_ends_with": "channel_suffix"}


def _parse_filter(app_label: str, raw: object) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"app {app_label}: webhook filter must be an object")
    parsed = {}
    for key, value in raw.items():
        if key not in _FILTER_KEYS:
            known = ", ".join(_FILTER_KEYS)
            raise ConfigError(f"app {app_label}: unknown webhook filter key {key!r} (known: {known})")
        if value is None:
            continue
        if not isinstance(value, str):
            raise ConfigError(f"app {app_label}: webhook filter {key} must be a string, got {value!r}")
        parsed[_FILTER_KEYS[key]] = value
    return parsed


def _parse_webhook(app_label: str, raw: object) -> Webhook:
    if isinstance(raw, dict) and "lambda_function" in raw:
        raise ConfigError(f"app {app_label}: webhook lambda_function is not supported; give the webhook a url")
    if not isinstance(raw, dict) or not isinstance(raw.get("url"), str):
        raise ConfigError(f"app {app_label}: each webhook needs a url string")
    unknown_keys = sorted(set(raw) - _WEBHOOK_KEYS)
    if unknown_keys:
        raise ConfigError(f"app {app_label}: unknown webhook key {unknown_keys[0]!r}")
    types = raw.get("event_types", sorted(WEBHOOK_EVENT_TYPES))
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise ConfigError(f"app {app_label}: webhook event_types must be a list of strings")
    unknown = set(types) - WEBHOOK_EVENT_TYPES
    if unknown:
        raise ConfigError(f"app {app_label}: unknown webhook event type {sorted(unknown)[0]!r}")
    headers = raw.get("headers", {})
    if not isinstance(headers, dict):
        raise ConfigError(f"app {app_label}: webhook headers must be an object")
    return Webhook(
        url=raw["url"],
        event_types=frozenset(types),
        headers=tuple((str(k), str(v)) for k, v in headers.items()),
        **_parse_filter(app_label, raw.get("filter")),
    )


def app_from_mapping(raw: Mapping[str, Any], position: int = 0) -> App:
    """Build an App from an apps-file entry, naming the entry and key in any error."""
    entry = {snake_case(k): v for k, v in raw.items()}
    label = str(entry.get("id", f"#{position + 1}"))
    for required in ("id", "key", "secret"):
        value = entry.get(required)
        if isinstance(value, int) and not isinstance(value, bool) and required == "id":
            entry["id"] = value = str(value)
        if not isinstance(value, str) or not value:
            raise AppFieldError(f"app {label}: {required} is required and must be a non-empty string", required)
    app_args: dict[str, Any] = {}
    limit_args: dict[str, Any] = {}
    for key, value in entry.items():
        try:
            _read_field(label, key, value, app_args, limit_args)
        except AppFieldError:
            raise
        except ConfigError as exc:
            raise AppFieldError(str(exc), key) from None
    return App(**app_args, limits=Limits(**limit_args))


def _read_field(label: str, key: str, value: Any, app_args: dict[str, Any], limit_args: dict[str, Any]) -> None:
    """Check one entry key and file its value under the App or Limits arguments."""
    if key == "webhooks":
        if not isinstance(value, list):
            raise ConfigError(f"app {label}: webhooks must be a list")
        app_args["webhooks"] = tuple(_parse_webhook(label, w) for w in value)
    elif key in _APP_FIELDS:
        if value is None and key == "encryption_master_key_base64":
            return
        app_args[key] = _check_type(label, key, value, _TYPES[key])
    elif key in _LIMIT_FIELDS:
        limit_args[key] = _check_type(label, key, value, int)
    else:
        raise ConfigError(f"app {label}: unknown key {key!r}")


def app_to_mapping(app: App) -> dict[str, Any]:
    """The apps-file form of an app (snake_case keys, limits flattened); ``app_from_mapping`` reads it back."""
    out: dict[str, Any] = {name: getattr(app, name) for name in _TYPES if name != "encryption_master_key_base64"}
    if app.encryption_master_key_base64 is not None:
        out["encryption_master_key_base64"] = app.encryption_master_key_base64
    out.update({name: getattr(app.limits, name) for name in sorted(_LIMIT_FIELDS)})
    out["webhooks"] = [_webhook_to_mapping(w) for w in app.webhooks]
    return out


def _webhook_to_mapping(webhook: Webhook) -> dict[str, Any]:
    out: dict[str, Any] = {
        "url": webhook.url,
        "event_types": sorted(webhook.event_types),
        "headers": dict(webhook.headers),
    }
    found = {key: getattr(webhook, name) for key, name in _FILTER_KEYS.items() if getattr(webhook, name)}
    if found:
        out["filter"] = found
    return out


@dataclass(frozen=True, slots=True)
class AppChange:
    """One app as it was and as it is now: added (``before`` None), removed (``after`` None) or changed."""

    before: App | None
    after: App | None

    @property
    def app_id(self) -> str:
        """The app's id."""
        app = self.after or self.before
        assert app is not None
        return app.id


ChangeListener = Callable[[Sequence[AppChange]], None]


def _index(apps: Iterable[App]) -> tuple[dict[str, App], dict[str, App]]:
    by_id: dict[str, App] = {}
    by_key: dict[str, App] = {}
    for app in apps:
        if app.id in by_id:
            raise ConfigError(f"duplicate app id {app.id!r}")
        if app.key in by_key:
            raise ConfigError(f"duplicate app key {app.key!r}")
        by_id[app.id] = app
        by_key[app.key] = app
    return by_id, by_key


class AppRegistry:
    """Finds apps by id (HTTP API) and by key (WebSocket URL): the in-memory copy every hot path reads.

    An app store keeps it current with ``replace`` (whole sets, validated before anything changes, so
    a bad set leaves the registry as it was); listeners hear of every change after it is in place.
    Lookups are plain dict reads: callers on the connect and publish paths never wait for a store.
    """

    def __init__(self, apps: Iterable[App] = ()) -> None:
        self._by_id, self._by_key = _index(apps)
        self._listeners: list[ChangeListener] = []

    def by_id(self, app_id: str) -> App | None:
        """The app with this id, or None."""
        return self._by_id.get(app_id)

    def by_key(self, key: str) -> App | None:
        """The app with this key, or None."""
        return self._by_key.get(key)

    def __iter__(self) -> Iterator[App]:
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)

    def listen(self, listener: ChangeListener) -> None:
        """Call ``listener`` with the changes of every later ``replace`` that changed something."""
        self._listeners.append(listener)

    def replace(self, apps: Iterable[App]) -> list[AppChange]:
        """Serve exactly ``apps`` from now on; return (and announce) what changed.

        Raises ConfigError, changing nothing, when two apps share an id or a key.
        """
        by_id, by_key = _index(apps)
        changes = [AppChange(old, by_id.get(app_id)) for app_id, old in self._by_id.items() if by_id.get(app_id) != old]
        changes += [AppChange(None, app) for app_id, app in by_id.items() if app_id not in self._by_id]
        self._by_id, self._by_key = by_id, by_key
        if changes:
            for listener in self._listeners:
                listener(changes)
        return changes


def parse_apps_file(path: str | Path) -> list[App]:
    """The apps of an apps file (``{"apps": [...]}``); ConfigError with a one-line reason when it is bad."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read apps file {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"apps file {p} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"apps file {p} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("apps"), list):
        raise ConfigError(f'apps file {p} must be an object with an "apps" list')
    apps = []
    for i, raw in enumerate(doc["apps"]):
        if not isinstance(raw, dict):
            raise ConfigError(f"apps file {p}: entry #{i + 1} is not an object")
        apps.append(app_from_mapping(raw, i))
    if not apps:
        raise ConfigError("no apps configured")
    _index(apps)
    return apps


def load_apps_file(path: str | Path) -> AppRegistry:
    """A registry of an apps file's apps; ConfigError with a one-line reason when the file is bad."""
    return AppRegistry(parse_apps_file(path))


def default_app(env: Mapping[str, str]) -> App:
    """The single app of a Laravel-style ``.env``: PUSHER_APP_ID, PUSHER_APP_KEY, PUSHER_APP_SECRET."""
    return App(
        id=env.get("PUSHER_APP_ID") or "app-id",
        key=env.get("PUSHER_APP_KEY") or "app-key",
        secret=env.get("PUSHER_APP_SECRET") or "app-secret",
        enable_client_messages=env.get("PUSHER_APP_CLIENT_MESSAGES", "false").lower() in ("1", "true", "yes"),
    )
