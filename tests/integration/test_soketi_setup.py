"""The seed's Soketi setup, unchanged, on hub: `hub serve --soketi-config soketi.json`, and the same file for a cluster.

The seed (../shared/seed/) starts `soketi start --config=soketi.json` with the app its Laravel `.env` names
(`local-app` / `local-key` / `local-secret`); the Laravel backend broadcasts `message.sent` on
`private-chat.{a}.{b}` with `toOthers()`, and the Flutter app listens on that channel. Here Laravel Echo
and pusher-js play the app (the Flutter SDK needs a device), the backend's publish is signed as
pusher-php-server signs it (the Python SDK refuses a non-numeric app id like `local-app`), and channel
auth comes from the `pusher` SDK. On the clusters, the same soketi.json with Soketi's Redis adapter
starts two `hub ws` nodes and one `hub ingest` over a real redis-server, over Sentinel (Soketi's
`sentinels` and `name`), or over a real 3+3 Redis Cluster (Soketi's `clusterMode` and `clusterNodes`).
"""

from __future__ import annotations

import json
import os
import random
import ssl
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from tests.support.auth_server import AuthServer
from tests.support.certificates import make_certificates
from tests.support.js_clients import JsClients
from tests.support.ports import LOOPBACK, free_port
from tests.support.postgres_server import PostgresServer
from tests.support.processes import ManagedProcess, http_ready, hub_command
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_sentinel import RedisSentinel
from tests.support.redis_server import RedisServer
from tests.support.request_signing import signed_params
from tests.support.requirements import require_executable

APP_ID, APP_KEY, APP_SECRET = "local-app", "local-key", "local-secret"  # the seed's .env

# A soketi.json as the seed's users write it: Soketi's flat app list, client messages on, a few limits.
SEED_SOKETI_JSON: dict[str, Any] = {
    "debug": True,
    "port": 6001,
    "appManager.array.apps": [
        {
            "id": APP_ID,
            "key": APP_KEY,
            "secret": APP_SECRET,
            "maxConnections": 100,
            "enableClientMessages": True,
            "enabled": True,
            "maxBackendEventsPerSecond": 100,
            "maxClientEventsPerSecond": 100,
            "maxReadRequestsPerSecond": 100,
            "webhooks": [],
        }
    ],
    "metrics": {"enabled": False, "prometheus": {"prefix": "soketi_"}},
}


@dataclass
class SoketiDeployment:
    """hub started from a Soketi config: where clients connect and where the backend publishes."""

    ws_ports: list[int]
    api_port: int
    processes: list[ManagedProcess] = field(default_factory=list)
    redis: RedisServer | RedisSentinel | RedisCluster | None = None

    def close(self) -> None:
        for process in reversed(self.processes):
            process.close()
        if self.redis is not None:
            self.redis.close()


def write_soketi_json(doc: dict[str, Any]) -> Path:
    path = Path(tempfile.mkdtemp(prefix="hub-soketi-")) / "soketi.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


def start_from_soketi(role: str, config: Path, port: int) -> ManagedProcess:
    """`hub <role> --soketi-config soketi.json`; only the test's loopback address and free port are added."""
    argv = hub_command(role, "--soketi-config", str(config), "--host", LOOPBACK, "--port", str(port))
    process = ManagedProcess(argv, name=f"hub-soketi-{role}-{port}").start()
    process.wait_ready(http_ready(f"http://{LOOPBACK}:{port}/ready"))
    return process


@pytest.fixture(scope="module", params=["embedded", "cluster", "sentinel", "rediscluster"])
def deployment(request: pytest.FixtureRequest) -> Iterator[SoketiDeployment]:
    if request.param == "embedded":
        port = free_port()
        running = SoketiDeployment([port], port)
        try:
            running.processes.append(start_from_soketi("serve", write_soketi_json(SEED_SOKETI_JSON), port))
            yield running
        finally:
            running.close()
        return
    require_executable("redis-server")
    redis: RedisServer | RedisSentinel | RedisCluster
    adapter: dict[str, Any] = {"driver": "redis"}
    if request.param == "cluster":
        redis = RedisServer().start()
        database: dict[str, Any] = {"redis": {"host": redis.host, "port": redis.port}}
    elif request.param == "sentinel":
        # Soketi's Sentinel form: the sentinels and the primary's name (hub: a redis+sentinel:// URL).
        redis = RedisSentinel().start()
        sentinels = [{"host": LOOPBACK, "port": port} for port in redis.sentinel_ports]
        database = {"redis": {"sentinels": sentinels, "name": redis.service}}
    else:
        # Soketi's Redis Cluster form: clusterMode and the seed nodes (hub: a redis+cluster:// URL).
        require_executable("redis-cli")
        redis = RedisCluster().start()
        database = {"redis": {"clusterNodes": [{"host": LOOPBACK, "port": port} for port in redis.ports[:3]]}}
        adapter["redis"] = {"clusterMode": True}
    config = write_soketi_json(
        {**SEED_SOKETI_JSON, "adapter": adapter, "queue": {"driver": "redis"}, "database": database}
    )
    running = SoketiDeployment([free_port(), free_port()], free_port(), redis=redis)
    try:
        for port in running.ws_ports:
            running.processes.append(start_from_soketi("ws", config, port))
        running.processes.append(start_from_soketi("ingest", config, running.api_port))
        yield running
    finally:
        running.close()


