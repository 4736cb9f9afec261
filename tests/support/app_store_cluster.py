"""A running cluster whose apps live in Redis or PostgreSQL: 2 `hub ws` + 1 `hub ingest`, each with an admin port.

    with RedisServer() as redis, StoreCluster(redis.url, ["--app-store", "redis"]) as cluster:
        cluster.ws_ports, cluster.api_port   # where clients and backends go
        cluster.admin_url(0)                 # node 0's admin API (nodes: ws 0, ws 1, then the ingest node)
        cluster.hub_apps(0, "add", "id=7")   # `hub apps ...` against node 0's admin API

Unlike tests/support/topology.py (apps from a file), the cluster starts with no apps at all: tests
create them through the admin API, which is the point.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from tests.support.ports import LOOPBACK, free_port
from tests.support.processes import ManagedProcess, http_ready, hub_command

ADMIN_TOKEN = "test-admin-token-0123456789"
NODE_TIMEOUT_SECONDS = 3


class StoreCluster:
    """Two ws nodes and one ingest node over one Redis, all following one app store."""

    def __init__(self, redis_url: str, store_args: Sequence[str], *, ws_nodes: int = 2) -> None:
        """Describe the cluster; ``store_args`` choose the store (``--app-store redis``, or postgres and its URL)."""
        self.redis_url = redis_url
        self.store_args = list(store_args)
        self.ws_ports = [free_port() for _ in range(ws_nodes)]
        self.api_port = free_port()
        self.admin_ports = [free_port() for _ in range(ws_nodes + 1)]
        self.processes: list[ManagedProcess] = []

    def start(self) -> Self:
        """Start every node and wait until each is ready."""
        roles = [("ws", port) for port in self.ws_ports] + [("ingest", self.api_port)]
        try:
            for (role, port), admin_port in zip(roles, self.admin_ports, strict=True):
                argv = hub_command(
                    role,
                    "--host",
                    LOOPBACK,
                    "--port",
                    str(port),
                    "--metrics-port",
                    "0",
                    "--admin-port",
                    str(admin_port),
                    "--redis-url",
                    self.redis_url,
                    "--node-timeout",
                    str(NODE_TIMEOUT_SECONDS),
                    *self.store_args,
                )
                process = ManagedProcess(argv, env={"HUB_ADMIN_TOKEN": ADMIN_TOKEN}, name=f"hub-{role}-{port}").start()
                self.processes.append(process)
                process.wait_ready(http_ready(f"http://{LOOPBACK}:{port}/ready"))
        except BaseException:
            self.close()
            raise
        return self

    def admin_url(self, node: int) -> str:
        """The admin API of node ``node`` (ws nodes first, the ingest node last)."""
        return f"http://{LOOPBACK}:{self.admin_ports[node]}"

    def api_url(self, path: str) -> str:
        """Absolute URL of an HTTP API path on the ingest node."""
        return f"http://{LOOPBACK}:{self.api_port}{path}"

    def hub_apps(self, node: int, *args: str, token: str = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:
        """Run ``hub apps ARGS`` against node ``node``'s admin API."""
        return subprocess.run(
            hub_command("apps", *args[:1], "--admin-url", self.admin_url(node), *args[1:]),
            env={"HUB_ADMIN_TOKEN": token, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def created(self, node: int, *fields: str) -> dict[str, Any]:
        """``hub apps add FIELDS`` on node ``node``: the app as the admin API answered it."""
        result = self.hub_apps(node, "add", *fields)
        assert result.returncode == 0, result.stderr
        app: dict[str, Any] = json.loads(result.stdout)
        return app

    def close(self) -> None:
        """Stop every node, by pid."""
        for process in reversed(self.processes):
            process.close()

    def __enter__(self) -> Self:
        """Start on entering a `with` block."""
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop every node."""
        self.close()
