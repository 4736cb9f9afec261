"""`hub apps migrate`: creates hub's table, runs again harmlessly, and upgrades a Soketi table in place."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator

import psycopg
import pytest

from hub.apps import App
from hub.appstore.postgres import PostgresAppStore
from tests.support.postgres_server import PostgresServer
from tests.support.processes import hub_command

# An older Soketi apps table: 0/1 smallint flags, *_per_sec names, and a column hub does not know.
SOKETI_TABLE = """
CREATE TABLE apps (
    id varchar(255) PRIMARY KEY,
    "key" varchar(255) NOT NULL,
    secret varchar(255) NOT NULL,
    max_connections integer NOT NULL,
    enable_stats smallint NOT NULL,
    enable_client_messages smallint NOT NULL,
    enabled smallint NOT NULL,
    max_backend_events_per_sec integer NOT NULL,
    max_client_events_per_sec integer NOT NULL,
    max_read_req_per_sec integer NOT NULL,
    webhooks json
)
"""


@pytest.fixture
def database() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test alone."""
    with PostgresServer() as server:
        yield server


def _migrate(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        hub_command("apps", "migrate", "--postgres-url", url), capture_output=True, text=True, timeout=60, check=False
    )


def test_migrate_creates_the_table_and_may_run_again(database: PostgresServer) -> None:
    first, second = _migrate(database.url), _migrate(database.url)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert second.stdout.strip() == "table apps is ready"
    with psycopg.connect(database.url) as conn:
        columns = {
            row[0]
            for row in conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'apps'")
        }
    assert {"id", "key", "secret", "enabled", "max_backend_events_per_sec", "webhooks", "updated_at"} <= columns


def test_migrate_without_a_database_url_says_so() -> None:
    result = subprocess.run(
        hub_command("apps", "migrate"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "needs --postgres-url" in result.stderr


async def test_migrated_soketi_table_keeps_its_apps_and_takes_hubs_writes(database: PostgresServer) -> None:
    with psycopg.connect(database.url, autocommit=True) as conn:
        conn.execute(SOKETI_TABLE)
        conn.execute("INSERT INTO apps VALUES ('1', 'soketi-key', 'soketi-secret', 100, 1, 1, 1, 5, -1, -1, '[]')")
    result = await asyncio.to_thread(_migrate, database.url)
    assert result.returncode == 0, result.stderr
    assert "upgraded enabled: smallint -> boolean" in result.stdout
    assert "upgraded enable_stats: NOT NULL dropped (hub does not write it)" in result.stdout
    node, writer = PostgresAppStore(database.url), PostgresAppStore(database.url)
    await node.start()
    await writer.start()
    try:
        app = node.apps.by_id("1")
        assert app is not None
        assert (app.key, app.enabled, app.enable_client_messages, app.max_connections) == (
            "soketi-key",
            True,
            True,
            100,
        )
        assert app.max_backend_events_per_second == 5
        await writer.create(App(id="2", key="hub-key", secret="hub-secret"))
        # The trigger the migration added tells the other node at once (its periodic reload is 10 s away).
        deadline = time.monotonic() + 1.0
        while node.apps.by_id("2") is None:
            assert time.monotonic() < deadline, "the new app did not reach the other node within 1 s"
            await asyncio.sleep(0.01)
    finally:
        await node.close()
        await writer.close()
