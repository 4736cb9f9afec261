"""The AppStore contract: keep a node's in-memory AppRegistry equal to the apps' source of truth."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence

import structlog

from hub.apps import App, AppRegistry, ConfigError
from hub.metrics import Metrics

log = structlog.get_logger("hub.appstore")


async def stop_tasks(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel background tasks and wait until they are done.

    Cancels again until each one ends: redis-py 8 sometimes swallows a cancellation (``PubSub.subscribe``
    returns normally when cancelled while connecting), which would otherwise leave ``close()`` hanging.
    """
    for task in tasks:
        while not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.1)


class AppStoreError(Exception):
    """A write the store refused; ``status`` is the admin API's answer to it."""

    status = 400


class AppNotFound(AppStoreError):
    """No app has this id."""

    status = 404


class AppConflict(AppStoreError):
    """Another app already has this id or key; ``field`` says which."""

    status = 409

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class ReadOnlyStore(AppStoreError):
    """The store's apps are edited elsewhere (the apps file, the environment)."""

    status = 405


class StoreUnavailable(AppStoreError):
    """The database did not answer; nothing was changed."""

    status = 503


class AppStore(ABC):
    """Where a node's apps live, and the in-memory registry (``apps``) that mirrors them.

    Contract:
    - ``apps`` is the registry the connect and publish paths read; lookups never reach the store.
    - ``start`` loads every app once and raises ConfigError if it cannot (a node never starts without
      knowing its apps); then the store follows the source until ``close``.
    - A change reaches this node's registry by itself: within 1 s for Redis and PostgreSQL (a change
      notification, with a full reload every ``reload_seconds`` as a safety net), within the poll
      interval (1 s) for the apps file. ``reload`` re-reads everything at once (SIGHUP).
    - A write through the store (``create``, ``update``, ``delete``; writable stores only) is in this
      node's registry when the call returns, and every other node's within the same 1 s.
    - A source that does not validate leaves the registry as it was: the file store keeps its last good
      file, the database stores keep an invalid row's last good version (and skip a new one). Each failed
      load logs one line naming the problem and counts in ``hub_app_store_errors_total{store}``.
    - Writes raise AppNotFound (404), AppConflict (409: duplicate id or key), ReadOnlyStore (405) or
      StoreUnavailable (503); a refused write changes nothing.
    """

    name: str = "abstract"
    writable: bool = False

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.apps = AppRegistry()
        self._metrics = metrics

    @abstractmethod
    async def start(self) -> None:
        """Load the apps (ConfigError if that fails) and start following changes."""

    async def close(self) -> None:
        """Stop following changes and release connections."""
        return None

    @abstractmethod
    async def reload(self) -> bool:
        """Re-read the whole source now; False (registry unchanged, failure logged) if it did not load."""

    async def create(self, app: App) -> App:
        """Add a new app; AppConflict if its id or key is taken."""
        raise ReadOnlyStore(self._read_only_reason())

    async def update(self, app: App) -> App:
        """Replace the app with ``app.id``; AppNotFound if there is none, AppConflict if the key is taken."""
        raise ReadOnlyStore(self._read_only_reason())

    async def delete(self, app_id: str) -> None:
        """Remove the app; AppNotFound if there is none."""
        raise ReadOnlyStore(self._read_only_reason())

    def _read_only_reason(self) -> str:
        return f"The {self.name} app store is read-only here; edit its source instead."

    def _failed(self, error: str, **context: object) -> None:
        """Log one line naming why a load failed, and count it."""
        log.warning("app_store_load_failed", store=self.name, error=error, **context)
        if self._metrics is not None:
            self._metrics.app_store_errors.labels(self.name).inc()

    def _replace(self, apps: list[App]) -> bool:
        """Install a freshly loaded set; False (registry unchanged) if ids or keys collide."""
        try:
            changes = self.apps.replace(apps)
        except ConfigError as exc:
            self._failed(str(exc))
            return False
        if changes:
            log.info(
                "apps_changed",
                store=self.name,
                added=sorted(c.app_id for c in changes if c.before is None),
                removed=sorted(c.app_id for c in changes if c.after is None),
                changed=sorted(c.app_id for c in changes if c.before is not None and c.after is not None),
            )
        return True
