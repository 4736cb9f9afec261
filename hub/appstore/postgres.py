"""Apps in a PostgreSQL table (``postgres_schema.sql``, applied by ``hub apps migrate``).

Every node keeps the table in memory. A trigger NOTIFYs the id of every committed change on the
channel ``hub_apps_<table>``; a node LISTENing there re-reads the table (one SELECT) at once, every
``reload_seconds`` as a safety net, and after its LISTEN connection comes back. Reloads run one at a
time, and one asked for during another runs after it, so the last one always reads a state newer
than the last notification. Rows may be edited with plain SQL: the trigger sees those too.

Soketi's ``apps`` table is read as it is: its ``*_per_sec`` column names are ours, integer flags
(0/1) read as booleans, NULL means the default, and columns hub does not know are ignored.
``hub apps migrate`` upgrades such a table in place so hub can write to it.

Driver: psycopg 3 (async, typed, LISTEN/NOTIFY through ``notifies()``), one connection for queries
and one for LISTEN, each reopened after a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from importlib import resources
from typing import Any

import psycopg
import structlog
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from hub.apps import App, ConfigError, app_from_mapping, app_to_mapping
from hub.appstore.base import AppConflict, AppNotFound, AppStore, StoreUnavailable, stop_tasks
from hub.metrics import Metrics

log = structlog.get_logger("hub.appstore.postgres")

TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
# Waits between reconnection attempts: doubling from the first to the last.
RECONNECT_SECONDS = (0.5, 5.0)
# After a notification, wait this long for more before reloading once for all of them.
BURST_SECONDS = 0.01
CONNECT_TIMEOUT = 5

# Our field name -> Soketi's (and our table's) column name, where they differ.
_COLUMN_OF = {
    "max_backend_events_per_second": "max_backend_events_per_sec",
    "max_client_events_per_second": "max_client_events_per_sec",
    "max_read_requests_per_second": "max_read_req_per_sec",
}
_FIELD_OF = {column: name for name, column in _COLUMN_OF.items()}
_BOOLEAN_FIELDS = {
    "enabled",
    "enable_client_messages",
    "enable_user_authentication",
    "enable_subscription_count",
    "enable_watchlist_events",
}
# Every field an app has (the apps-file keys); other columns of the table are ignored.
_FIELDS = {*app_to_mapping(App(id="-", key="-", secret="-")), "encryption_master_key_base64"}


def schema_names(table: str) -> dict[str, sql.Composable]:
    """The identifiers the schema SQL is filled in with, derived from the table name."""
    if not TABLE_NAME.match(table):
        raise ConfigError(f"postgres table must be a lower-case SQL name (letters, digits, _), not {table!r}")
    return {
        "table": sql.Identifier(table),
        "key_index": sql.Identifier(f"{table}_key_unique"),
        "notify_function": sql.Identifier(f"{table}_hub_notify"),
        "trigger": sql.Identifier(f"{table}_hub_notify"),
        "channel": sql.Literal(notify_channel(table)),
    }


def notify_channel(table: str) -> str:
    """The NOTIFY channel of a table's changes."""
    return f"hub_apps_{table}"


def row_to_mapping(row: dict[str, Any]) -> dict[str, Any]:
    """A table row as an apps-file entry: our field names, NULLs dropped, 0/1 flags as booleans."""
    out: dict[str, Any] = {}
    for column, value in row.items():
        name = _FIELD_OF.get(column, column)
        if value is None or name not in _FIELDS:
            continue  # NULL is the default; a column hub does not know (Soketi's enable_stats, ...) is not an app field
        if name in _BOOLEAN_FIELDS and isinstance(value, int) and not isinstance(value, bool):
            value = value != 0
        if name == "webhooks" and isinstance(value, str):
            value = json.loads(value)
        if name == "user_authentication_timeout" and not isinstance(value, bool):
            value = float(value)
        out[name] = value
    return out


