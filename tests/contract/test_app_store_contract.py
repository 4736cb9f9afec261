"""The AppStore contract (hub/appstore/base.py), run against every store: file, Redis and PostgreSQL.

Each test builds "nodes" (started stores over one source) and changes the source the way an operator
would: the apps file is rewritten; Redis and PostgreSQL are written through another node's store.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import psycopg
import pytest

from hub.apps import App, AppChange, app_from_mapping, app_to_mapping
from hub.appstore.base import AppConflict, AppNotFound, AppStore, ReadOnlyStore
from hub.appstore.file import FileAppStore
from hub.appstore.postgres import PostgresAppStore, migrate
from hub.appstore.redis import RedisAppStore
from hub.metrics import Metrics
from hub.redis_topology import CommandClient, parse_topology
from tests.support.postgres_server import PostgresServer
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer

# redis-cluster: the same store on a 3-primary Redis Cluster, through the cluster-aware client.
STORES = ("file", "redis", "redis-cluster", "postgres")
WRITABLE = ("redis", "redis-cluster", "postgres")
# How long a change may take to reach another node: the contract's 1 s (the file store polls every second).
PROPAGATION = {"file": 2.0, "redis": 1.0, "redis-cluster": 1.0, "postgres": 1.0}

APP_1 = App(id="1", key="key-1", secret="secret-1")
APP_2 = App(id="2", key="key-2", secret="secret-2", enable_client_messages=True, max_connections=5)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL for the session's tests; each test uses its own table."""
    with PostgresServer() as server:
        yield server


@dataclass
class Source:
    """The apps' source of truth, and nodes (started stores) that follow it."""

    kind: str
    tmp: Path
    redis_url: str = ""
    postgres_url: str = ""
    prefix: str = ""
    table: str = ""
    nodes: list[AppStore] = field(default_factory=list)
    clients: list[CommandClient] = field(default_factory=list)
    _writer: AppStore | None = None
    _file_apps: dict[str, App] = field(default_factory=dict)

    @property
    def within(self) -> float:
        """The propagation bound of this store."""
        return PROPAGATION[self.kind]

    def _make(self, metrics: Metrics | None) -> AppStore:
        if self.kind == "file":
            return FileAppStore(self.tmp / "apps.json", metrics)
        if self.kind.startswith("redis"):
            # The client make_backends gives a node: plain, or cluster-aware for redis+cluster:// URLs.
            client = parse_topology(self.redis_url).command_client(timeout=2.0)
            self.clients.append(client)
            return RedisAppStore(client, self.prefix, metrics, reload_seconds=30.0)
        return PostgresAppStore(self.postgres_url, self.table, metrics, reload_seconds=30.0)

    async def node(self, metrics: Metrics | None = None) -> AppStore:
        """A started store following the source (reload_seconds long: changes must arrive by notification)."""
        store = self._make(metrics)
        await store.start()
        self.nodes.append(store)
        return store

    async def writer(self) -> AppStore:
        """The node an operator writes through (Redis and PostgreSQL)."""
        if self._writer is None:
            self._writer = await self.node()
        return self._writer

    async def put(self, app: App) -> None:
        """Add or replace an app at the source."""
        if self.kind == "file":
            self._file_apps[app.id] = app
            self._write_file()
            return
        writer = await self.writer()
        if writer.apps.by_id(app.id) is None:
            await writer.create(app)
        else:
            await writer.update(app)

    async def remove(self, app_id: str) -> None:
        """Delete an app at the source."""
        if self.kind == "file":
            del self._file_apps[app_id]
            self._write_file()
            return
        await (await self.writer()).delete(app_id)

    async def corrupt(self, app_id: str) -> None:
        """Make one app at the source invalid (a webhook without a url), bypassing hub's checks."""
        if self.kind == "file":
            doc = {"apps": [app_to_mapping(a) for a in self._file_apps.values()]}
            for entry in doc["apps"]:
                if entry["id"] == app_id:
                    entry["webhooks"] = [{"nourl": True}]
            (self.tmp / "apps.json").write_text(json.dumps(doc))
        elif self.kind.startswith("redis"):
            client = self.clients[0]
            data_key = f"{{{self.prefix}:apps}}:data"
            stored = await client.hget(data_key, app_id)
            assert stored is not None
            doc = json.loads(stored)
            doc["webhooks"] = [{"nourl": True}]
            await client.hset(data_key, app_id, json.dumps(doc))
            await client.publish(f"{{{self.prefix}:apps}}:changes", app_id)
        else:
            async with await psycopg.AsyncConnection.connect(self.postgres_url, autocommit=True) as conn:
                await conn.execute(
                    f"UPDATE {self.table} SET webhooks = '[{{\"nourl\": true}}]'::jsonb WHERE id = %s", (app_id,)
                )

    def _write_file(self) -> None:
        path = self.tmp / "apps.json"
        staged = self.tmp / "apps.json.new"
        staged.write_text(json.dumps({"apps": [app_to_mapping(a) for a in self._file_apps.values()]}))
        staged.rename(path)  # as an operator's deploy tool would: readers never see half a file

    async def close(self) -> None:
        """Close every node and client."""
        for store in self.nodes:
            await store.close()
        for client in self.clients:
            await client.aclose()


