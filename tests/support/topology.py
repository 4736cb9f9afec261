"""The deployments the integration suite runs against: one `hub serve`, or a Redis cluster of nodes.

`embedded`: one `hub serve` process (in-memory broker and state).
`cluster`: a real `redis-server`, two `hub ws` nodes and one `hub ingest` node, all subprocesses.
`rediscluster`: the same two `hub ws` and one `hub ingest` over a Redis Cluster of 3 primaries and 3
replicas (sharded pub/sub, every key layout and script exercised across slots).
Tests address "node i" with `ws_port(i)`; on `embedded` every index is the one process, so the same
test checks cross-node behaviour on the cluster and plain behaviour on a single node.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pusher

from hub.redis_topology import CommandClient, parse_topology
from tests.support.ports import LOOPBACK, free_port
from tests.support.processes import ManagedProcess, http_ready, hub_command
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer
from tests.support.requirements import require_executable

APP_ID = "1"
APP_KEY = "app-key"
APP_SECRET = "app-secret"

# Apps every topology serves; tests pick the one whose options they exercise.
APPS: list[dict[str, Any]] = [
    {"id": "1", "key": "app-key", "secret": "app-secret", "enable_client_messages": True},
    {
        "id": "2",
        "key": "limited-key",
        "secret": "limited-secret",
        "enable_client_messages": True,
        "max_presence_members_per_channel": 2,
        "max_client_events_per_second": 3,
        "max_event_payload_in_kb": 1,
        "max_connections": 2,
        "max_channel_name_length": 40,
    },
    {"id": "3", "key": "disabled-key", "secret": "disabled-secret", "enabled": False},
    {"id": "4", "key": "quiet-key", "secret": "quiet-secret", "enable_client_messages": False},
    # A member limit without a connection limit: a third presence member needs a third socket, which
    # app 2's `max_connections: 2` would refuse before the member limit is ever reached.
    {"id": "5", "key": "crowded-key", "secret": "crowded-secret", "max_presence_members_per_channel": 2},
]

# What `running_topology` starts; integration fixtures are parametrized over these.
TOPOLOGIES = ("embedded", "cluster", "rediscluster")

# Short liveness settings so reaping is observable within a test's time budget.
NODE_TIMEOUT_SECONDS = 3


def write_apps_file(directory: Path, apps: Sequence[dict[str, Any]] = APPS) -> Path:
    """Write an apps file and return its path."""
    path = directory / "apps.json"
    path.write_text(json.dumps({"apps": list(apps)}))
    return path


@dataclass
class Topology:
    """A running deployment: where clients connect, where backends publish, and its processes."""

    name: str
    ws_ports: list[int]
    api_port: int
    processes: list[ManagedProcess] = field(default_factory=list)
    ws_processes: list[ManagedProcess] = field(default_factory=list)
    redis: Any = None
    apps_file: Path | None = None

    @property
    def clustered(self) -> bool:
        """Whether nodes talk through Redis."""
        return self.redis is not None

    def redis_client(self) -> CommandClient:
        """A redis-py client of this deployment's Redis (any topology), for looking behind hub's back."""
        assert self.redis is not None
        return parse_topology(self.redis.url).command_client(timeout=5.0)

    def ws_port(self, node: int = 0) -> int:
        """The WebSocket port of node ``node`` (any index maps to the one process when embedded)."""
        return self.ws_ports[node % len(self.ws_ports)]

    def sdk(self, app_id: str = APP_ID, key: str = APP_KEY, secret: str = APP_SECRET) -> pusher.Pusher:
        """The official Python server SDK pointed at this deployment's HTTP API."""
        return pusher.Pusher(app_id=app_id, key=key, secret=secret, host=LOOPBACK, port=self.api_port, ssl=False)

    def api_url(self, path: str) -> str:
        """Absolute URL of an HTTP API path."""
        return f"http://{LOOPBACK}:{self.api_port}{path}"

    def close(self) -> None:
        """Stop every process this topology started, by pid."""
        for process in reversed(self.processes):
            process.close()
        if self.redis is not None:
            self.redis.close()