def app_to_row(app: App) -> dict[str, Any]:
    """The columns an app is written as."""
    row = {_COLUMN_OF.get(name, name): value for name, value in app_to_mapping(app).items()}
    row["webhooks"] = Jsonb(row["webhooks"])
    return row


class PostgresAppStore(AppStore):
    """Apps in PostgreSQL; see the module docstring."""

    name = "postgres"
    writable = True

    def __init__(
        self, url: str, table: str = "apps", metrics: Metrics | None = None, *, reload_seconds: float = 10.0
    ) -> None:
        super().__init__(metrics)
        self._url = url
        self._table = table
        self._names = schema_names(table)
        self._reload_seconds = reload_seconds
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self._conn_lock = asyncio.Lock()
        self._reload_lock = asyncio.Lock()
        self._pending = False
        self._last_ok = True
        self._known_columns: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    # -- connections ------------------------------------------------------------------------------------

    async def _connect(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        return await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT
        )

    async def _query(self, query: sql.Composed, params: dict[str, Any] | None = None) -> tuple[list[Any], int]:
        """Run one statement on the query connection (opened, or reopened after a failure, on demand)."""
        async with self._conn_lock:
            if self._conn is None or self._conn.closed:
                self._conn = await self._connect()
            try:
                cursor = await self._conn.execute(query, params)
                rows = await cursor.fetchall() if cursor.description is not None else []
                return rows, cursor.rowcount
            except psycopg.OperationalError:
                await self._conn.close()
                self._conn = None
                raise

    # -- loading ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load every app (ConfigError if the table cannot be read), then follow changes."""
        try:
            rows = await self._select_all()
        except psycopg.errors.UndefinedTable:
            raise ConfigError(f"PostgreSQL has no table {self._table!r}: run `hub apps migrate`") from None
        except psycopg.Error as exc:
            raise ConfigError(f"cannot load apps from PostgreSQL: {exc}") from None
        self.apps.replace(self._parse_rows(rows))
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._follow(), name="postgres-app-store-follow"),
            loop.create_task(self._periodic(), name="postgres-app-store-reload"),
        ]

    async def close(self) -> None:
        """Stop following changes and close the connections."""
        await stop_tasks(self._tasks)
        self._tasks = []
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _select_all(self) -> list[dict[str, Any]]:
        rows, _ = await self._query(sql.SQL("SELECT * FROM {table}").format(**self._names))
        return rows

    def _parse_rows(self, rows: list[dict[str, Any]]) -> list[App]:
        apps: list[App] = []
        for row in rows:
            app_id = str(row.get("id"))
            try:
                apps.append(app_from_mapping(row_to_mapping(row)))
            except (ConfigError, ValueError, TypeError) as exc:
                self._failed(str(exc), app_id=app_id)
                current = self.apps.by_id(app_id)
                if current is not None:
                    apps.append(current)
        return apps

    async def reload(self) -> bool:
        """Read the table now; reloads run one at a time, and one that starts after this call covers it."""
        self._pending = True
        async with self._reload_lock:
            if not self._pending:
                return self._last_ok
            while self._pending:
                self._pending = False
                try:
                    rows = await self._select_all()
                except psycopg.Error as exc:
                    self._failed(f"cannot read apps from PostgreSQL: {exc}")
                    self._last_ok = False
                    return False
                self._last_ok = self._replace(self._parse_rows(rows))
            return self._last_ok

    async def _follow(self) -> None:
        """LISTEN for changes and reload on each burst of them; after a lost connection, reconnect and reload."""
        listen = sql.SQL("LISTEN {}").format(sql.Identifier(notify_channel(self._table)))
        backoff = RECONNECT_SECONDS[0]
        while True:
            conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
            try:
                conn = await self._connect()
                await conn.execute(listen)
                await self.reload()  # changes made while we were not listening
                backoff = RECONNECT_SECONDS[0]
                while True:
                    first = [n async for n in conn.notifies(timeout=self._reload_seconds, stop_after=1)]
                    if not first:
                        continue
                    async for _ in conn.notifies(timeout=BURST_SECONDS):
                        pass  # the rest of a burst of changes costs the same one reload
                    await self.reload()
            except psycopg.Error as exc:
                log.warning("app_store_listen_lost", store=self.name, error=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RECONNECT_SECONDS[1])
            finally:
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        await conn.close()

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self._reload_seconds)
            await self.reload()

    # -- writes -----------------------------------------------------------------------------------------

    async def _write(self, query: sql.Composed, params: dict[str, Any], app_id: str, key: str) -> int:
        try:
            _, count = await self._query(query, params)
        except psycopg.errors.UniqueViolation as exc:
            if (exc.diag.constraint_name or "").endswith("_pkey"):
                raise AppConflict(f"An app with id {app_id} exists already.", "id") from None
            raise AppConflict(f"Another app has the key {key}.", "key") from None
        except psycopg.Error as exc:
            raise StoreUnavailable(f"PostgreSQL did not accept the change: {exc}") from None
        await self.reload()
        return count

    async def create(self, app: App) -> App:
        """INSERT the app."""
        row = app_to_row(app)
        query = sql.SQL("INSERT INTO {table} ({columns}) VALUES ({values})").format(
            columns=sql.SQL(", ").join(sql.Identifier(c) for c in row),
            values=sql.SQL(", ").join(sql.Placeholder(c) for c in row),
            **self._names,
        )
        await self._write(query, row, app.id, app.key)
        return app

    async def update(self, app: App) -> App:
        """UPDATE every column of the app's row."""
        row = app_to_row(app)
        query = sql.SQL("UPDATE {table} SET {assignments}, updated_at = now() WHERE id = {id}").format(
            assignments=sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(c)) for c in row if c != "id"
            ),
            id=sql.Placeholder("id"),
            **self._names,
        )
        if await self._write(query, row, app.id, app.key) == 0:
            raise AppNotFound(f"The app {app.id} could not be found.")
        return app

    async def delete(self, app_id: str) -> None:
        """DELETE the app's row."""
        query = sql.SQL("DELETE FROM {table} WHERE id = {id}").format(id=sql.Placeholder("id"), **self._names)
        if await self._write(query, {"id": app_id}, app_id, "") == 0:
            raise AppNotFound(f"The app {app_id} could not be found.")