@pytest.fixture
async def auth() -> AsyncIterator[AuthServer]:
    """The Laravel app's /broadcasting/auth, signing with the seed's key and secret (via the `pusher` SDK)."""
    async with AuthServer(key=APP_KEY, secret=APP_SECRET) as server:
        yield server


async def broadcast(deployment: SoketiDeployment, channel: str, event: str, data: Any, socket_id: str) -> int:
    """Laravel's `broadcast(new MessageSent(...))->toOthers()`: POST /apps/local-app/events."""
    path = f"/apps/{APP_ID}/events"
    body = json.dumps({"name": event, "channels": [channel], "data": json.dumps(data), "socket_id": socket_id}).encode()
    params = signed_params("POST", path, body, key=APP_KEY, secret=APP_SECRET)
    url = f"http://{LOOPBACK}:{deployment.api_port}{path}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, params=params, data=body, headers={"Content-Type": "application/json"}) as response,
    ):
        return response.status


async def test_the_seeds_chat_flow_runs_on_hub_started_from_its_soketi_json(
    deployment: SoketiDeployment, js: JsClients, auth: AuthServer
) -> None:
    a = random.randrange(1, 10**9)
    channel = f"private-chat.{a}.{a + 1}"
    last = len(deployment.ws_ports) - 1
    # Mitra with Laravel Echo, Bumdes with plain pusher-js (as the Flutter app binds the channel), on two nodes.
    mitra = await js.connect(
        "mitra", port=deployment.ws_ports[0], key=APP_KEY, auth_url=auth.channel_auth_url, echo=True
    )
    assert await js.echo_listen("mitra", "private", channel.removeprefix("private-"), ".message.sent") == channel
    await js.connect("bumdes", port=deployment.ws_ports[last], key=APP_KEY, auth_url=auth.channel_auth_url)
    await js.subscribe("bumdes", channel)
    mark = js.mark()
    message = {"message": {"id": 1, "body": "Halo!", "sender": {"id": a, "name": "Mitra"}}}

    assert await broadcast(deployment, channel, "message.sent", message, socket_id=mitra) == 200

    record = await js.wait_for("bumdes", source="channel", channel=channel, event="message.sent", since=mark)
    assert record.data == message
    await js.expect_none("mitra", source="message", channel=channel, event="message.sent", since=mark, within=0.3)
    # enableClientMessages from soketi.json: typing indicators between the two go through.
    await js.trigger("bumdes", channel, "client-typing", {"typing": True})
    typing = await js.wait_for("mitra", source="message", channel=channel, event="client-typing", since=mark)
    assert typing.data == {"typing": True}


def test_start_names_the_soketi_options_hub_does_not_apply_in_one_warning_line(
    deployment: SoketiDeployment,
) -> None:
    for process in deployment.processes:
        lines = [line for line in process.output().splitlines() if "soketi_options_not_applied" in line]
        assert len(lines) == 1, process.output()
        assert "metrics.prometheus.prefix" in lines[0]


