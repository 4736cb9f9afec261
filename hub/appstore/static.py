"""A fixed set of apps: the ``PUSHER_APP_*`` app of a Laravel-style ``.env``; never changes."""

from __future__ import annotations

from collections.abc import Iterable

from hub.apps import App
from hub.appstore.base import AppStore
from hub.metrics import Metrics


class StaticAppStore(AppStore):
    """Serves the apps it was given; read-only."""

    name = "env"

    def __init__(self, apps: Iterable[App], metrics: Metrics | None = None) -> None:
        super().__init__(metrics)
        self._fixed = list(apps)

    async def start(self) -> None:
        """Serve the given apps."""
        self.apps.replace(self._fixed)

    async def reload(self) -> bool:
        """Nothing to re-read."""
        return True