async def migrate(url: str, table: str = "apps") -> list[str]:
    """Create or upgrade the app table; return what was done beyond the schema SQL (Soketi upgrades)."""
    names = schema_names(table)
    text = resources.files("hub.appstore").joinpath("postgres_schema.sql").read_text()
    done: list[str] = []
    conn = await psycopg.AsyncConnection.connect(url, connect_timeout=CONNECT_TIMEOUT)
    async with conn, conn.transaction():
        await conn.execute(sql.SQL(text).format(**names))
        cursor = await conn.execute(
            "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s",
            (table,),
        )
        ours = {_COLUMN_OF.get(n, n) for n in app_to_mapping(App(id="x", key="x", secret="x"))} | {"updated_at"}
        for column, data_type, nullable, default in await cursor.fetchall():
            if column in _BOOLEAN_FIELDS and data_type in ("smallint", "integer", "bigint"):
                # Soketi keeps flags as 0/1 integers; hub writes booleans.
                await conn.execute(
                    sql.SQL(
                        "ALTER TABLE {table} ALTER COLUMN {c} DROP DEFAULT, "
                        "ALTER COLUMN {c} TYPE boolean USING {c} <> 0"
                    ).format(c=sql.Identifier(column), **names)
                )
                done.append(f"{column}: {data_type} -> boolean")
            elif column not in ours and nullable == "NO" and default is None:
                # A column hub does not know and would never fill in must not refuse hub's INSERTs.
                await conn.execute(
                    sql.SQL("ALTER TABLE {table} ALTER COLUMN {c} DROP NOT NULL").format(
                        c=sql.Identifier(column), **names
                    )
                )
                done.append(f"{column}: NOT NULL dropped (hub does not write it)")
    return done
