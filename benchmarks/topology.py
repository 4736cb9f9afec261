"""Starting the deployment under test on loopback, and stopping exactly the processes it started.

``cluster``: a ``redis-server`` on a free port, N ``hub ws`` nodes and one ``hub ingest`` node.
``embedded``: one ``hub serve`` (in-memory broker and state) per WebSocket node; with more than one they
are independent servers (only the storm scenario uses that, since it needs no cross-node delivery).

Every child gets a high open-file limit (set in the child before exec) and its own session, and is stopped
by its pid: SIGTERM, then SIGKILL after a timeout.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from benchmarks.procstats import rss_bytes, total_cpu_seconds, total_rss_bytes

LOOPBACK = "127.0.0.1"
APP_ID = "1"
APP_KEY = "bench-key"
APP_SECRET = "bench-secret"
CHILD_FD_LIMIT = 65_536
PR_SET_PDEATHSIG = 1
REPO_ROOT = Path(__file__).resolve().parents[1]


class TopologyError(RuntimeError):
    """A process of the deployment failed to start or died."""


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _prepare_child() -> None:
    """Runs in the child between fork and exec: as many open files as we may have, and die with the parent.

    PR_SET_PDEATHSIG makes the kernel send SIGTERM to the child if the benchmark process dies without
    stopping it (killed, or the thread that started it ends), so nothing outlives a run.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (CHILD_FD_LIMIT, max(hard, CHILD_FD_LIMIT)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def hub_executable(variant: str = "") -> list[str]:
    """argv prefix for the ``hub`` console script of this interpreter's environment (or an experiment variant)."""
    if variant:
        return [sys.executable, "-m", "benchmarks.hub_variant"]
    beside = Path(sys.executable).with_name("hub")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("hub")
    return [found] if found else [sys.executable, "-m", "hub"]


class Child:
    """One process we started: its argv, pid, output file and ports."""

    def __init__(self, name: str, argv: Sequence[str], port: int, *, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.env = env
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> Child:
        """Spawn it with a raised fd limit in its own session; output goes to an unlinked temp file."""
        self._log = tempfile.TemporaryFile(prefix=f"{self.name}-")  # noqa: SIM115 - closed in stop()
        self._popen = subprocess.Popen(
            self.argv,
            cwd=REPO_ROOT,
            env={**os.environ, **(self.env or {})},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_prepare_child,
        )
        return self

    @property
    def pid(self) -> int:
        """The child's pid."""
        if self._popen is None:
            raise TopologyError(f"{self.name} was never started")
        return self._popen.pid

    def running(self) -> bool:
        """True until the child exits."""
        return self._popen is not None and self._popen.poll() is None

    def output(self, limit: int = 4000) -> str:
        """The tail of what the child printed."""
        if self._log is None:
            return ""
        size = os.fstat(self._log.fileno()).st_size
        start = max(0, size - limit)
        return os.pread(self._log.fileno(), size - start, start).decode("utf-8", "replace")

    def wait_http_ready(self, url: str, timeout: float = 20.0) -> None:
        """Block until GET ``url`` answers 200; raise TopologyError if the child exits or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=0.5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if not self.running():
                raise TopologyError(f"{self.name} exited before it was ready:\n{self.output()}")
            if time.monotonic() >= deadline:
                raise TopologyError(f"{self.name} not ready after {timeout} s:\n{self.output()}")
            time.sleep(0.05)

    def wait_tcp_ready(self, timeout: float = 10.0) -> None:
        """Block until the child's port accepts connections."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=0.2):
                    return
            except OSError:
                pass
            if not self.running():
                raise TopologyError(f"{self.name} exited before it was ready:\n{self.output()}")
            if time.monotonic() >= deadline:
                raise TopologyError(f"{self.name} not listening after {timeout} s:\n{self.output()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL by pid, at once (the storm scenario's crash)."""
        if self.running():
            os.kill(self.pid, signal.SIGKILL)
            assert self._popen is not None
            self._popen.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by pid, SIGKILL after ``timeout`` s, then release the output file."""
        if self._popen is not None and self._popen.poll() is None:
            os.kill(self._popen.pid, signal.SIGTERM)
            try:
                self._popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self._popen.pid, signal.SIGKILL)
                self._popen.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class Topology:
    """A running deployment: WebSocket nodes, the HTTP API node, and everything else we started."""

    kind: str
    workdir: Path
    ws_nodes: list[Child] = field(default_factory=list)
    api_node: Child | None = None
    redis: Child | None = None
    children: list[Child] = field(default_factory=list)

    @property
    def ws_ports(self) -> list[int]:
        """Port of each WebSocket node."""
        return [child.port for child in self.ws_nodes]

    @property
    def api_port(self) -> int:
        """Port of the HTTP API."""
        assert self.api_node is not None
        return self.api_node.port

    def hub_pids(self) -> list[int]:
        """Pids of the hub processes (not redis-server), each once."""
        seen: dict[int, None] = {}
        for child in [*self.ws_nodes, *([self.api_node] if self.api_node else [])]:
            if child.running():
                seen[child.pid] = None
        return list(seen)

    def ws_pids(self) -> list[int]:
        """Pids of the processes that hold WebSocket clients."""
        return [child.pid for child in self.ws_nodes if child.running()]

    def hub_cpu_seconds(self) -> float:
        """CPU seconds used so far by the hub processes."""
        return total_cpu_seconds(self.hub_pids())

    def ws_cpu_seconds(self) -> float:
        """CPU seconds used so far by the WebSocket-holding processes (embedded: the whole hub serve)."""
        return total_cpu_seconds(self.ws_pids())

    def redis_cpu_seconds(self) -> float:
        """CPU seconds used so far by redis-server (0 when embedded)."""
        return total_cpu_seconds([self.redis.pid]) if self.redis and self.redis.running() else 0.0

    def ws_rss_bytes(self) -> int:
        """RSS of the WebSocket-holding processes."""
        return total_rss_bytes(self.ws_pids())

    def rss_by_process(self) -> dict[str, int]:
        """RSS of every hub process, by name."""
        children = [*self.ws_nodes, *([self.api_node] if self.api_node else [])]
        return {c.name: rss_bytes(c.pid) for c in children if c.running()}

    def check_alive(self) -> None:
        """Raise TopologyError naming any process that died unexpectedly."""
        for child in self.children:
            if not child.running():
                raise TopologyError(f"{child.name} died:\n{child.output()}")

    def close(self) -> None:
        """Stop every process we started, newest first, by pid."""
        errors = []
        for child in reversed(self.children):
            try:
                child.stop()
            except Exception as exc:  # keep stopping the others; report after
                errors.append(f"{child.name} (pid {child.pid}): {exc!r}")
        self.children.clear()
        if errors:
            raise TopologyError("could not stop: " + "; ".join(errors))


def _write_apps_file(directory: Path) -> Path:
    path = directory / "apps.json"
    app = {"id": APP_ID, "key": APP_KEY, "secret": APP_SECRET, "max_backend_events_per_second": -1}
    path.write_text(json.dumps({"apps": [app]}))
    return path


def _hub_args(role: str, port: int, apps_file: Path, send_buffer_kb: int, variant: str) -> list[str]:
    return [
        *hub_executable(variant),
        role,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--metrics-port",
        "0",
        "--apps-file",
        str(apps_file),
        "--log-level",
        "warning",
        "--log-format",
        "json",
        "--drain-seconds",
        "0.5",
        "--max-send-buffer-kb",
        str(send_buffer_kb),
    ]


def start_topology(
    kind: str,
    ws_nodes: int = 2,
    *,
    send_buffer_kb: int = 1024,
    with_ws: bool = True,
    hub_variant: str = "",
    hub_env: dict[str, str] | None = None,
) -> Topology:
    """Start ``kind`` (cluster or embedded) with ``ws_nodes`` WebSocket nodes and wait until all are ready.

    ``hub_variant`` (e.g. ``uvloop`` or ``backlog=4096``) runs hub through ``benchmarks.hub_variant``: experiments.
    """
    if kind not in ("cluster", "embedded"):
        raise ValueError(f"unknown topology {kind!r}")
    variant_env = {**({"HUB_BENCH_VARIANT": hub_variant} if hub_variant else {}), **(hub_env or {})} or None
    workdir = Path(tempfile.mkdtemp(prefix=f"hub-bench-{kind}-"))
    apps_file = _write_apps_file(workdir)
    topology = Topology(kind, workdir)
    try:
        if kind == "embedded":
            for i in range(max(1, ws_nodes)):
                port = free_port()
                child = Child(
                    f"hub-serve-{i}",
                    _hub_args("serve", port, apps_file, send_buffer_kb, hub_variant),
                    port,
                    env=variant_env,
                ).start()
                topology.children.append(child)
                child.wait_http_ready(f"http://{LOOPBACK}:{port}/ready")
                topology.ws_nodes.append(child)
            topology.api_node = topology.ws_nodes[0]
            return topology
        redis_server = shutil.which("redis-server")
        if redis_server is None:
            raise TopologyError("redis-server is not installed (make system-deps)")
        redis_port = free_port()
        redis_argv = [
            redis_server,
            "--bind",
            LOOPBACK,
            "--port",
            str(redis_port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ]
        topology.redis = Child("redis-server", redis_argv, redis_port).start()
        topology.children.append(topology.redis)
        topology.redis.wait_tcp_ready()
        redis_url = f"redis://{LOOPBACK}:{redis_port}/0"
        for i in range(ws_nodes if with_ws else 0):
            port = free_port()
            argv = [*_hub_args("ws", port, apps_file, send_buffer_kb, hub_variant), "--redis-url", redis_url]
            child = Child(f"hub-ws-{i}", argv, port, env=variant_env).start()
            topology.children.append(child)
            child.wait_http_ready(f"http://{LOOPBACK}:{port}/ready")
            topology.ws_nodes.append(child)
        port = free_port()
        argv = [*_hub_args("ingest", port, apps_file, send_buffer_kb, hub_variant), "--redis-url", redis_url]
        topology.api_node = Child("hub-ingest", argv, port, env=variant_env).start()
        topology.children.append(topology.api_node)
        topology.api_node.wait_http_ready(f"http://{LOOPBACK}:{port}/ready")
        return topology
    except BaseException:
        topology.close()
        raise


def cluster_available() -> bool:
    """Whether the cluster topology can run here: redis-server installed and the Redis backends importable."""
    if shutil.which("redis-server") is None:
        return False
    try:
        import hub.broker.redis
        import hub.state.redis  # noqa: F401 - importable is all we ask
    except ImportError:
        return False
    return True