def _hub(role: str, port: int, apps_file: Path, *extra: str) -> ManagedProcess:
    argv = hub_command(
        role, "--host", LOOPBACK, "--port", str(port), "--metrics-port", "0", "--apps-file", str(apps_file), *extra
    )
    return ManagedProcess(argv, name=f"hub-{role}-{port}").start()


def start_embedded(workdir: Path | None = None, *extra: str, apps: Sequence[dict[str, Any]] = APPS) -> Topology:
    """One `hub serve` with the test apps (or `apps`, for tests that need their own flags or webhooks)."""
    directory = workdir or Path(tempfile.mkdtemp(prefix="hub-embedded-"))
    apps_file = write_apps_file(directory, apps)
    port = free_port()
    process = _hub("serve", port, apps_file, *extra)
    topology = Topology("embedded", [port], port, [process], [process], apps_file=apps_file)
    try:
        process.wait_ready(http_ready(f"http://{LOOPBACK}:{port}/ready"))
    except BaseException:
        topology.close()
        raise
    return topology


def start_ws_node(topology: Topology, port: int | None = None, *extra: str) -> ManagedProcess:
    """Start (or restart) a `hub ws` node of a clustered topology and wait until it is ready."""
    assert topology.redis is not None and topology.apps_file is not None
    port = port or free_port()
    process = _hub(
        "ws",
        port,
        topology.apps_file,
        "--redis-url",
        topology.redis.url,
        "--node-timeout",
        str(NODE_TIMEOUT_SECONDS),
        *extra,
    )
    topology.processes.append(process)
    process.wait_ready(http_ready(f"http://{LOOPBACK}:{port}/ready"))
    return process


def start_ingest_node(topology: Topology, port: int | None = None, *extra: str) -> ManagedProcess:
    """Start (or restart) a `hub ingest` node of a clustered topology and wait until it is ready."""
    assert topology.redis is not None and topology.apps_file is not None
    port = port or free_port()
    process = _hub("ingest", port, topology.apps_file, "--redis-url", topology.redis.url, *extra)
    topology.processes.append(process)
    process.wait_ready(http_ready(f"http://{LOOPBACK}:{port}/ready"))
    return process


def start_cluster(
    redis: Any,
    workdir: Path | None = None,
    ws_nodes: int = 2,
    *,
    apps: Sequence[dict[str, Any]] = APPS,
    extra: Sequence[str] = (),
) -> Topology:
    """`ws_nodes` `hub ws` and one `hub ingest` over the given running redis-server, serving `apps`.

    `extra` flags go to every node.
    """
    directory = workdir or Path(tempfile.mkdtemp(prefix="hub-cluster-"))
    apps_file = write_apps_file(directory, apps)
    api_port = free_port()
    topology = Topology("cluster", [], api_port, redis=redis, apps_file=apps_file)
    try:
        for _ in range(ws_nodes):
            port = free_port()
            topology.ws_processes.append(start_ws_node(topology, port, *extra))
            topology.ws_ports.append(port)
        start_ingest_node(topology, api_port, *extra)
    except BaseException:
        topology.close()
        raise
    return topology


@contextmanager
def running_topology(
    kind: str, apps: Sequence[dict[str, Any]] = APPS, workdir: Path | None = None, extra: Sequence[str] = ()
) -> Iterator[Topology]:
    """Start topology `kind` (see TOPOLOGIES) serving `apps`; close it on exit.

    `extra` flags go to every hub process. "cluster" runs over a fresh redis-server, "rediscluster" over a
    fresh 3+3 Redis Cluster; both skip the test (fail it in CI) when redis-server (or redis-cli) is missing.
    """
    if kind == "embedded":
        running = start_embedded(workdir, *extra, apps=apps)
    elif kind == "cluster":
        require_executable("redis-server")
        running = start_cluster(RedisServer().start(), workdir, apps=apps, extra=extra)
    elif kind == "rediscluster":
        require_executable("redis-server")
        require_executable("redis-cli")
        running = start_cluster(RedisCluster().start(), workdir, apps=apps, extra=extra)
        running.name = kind
    else:
        raise ValueError(f"unknown topology {kind!r}; expected one of {TOPOLOGIES}")
    try:
        yield running
    finally:
        running.close()
