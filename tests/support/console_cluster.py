"""A 2-node cluster with the admin port (and so the console) on every node, for browser tests and screenshots.

redis-server, `hub ws` x2 and `hub ingest`, each with its own admin port and the same admin token; app
1 sends ``channel_occupied`` webhooks to a receiver URL, with a short retry window so a webhook to a
receiver that is down becomes a dead letter within seconds.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.ports import LOOPBACK, free_port
from tests.support.redis_server import RedisServer
from tests.support.requirements import require_executable
from tests.support.topology import Topology, start_ingest_node, start_ws_node, write_apps_file

TOKEN = "console-test-token-0123456789"
RETRY_WINDOW_SECONDS = 3


def console_apps(webhook_url: str | None) -> list[dict[str, Any]]:
    """App 1 (client events on; webhooks to ``webhook_url``) and a second app to switch to."""
    first: dict[str, Any] = {"id": "1", "key": "app-key", "secret": "app-secret", "enable_client_messages": True}
    if webhook_url:
        first["webhooks"] = [{"url": webhook_url, "event_types": ["channel_occupied"]}]
    return [first, {"id": "2", "key": "second-key", "secret": "second-secret"}]


@dataclass
class ConsoleCluster:
    """The running cluster: client ports, admin ports and node ids, by node index (ws 0, ws 1, ingest)."""

    topology: Topology
    admin_ports: list[int]
    node_ids: list[str]

    def ws_port(self, node: int) -> int:
        """The WebSocket port of ws node ``node``."""
        return self.topology.ws_ports[node]

    @property
    def api_port(self) -> int:
        """The ingest node's HTTP API port."""
        return self.topology.api_port

    def console_url(self, node: int, fragment: str = "") -> str:
        """The console page on node ``node``'s admin port."""
        return f"http://{LOOPBACK}:{self.admin_ports[node]}/console/{fragment}"


@contextmanager
def running_console_cluster(webhook_url: str | None = None, *extra: str) -> Iterator[ConsoleCluster]:
    """Start the cluster (skipped, or failed in CI, without redis-server); stop it by pid on exit."""
    require_executable("redis-server")
    redis = RedisServer().start()
    apps_file = write_apps_file(Path(tempfile.mkdtemp(prefix="hub-console-")), console_apps(webhook_url))
    topology = Topology("cluster", [], free_port(), redis=redis, apps_file=apps_file)
    admin_ports = [free_port() for _ in range(3)]
    node_ids = ["ws-a", "ws-b", "ingest-a"]
    try:

        def flags(index: int) -> list[str]:
            return [
                "--node-id",
                node_ids[index],
                "--admin-port",
                str(admin_ports[index]),
                "--admin-token",
                TOKEN,
                "--webhook-retry-window",
                str(RETRY_WINDOW_SECONDS),
                *extra,
            ]

        for index in range(2):
            port = free_port()
            topology.ws_processes.append(start_ws_node(topology, port, *flags(index)))
            topology.ws_ports.append(port)
        start_ingest_node(topology, topology.api_port, *flags(2))
        yield ConsoleCluster(topology, admin_ports, node_ids)
    finally:
        topology.close()
