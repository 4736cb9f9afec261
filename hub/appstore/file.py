"""The apps file, watched: re-read when it changes on disk (checked every second) and on SIGHUP.

A file that does not load (bad JSON, an invalid app, a duplicate key, missing) keeps the apps last read;
the problem is logged once per change of the file and counted. Changes are noticed by the file's
(inode, size, mtime): an editor's save, a rename into place and a Kubernetes Secret's symlink swap all
change it.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from hub.apps import ConfigError, parse_apps_file
from hub.appstore.base import AppStore, stop_tasks
from hub.metrics import Metrics

POLL_SECONDS = 1.0

Stamp = tuple[int, int, int] | None


def _stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class FileAppStore(AppStore):
    """Apps from a JSON apps file; read-only through the admin API (edit the file)."""

    name = "file"

    def __init__(self, path: str | Path, metrics: Metrics | None = None, *, poll_seconds: float = POLL_SECONDS) -> None:
        super().__init__(metrics)
        self.path = Path(path)
        self._poll_seconds = poll_seconds
        self._seen: Stamp = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load the file (ConfigError if it does not load), then watch it."""
        self._seen = _stamp(self.path)
        self.apps.replace(parse_apps_file(self.path))
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="apps-file-watch")

    async def close(self) -> None:
        """Stop watching."""
        if self._task is not None:
            await stop_tasks([self._task])
            self._task = None

    async def reload(self) -> bool:
        """Re-read the file now; keep the current apps (and log why) if it does not load."""
        self._seen = _stamp(self.path)
        try:
            apps = parse_apps_file(self.path)
        except ConfigError as exc:
            self._failed(str(exc), path=str(self.path))
            return False
        return self._replace(apps)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            if _stamp(self.path) != self._seen:
                await self.reload()

    def _read_only_reason(self) -> str:
        return f"Apps come from the apps file {self.path}, which is read-only here; edit the file instead."
