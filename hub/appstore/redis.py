"""Apps in the deployment's Redis, shared by every node.

Layout (``{p}`` is the deployment prefix; one hash tag, so every key lives in one Redis Cluster slot and
each script's keys, all passed in KEYS, share it):

- ``{p:apps}:data``: hash, app id -> the app as JSON (the apps-file form);
- ``{p:apps}:keys``: hash, app key -> app id (keeps keys unique across apps);
- ``{p:apps}:written``: set by every write and never deleted: a Redis holding no apps and no marker has
  lost its data (restart without persistence, FLUSHALL); the nodes keep serving what they have and write
  it back;
- ``{p:apps}:changes``: pub/sub channel; every write publishes the id it changed.

Writes are Lua scripts (check and write in one step, so two nodes cannot both take one key). A node
reloads the whole ``data`` hash (one HGETALL, no SCAN) when told of a change, every
``reload_seconds`` as a safety net against a lost notification, and after its subscription
reconnects. Reloads run one at a time, and one asked for during another runs after it, so the last
reload always reads a state newer than the last notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import structlog
from redis.exceptions import RedisError

from hub.apps import App, ConfigError, app_from_mapping, app_to_mapping
from hub.appstore.base import AppConflict, AppNotFound, AppStore, StoreUnavailable, stop_tasks
from hub.metrics import Metrics

log = structlog.get_logger("hub.appstore.redis")

# Waits between reconnection attempts: doubling from the first to the last.
RECONNECT_SECONDS = (0.5, 5.0)

# KEYS: data, keys, written. ARGV: id, key, json, channel, mode ("create" or "update").
_WRITE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[5] == 'create' and old then return 'id_taken' end
if ARGV[5] == 'update' and not old then return 'not_found' end
local owner = redis.call('HGET', KEYS[2], ARGV[2])
if owner and owner ~= ARGV[1] then return 'key_taken' end
if old then
  local old_key = cjson.decode(old)['key']
  if old_key ~= ARGV[2] then redis.call('HDEL', KEYS[2], old_key) end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('SET', KEYS[3], '1')
redis.call('PUBLISH', ARGV[4], ARGV[1])
return 'ok'
"""

