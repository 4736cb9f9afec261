"""The `make cluster` topology (deploy/cluster.sh) on free ports, for tests that go through haproxy.

cluster.sh writes each process's pid to ``<dir>/<name>.pid`` (redis, ws1, ws2, ingest1, haproxy) and
starts a hub node again after it drains and exits 0, so a test can SIGTERM ``pid("ws1")`` for a
rolling restart and wait for ``pid("ws1")`` to change.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy.sources import DEPLOY
from tests.support.ports import LOOPBACK, free_port
from tests.support.processes import ManagedProcess, hub_command

PORT_VARIABLES = (
    "LB_PORT",
    "WS1_PORT",
    "WS2_PORT",
    "INGEST_PORT",
    "WS1_METRICS_PORT",
    "WS2_METRICS_PORT",
    "INGEST_METRICS_PORT",
    "REDIS_PORT",
)
NAMES = ("redis", "ws1", "ws2", "ingest1", "haproxy")


@dataclass
class LoadBalancedCluster:
    """redis, two `hub ws`, one `hub ingest` and haproxy, started by deploy/cluster.sh."""

    directory: Path
    haproxy: str
    redis_server: str
    app: dict[str, str]
    drain_seconds: float = 2.0
    ports: dict[str, int] = field(default_factory=lambda: {name: free_port() for name in PORT_VARIABLES})
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """haproxy's address: /app/{key} for clients, /apps/{id}/... for backends."""
        return f"http://{LOOPBACK}:{self.ports['LB_PORT']}"

    def start(self, timeout: float = 60.0) -> None:
        env = {
            **{name: str(port) for name, port in self.ports.items()},
            **self.app,
            "HUB": " ".join(hub_command()),
            "HAPROXY": self.haproxy,
            "REDIS_SERVER": self.redis_server,
            "PYTHON": sys.executable,
            "CLUSTER_DIR": str(self.directory),
            "HUB_DRAIN_SECONDS": str(self.drain_seconds),
        }
        self.process = ManagedProcess(["bash", str(DEPLOY / "cluster.sh")], env=env, name="cluster.sh").start()
        self.process.wait_ready(lambda: (self.directory / "ready").exists(), timeout=timeout)

    def pid(self, name: str) -> int:
        """The current pid of one of NAMES."""
        return int((self.directory / f"{name}.pid").read_text())

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")

    def stop(self, sig: int = signal.SIGINT) -> int | None:
        """Stop cluster.sh the way Ctrl-C does; return its exit status."""
        if self.process is None:
            return None
        status = self.process.stop(sig=sig, timeout=self.drain_seconds + 20)
        self.process.close()
        return status

    def wait_for_new_pid(self, name: str, old: int, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid(name) != old:
                return self.pid(name)
            time.sleep(0.05)
        raise TimeoutError(f"{name} was not started again within {timeout} s")


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (and is not a zombie of ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