def run_hub(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        hub_command(*args),
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=15,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_a_soketi_setup_hub_cannot_serve_stops_start_with_one_line_naming_the_option() -> None:
    config = write_soketi_json({**SEED_SOKETI_JSON, "appManager.driver": "mysql"})
    result = run_hub("serve", "--soketi-config", str(config), "--port", str(free_port()), "--metrics-port", "0")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "appManager.driver" in line and "mysql" in line


def test_soketi_config_command_prints_the_equivalent_apps_file_and_flags(tmp_path: Path) -> None:
    config = write_soketi_json(SEED_SOKETI_JSON)
    result = run_hub("soketi-config", str(config), env={"SOKETI_PORT": "6002"})
    assert result.returncode == 0, result.stderr
    apps = json.loads(result.stdout)["apps"]
    assert [(a["id"], a["key"], a["secret"], a["enable_client_messages"]) for a in apps] == [
        (APP_ID, APP_KEY, APP_SECRET, True)
    ]
    assert "hub serve --apps-file apps.json" in result.stderr
    assert "--port 6002" in result.stderr and "--log-level debug" in result.stderr
    assert "not applied: metrics.prometheus.prefix" in result.stderr

    # The printed setup starts and serves the seed's app.
    (tmp_path / "apps.json").write_text(result.stdout)
    flags = next(line for line in result.stderr.splitlines() if line.startswith("hub serve")).split()[2:]
    port = free_port()
    flags[flags.index("--port") + 1] = str(port)
    argv = hub_command("serve", *flags, "--host", LOOPBACK)
    with ManagedProcess(argv, cwd=tmp_path, name="hub-converted") as process:
        process.wait_ready(http_ready(f"http://{LOOPBACK}:{port}/ready"))
        path = f"/apps/{APP_ID}/channels"
        query = urllib.parse.urlencode(signed_params("GET", path, b"", key=APP_KEY, secret=APP_SECRET))
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}{path}?{query}") as answer:
            assert json.loads(answer.read()) == {"channels": {}}


def test_soketi_ssl_options_serve_https_with_the_given_certificate(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    port = free_port()
    config = write_soketi_json(
        {**SEED_SOKETI_JSON, "ssl": {"certPath": str(certs["server"]), "keyPath": str(certs["server-key"])}}
    )
    argv = hub_command("serve", "--soketi-config", str(config), "--host", LOOPBACK, "--port", str(port))
    trust = ssl.create_default_context(cafile=str(certs["ca"]))
    with ManagedProcess(argv, name="hub-soketi-tls") as process:
        process.wait_ready(lambda: _https_ok(f"https://{LOOPBACK}:{port}/ready", trust))
        path = f"/apps/{APP_ID}/channels"
        query = urllib.parse.urlencode(signed_params("GET", path, b"", key=APP_KEY, secret=APP_SECRET))
        with urllib.request.urlopen(f"https://{LOOPBACK}:{port}{path}?{query}", context=trust) as answer:
            assert json.loads(answer.read()) == {"channels": {}}


def _https_ok(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5, context=context) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


# Soketi's PostgreSQL apps table as its documentation creates it: flags as 0/1 smallints, *_per_sec names.
SOKETI_APPS_TABLE = """
CREATE TABLE apps (
    id varchar(255) PRIMARY KEY,
    key varchar(255) NOT NULL,
    secret varchar(255) NOT NULL,
    max_connections integer NOT NULL,
    enable_client_messages smallint NOT NULL,
    enabled smallint NOT NULL,
    max_backend_events_per_sec integer NOT NULL,
    max_client_events_per_sec integer NOT NULL,
    max_read_req_per_sec integer NOT NULL,
    webhooks json,
    max_presence_members_per_channel integer DEFAULT NULL,
    max_presence_member_size_in_kb integer DEFAULT NULL,
    max_channel_name_length integer DEFAULT NULL,
    max_event_channels_at_once integer DEFAULT NULL,
    max_event_name_length integer DEFAULT NULL,
    max_event_payload_in_kb integer DEFAULT NULL,
    max_event_batch_size integer DEFAULT NULL,
    enable_user_authentication smallint NOT NULL
)
"""


async def test_soketis_postgres_app_manager_serves_the_apps_of_its_table(js: JsClients, auth: AuthServer) -> None:
    with PostgresServer() as database:
        with psycopg.connect(database.url, autocommit=True) as conn:
            conn.execute(SOKETI_APPS_TABLE)
            conn.execute(
                "INSERT INTO apps VALUES (%s, %s, %s, -1, 1, 1, -1, -1, -1, '[]', NULL, NULL, NULL, NULL, NULL, NULL,"
                " NULL, 0)",
                (APP_ID, APP_KEY, APP_SECRET),
            )
        connection = {"host": LOOPBACK, "port": database.port, "user": "hub", "password": "", "database": "postgres"}
        config = write_soketi_json(
            {"port": 6001, "appManager": {"driver": "postgres"}, "database": {"postgres": connection}}
        )
        port = free_port()
        deployment = SoketiDeployment([port], port)
        try:
            deployment.processes.append(start_from_soketi("serve", config, port))
            channel = f"private-chat.{random.randrange(1, 10**9)}.1"
            await js.connect("flutter", port=port, key=APP_KEY, auth_url=auth.channel_auth_url)
            await js.subscribe("flutter", channel)

            assert await broadcast(deployment, channel, "message.sent", {"body": "from the table"}, "1.1") == 200

            record = await js.wait_for("flutter", source="channel", channel=channel, event="message.sent")
            assert record.data == {"body": "from the table"}
        finally:
            deployment.close()