# KEYS: data, keys, written. ARGV: id, channel.
_DELETE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 'not_found' end
local key = cjson.decode(old)['key']
if redis.call('HGET', KEYS[2], key) == ARGV[1] then redis.call('HDEL', KEYS[2], key) end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SET', KEYS[3], '1')
redis.call('PUBLISH', ARGV[2], ARGV[1])
return 'ok'
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisAppStore(AppStore):
    """Apps in Redis; see the module docstring for the layout and how changes travel."""

    name = "redis"
    writable = True

    def __init__(
        self, client: Any, prefix: str, metrics: Metrics | None = None, *, reload_seconds: float = 10.0
    ) -> None:
        """``client`` is the node's redis-py asyncio client (as ``make_backends`` builds it)."""
        super().__init__(metrics)
        self._client = client
        tag = f"{{{prefix}:apps}}"
        self.data_key = f"{tag}:data"
        self.keys_key = f"{tag}:keys"
        self.written_key = f"{tag}:written"
        self.channel = f"{tag}:changes"
        self._reload_seconds = reload_seconds
        self._write = client.register_script(_WRITE)
        self._delete = client.register_script(_DELETE)
        self._lock = asyncio.Lock()
        self._pending = False
        self._last_ok = True
        self._reseeding: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Load every app (ConfigError if Redis does not answer), then follow changes."""
        try:
            raw, written = await self._read()
        except (RedisError, OSError) as exc:
            raise ConfigError(f"cannot load apps from Redis: {exc}") from None
        self._install(raw, written, first=True)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._follow(), name="redis-app-store-follow"),
            loop.create_task(self._periodic(), name="redis-app-store-reload"),
        ]

    async def close(self) -> None:
        """Stop following changes (the client belongs to the node)."""
        await stop_tasks([*self._tasks, *([self._reseeding] if self._reseeding else [])])
        self._tasks = []

    async def reload(self) -> bool:
        """Read every app now; reloads run one at a time, and one that starts after this call covers it."""
        self._pending = True
        async with self._lock:
            if not self._pending:
                return self._last_ok  # a read that began after this call has just finished
            while self._pending:
                self._pending = False
                try:
                    raw, written = await self._read()
                except (RedisError, OSError) as exc:
                    self._failed(f"cannot read apps from Redis: {exc}")
                    self._last_ok = False
                    return False
                self._last_ok = self._install(raw, written)
            return self._last_ok

    async def _read(self) -> tuple[dict[Any, Any], bool]:
        """Every stored app, and whether hub ever wrote here (both keys in one slot, one round trip)."""
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.data_key)
            pipe.exists(self.written_key)
            raw, written = await pipe.execute()
        return raw, bool(written)

    def _install(self, raw: dict[Any, Any], written: bool, first: bool = False) -> bool:
        if not raw and not written and len(self.apps):
            # Every write also sets the marker, and nothing deletes it: a Redis without both lost its data
            # (restarted without persistence, flushed). Keep serving, and write the apps back, as nodes
            # rewrite their share of the cluster state after an outage.
            self._failed(f"Redis holds no apps and no trace of hub's writes; keeping the {len(self.apps)} apps served")
            if self._reseeding is None or self._reseeding.done():
                self._reseeding = asyncio.get_running_loop().create_task(self._reseed(list(self.apps)))
            return False
        apps: list[App] = []
        for app_id, doc in raw.items():
            app = self._parse(_text(app_id), _text(doc))
            if app is not None:
                apps.append(app)
        if first:
            self.apps.replace(apps)
            return True
        return self._replace(apps)

    def _parse(self, app_id: str, doc: str) -> App | None:
        """The stored app, or (when it does not validate) the version this node already serves."""
        try:
            mapping = json.loads(doc)
            if not isinstance(mapping, dict):
                raise ConfigError(f"app {app_id}: stored value is not a JSON object")
            return app_from_mapping(mapping)
        except (ValueError, ConfigError) as exc:
            self._failed(str(exc), app_id=app_id)
            return self.apps.by_id(app_id)

    async def _run(self, script: Any, keys: list[str], args: list[str]) -> str:
        try:
            return _text(await script(keys=keys, args=args))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis did not answer: {exc}") from None

    async def _reseed(self, apps: list[App]) -> None:
        """Write ``apps`` back into a Redis that lost them (an app another node wrote back first is kept)."""
        restored = 0
        for app in apps:
            doc = json.dumps(app_to_mapping(app), separators=(",", ":"))
            keys = [self.data_key, self.keys_key, self.written_key]
            with contextlib.suppress(StoreUnavailable):
                if await self._run(self._write, keys, [app.id, app.key, doc, self.channel, "create"]) == "ok":
                    restored += 1
        log.warning("app_store_restored", store=self.name, apps=restored, reason="Redis had lost every app")

    async def create(self, app: App) -> App:
        """Add the app if its id and key are free."""
        return await self._put(app, "create")

    async def update(self, app: App) -> App:
        """Replace the app with this id."""
        return await self._put(app, "update")

    async def _put(self, app: App, mode: str) -> App:
        doc = json.dumps(app_to_mapping(app), separators=(",", ":"))
        result = await self._run(
            self._write, [self.data_key, self.keys_key, self.written_key], [app.id, app.key, doc, self.channel, mode]
        )
        if result == "id_taken":
            raise AppConflict(f"An app with id {app.id} exists already.", "id")
        if result == "key_taken":
            raise AppConflict(f"Another app has the key {app.key}.", "key")
        if result == "not_found":
            raise AppNotFound(f"The app {app.id} could not be found.")
        await self.reload()
        return app

    async def delete(self, app_id: str) -> None:
        """Remove the app."""
        result = await self._run(self._delete, [self.data_key, self.keys_key, self.written_key], [app_id, self.channel])
        if result == "not_found":
            raise AppNotFound(f"The app {app_id} could not be found.")
        await self.reload()

    async def _follow(self) -> None:
        """Reload on every change notification; after a lost subscription, resubscribe and reload."""
        backoff = RECONNECT_SECONDS[0]
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                # Changes made while we were not subscribed are only seen by reading everything again.
                await self.reload()
                backoff = RECONNECT_SECONDS[0]
                while True:
                    message = await pubsub.get_message(timeout=self._reload_seconds)
                    if message is None:
                        continue
                    while message is not None:  # a burst of changes costs one reload
                        message = await pubsub.get_message(timeout=0)
                    await self.reload()
            except (RedisError, OSError) as exc:
                log.warning("app_store_subscription_lost", store=self.name, error=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RECONNECT_SECONDS[1])
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self._reload_seconds)
            await self.reload()