async def _source(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Source:
    made = Source(kind, tmp_path)
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        made.redis_url, made.prefix = server.url, f"t{uuid.uuid4().hex[:12]}"
    elif kind == "redis-cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        made.redis_url, made.prefix = cluster.url, f"t{uuid.uuid4().hex[:12]}"
    elif kind == "postgres":
        pg: PostgresServer = request.getfixturevalue("postgres_server")
        made.postgres_url, made.table = pg.url, f"apps_{uuid.uuid4().hex[:12]}"
        await migrate(made.postgres_url, made.table)
    return made


@pytest.fixture(params=STORES)
async def source(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Source]:
    """An empty source of each kind (the file store's file is written by the first ``put``)."""
    made = await _source(request.param, request, tmp_path)
    yield made
    await made.close()


@pytest.fixture(params=WRITABLE)
async def writable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Source]:
    """An empty source of each writable kind."""
    made = await _source(request.param, request, tmp_path)
    yield made
    await made.close()


async def seeded(source: Source, *apps: App) -> None:
    """Put ``apps`` at the source before the nodes under test start."""
    for app in apps:
        await source.put(app)


async def eventually(condition: Callable[[], bool], within: float, what: str) -> float:
    """Seconds until ``condition()`` held; fail after ``within``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within:
            pytest.fail(f"{what} not within {within} s")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def eventually_async(read: Callable[[], Awaitable[int]], want: int, what: str) -> None:
    """Wait until ``await read()`` returns ``want``; fail after 2 s."""
    started = time.monotonic()
    while await read() != want:
        if time.monotonic() - started > 2.0:
            pytest.fail(f"{what} not within 2 s")
        await asyncio.sleep(0.01)


def _secret(app: App | None) -> str | None:
    return None if app is None else app.secret


def _errors(metrics: Metrics, store: str) -> float:
    value = metrics.registry.get_sample_value("hub_app_store_errors_total", {"store": store})
    return value or 0.0


# --- loading and following ------------------------------------------------------------------------------------


async def test_start_serves_every_app_of_the_source(source: Source) -> None:
    await seeded(source, APP_1, APP_2)
    node = await source.node()
    assert node.apps.by_id("1") == APP_1
    assert node.apps.by_key("key-2") == APP_2
    assert len(node.apps) == 2


async def test_added_app_reaches_another_node_within_the_bound(source: Source) -> None:
    await seeded(source, APP_1)
    node = await source.node()
    await source.put(APP_2)
    await eventually(lambda: node.apps.by_key("key-2") == APP_2, source.within, "new app on the other node")


async def test_rotated_secret_reaches_another_node(source: Source) -> None:
    await seeded(source, APP_1)
    node = await source.node()
    await source.put(replace(APP_1, secret="rotated"))
    await eventually(lambda: node.apps.by_id("1").secret == "rotated", source.within, "new secret")  # type: ignore[union-attr]


async def test_deleted_app_disappears_from_another_node(source: Source) -> None:
    await seeded(source, APP_1, APP_2)
    node = await source.node()
    await source.remove("2")
    await eventually(lambda: node.apps.by_id("2") is None, source.within, "deletion")
    assert node.apps.by_key("key-2") is None
    assert node.apps.by_id("1") == APP_1


async def test_changed_key_frees_the_old_key(source: Source) -> None:
    await seeded(source, APP_1)
    node = await source.node()
    await source.put(replace(APP_1, key="new-key"))
    await eventually(lambda: node.apps.by_key("new-key") is not None, source.within, "new key")
    assert node.apps.by_key("key-1") is None


async def test_listeners_hear_each_change_once_after_it_is_in_place(source: Source) -> None:
    await seeded(source, APP_1)
    node = await source.node()
    heard: list[tuple[str | None, str | None]] = []

    def listener(changes: Sequence[AppChange]) -> None:
        for change in changes:
            assert node.apps.by_id(change.app_id) == change.after  # already in place
            heard.append((_secret(change.before), _secret(change.after)))

    node.apps.listen(listener)
    await source.put(APP_2)
    await eventually(lambda: len(heard) == 1, source.within, "added")
    await source.put(replace(APP_2, secret="s2b"))
    await eventually(lambda: len(heard) == 2, source.within, "changed")
    await source.remove("2")
    await eventually(lambda: len(heard) == 3, source.within, "removed")
    assert heard == [(None, "secret-2"), ("secret-2", "s2b"), ("s2b", None)]


async def test_reload_reads_the_source_at_once(source: Source) -> None:
    await seeded(source, APP_1)
    node = await source.node()
    await source.put(APP_2)
    assert await node.reload()
    assert node.apps.by_id("2") == APP_2


async def test_invalid_app_keeps_its_last_good_version_and_is_counted(source: Source) -> None:
    await seeded(source, APP_1, APP_2)
    metrics = Metrics()
    node = await source.node(metrics)
    await source.corrupt("2")
    await eventually(lambda: _errors(metrics, node.name) >= 1, source.within, "load error counted")
    assert node.apps.by_id("2") == APP_2
    assert node.apps.by_id("1") == APP_1


# --- writes ---------------------------------------------------------------------------------------------------


async def test_file_store_refuses_writes(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    source = await _source("file", request, tmp_path)
    await seeded(source, APP_1)
    node = await source.node()
    try:
        for write in (node.create(APP_2), node.update(APP_1), node.delete("1")):
            with pytest.raises(ReadOnlyStore):
                await write
        assert node.apps.by_id("2") is None
    finally:
        await source.close()


async def test_a_write_is_in_the_writers_registry_when_it_returns(writable: Source) -> None:
    writer = await writable.writer()
    assert await writer.create(APP_1) == APP_1
    assert writer.apps.by_id("1") == APP_1
    await writer.update(replace(APP_1, enabled=False))
    assert writer.apps.by_id("1").enabled is False  # type: ignore[union-attr]
    await writer.delete("1")
    assert writer.apps.by_id("1") is None


async def test_create_with_a_taken_id_is_a_conflict_on_id(writable: Source) -> None:
    writer = await writable.writer()
    await writer.create(APP_1)
    with pytest.raises(AppConflict) as caught:
        await writer.create(replace(APP_1, key="other"))
    assert caught.value.field == "id"
    assert writer.apps.by_id("1") == APP_1


async def test_create_with_a_taken_key_is_a_conflict_on_key(writable: Source) -> None:
    writer = await writable.writer()
    await writer.create(APP_1)
    with pytest.raises(AppConflict) as caught:
        await writer.create(replace(APP_2, key="key-1"))
    assert caught.value.field == "key"
    assert writer.apps.by_id("2") is None


async def test_update_to_another_apps_key_is_a_conflict(writable: Source) -> None:
    writer = await writable.writer()
    await writer.create(APP_1)
    await writer.create(APP_2)
    with pytest.raises(AppConflict) as caught:
        await writer.update(replace(APP_2, key="key-1"))
    assert caught.value.field == "key"
    assert writer.apps.by_key("key-2") == APP_2


async def test_update_or_delete_of_a_missing_app_is_not_found(writable: Source) -> None:
    writer = await writable.writer()
    with pytest.raises(AppNotFound):
        await writer.update(APP_1)
    with pytest.raises(AppNotFound):
        await writer.delete("1")
    assert len(writer.apps) == 0


async def test_two_nodes_racing_for_one_key_let_only_one_win(writable: Source) -> None:
    first, second = await writable.node(), await writable.node()
    results = await asyncio.gather(
        first.create(App(id="a", key="same", secret="s")),
        second.create(App(id="b", key="same", secret="s")),
        return_exceptions=True,
    )
    assert sum(isinstance(r, AppConflict) for r in results) == 1
    await first.reload()
    assert first.apps.by_key("same") is not None


async def test_an_app_round_trips_every_field(writable: Source) -> None:
    writer = await writable.writer()
    full = App(
        id="9",
        key="k9",
        secret="s9",
        enabled=False,
        enable_client_messages=True,
        enable_user_authentication=True,
        user_authentication_timeout=12.5,
        enable_subscription_count=True,
        enable_watchlist_events=True,
        max_connections=7,
        max_backend_events_per_second=8,
        max_client_events_per_second=9,
        max_read_requests_per_second=10,
        encryption_master_key_base64="a" * 44,
    )
    full = app_from_mapping(
        {
            **app_to_mapping(full),
            "max_event_payload_in_kb": 3,
            "webhooks": [{"url": "http://127.0.0.1:1/h", "event_types": ["channel_occupied"], "headers": {"X": "1"}}],
        }
    )
    await writer.create(full)
    node = await writable.node()
    assert node.apps.by_id("9") == full


# --- Redis only -----------------------------------------------------------------------------------------------


async def test_redis_that_lost_its_data_gets_the_apps_back_from_the_nodes(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    source = await _source("redis", request, tmp_path)
    try:
        await seeded(source, APP_1, APP_2)
        metrics = Metrics()
        node = await source.node(metrics)
        await source.clients[0].flushall()  # a restart without persistence looks the same
        assert not await node.reload()
        assert node.apps.by_id("1") == APP_1 and node.apps.by_id("2") == APP_2
        assert _errors(metrics, "redis") >= 1
        client, data_key = source.clients[0], f"{{{source.prefix}:apps}}:data"
        await eventually_async(lambda: client.hlen(data_key), 2, "the apps written back")
        fresh = await source.node()  # a node started afterwards serves them too
        assert fresh.apps.by_id("1") == APP_1 and fresh.apps.by_id("2") == APP_2
        assert node.apps.by_id("1") == APP_1
    finally:
        await source.close()


async def test_redis_store_keys_share_one_hash_tag(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    source = await _source("redis", request, tmp_path)
    try:
        writer = await source.writer()
        await writer.create(APP_1)
        await writer.update(replace(APP_1, key="moved"))
        keys = {k.decode() if isinstance(k, bytes) else k for k in await source.clients[0].keys(f"*{source.prefix}*")}
        assert keys == {f"{{{source.prefix}:apps}}:{name}" for name in ("data", "keys", "written")}
    finally:
        await source.close()
