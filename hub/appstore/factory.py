"""Building the app store that Settings name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hub.appstore.base import AppStore
from hub.appstore.file import FileAppStore
from hub.appstore.static import StaticAppStore
from hub.config import Settings, load_apps
from hub.metrics import Metrics


def make_app_store(
    settings: Settings, env: Mapping[str, str], metrics: Metrics | None = None, redis: Any = None
) -> AppStore:
    """The store of ``settings.app_store``; ``redis`` is the node's redis-py client (the redis store's)."""
    if settings.app_store == "file":
        assert settings.apps_file is not None
        return FileAppStore(settings.apps_file, metrics)
    if settings.app_store == "redis":
        from hub.appstore.redis import RedisAppStore

        if redis is None:
            raise ValueError("the redis app store needs the node's Redis client")
        return RedisAppStore(redis, settings.redis_prefix, metrics, reload_seconds=settings.apps_reload_seconds)
    if settings.app_store == "postgres":
        from hub.appstore.postgres import PostgresAppStore

        assert settings.postgres_url is not None
        return PostgresAppStore(
            settings.postgres_url,
            settings.postgres_table,
            metrics,
            reload_seconds=settings.apps_reload_seconds,
        )
    return StaticAppStore(load_apps(settings, env), metrics)
