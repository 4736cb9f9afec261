"""Starting the deployment under test on loopback, and stopping exactly the processes it started.

``cluster``: a ``redis-server`` on a free port, N ``hub ws`` nodes and one ``hub ingest`` node.
``rediscluster``: the same hub nodes on a Redis Cluster of 3 primaries + 3 replicas (``redis+cluster://``).
``sentinel``: the same hub nodes on 1 primary + 1 replica watched by 3 sentinels (``redis+sentinel://``).
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

from benchmarks import redis_admin
from benchmarks.procstats import cpu_seconds, rss_bytes, total_cpu_seconds, total_rss_bytes

LOOPBACK = "127.0.0.1"
APP_ID = "1"
APP_KEY = "bench-key"
APP_SECRET = "bench-secret"
CHILD_FD_LIMIT = 65_536
PR_SET_PDEATHSIG = 1
REPO_ROOT = Path(__file__).resolve().parents[1]
TOPOLOGIES = ("cluster", "rediscluster", "sentinel", "embedded")
REDIS_TOPOLOGIES = ("cluster", "rediscluster", "sentinel")
CLUSTER_PRIMARIES = 3
# Failure detection of the Redis Cluster and Sentinel topologies (the failover scenario's clock): redis'
# defaults (15 s, 30 s) would measure the configuration, not hub.
CLUSTER_NODE_TIMEOUT_MS = 1500
SENTINEL_DOWN_AFTER_MS = 1000
SENTINEL_SERVICE = "hubmaster"


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
        self.admin_port = 0  # set when the child serves the admin port (console streams)
        self.env = env
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._cpu = 0.0

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

    def cpu_seconds(self) -> float:
        """CPU seconds it used so far; after it died, what it had used when last asked (never goes back)."""
        if self.running():
            self._cpu = max(self._cpu, cpu_seconds(self.pid))
        return self._cpu

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
        """SIGKILL by pid, at once (the storm and failover scenarios' crash)."""
        if self.running():
            self.cpu_seconds()
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
    redis_nodes: list[Child] = field(default_factory=list)
    sentinels: list[Child] = field(default_factory=list)
    redis_url: str = ""
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
        """CPU seconds used so far by every Redis process, sentinels included (0 when embedded)."""
        return sum(self.redis_cpu_by_process().values())

    def redis_cpu_by_process(self) -> dict[str, float]:
        """CPU seconds used so far by each Redis process, by name (``shard1-primary``, ``sentinel-2``...).

        Names are the roles at start; a failover swaps roles but not names. A killed process keeps the
        figure it had when it died.
        """
        return {child.name: child.cpu_seconds() for child in [*self.redis_nodes, *self.sentinels]}

    def redis_primary_ports(self) -> list[int]:
        """Client ports of the Redis servers that are primaries now (after any failover)."""
        if self.kind == "rediscluster":
            ports = [c.port for c in self.redis_nodes if c.running()]
            for port in ports:
                try:
                    views = redis_admin.cluster_nodes(port)
                except redis_admin.ADMIN_ERRORS:
                    continue
                return sorted(v.port for v in views if v.primary and v.slots and not v.failed and v.port in ports)
            return []
        primaries = []
        for child in self.redis_nodes:
            if not child.running():
                continue
            try:
                if redis_admin.info(child.port, "replication").get("role") == "master":
                    primaries.append(child.port)
            except redis_admin.ADMIN_ERRORS:
                continue
        return primaries

    def redis_child(self, port: int) -> Child:
        """The Redis process serving on ``port``."""
        for child in self.redis_nodes:
            if child.port == port:
                return child
        raise KeyError(port)

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
    admin_token: str = "",
) -> Topology:
    """Start ``kind`` (see TOPOLOGIES) with ``ws_nodes`` WebSocket nodes and wait until all are ready.

    ``hub_variant`` (e.g. ``uvloop`` or ``backlog=4096``) runs hub through ``benchmarks.hub_variant``: experiments.
    With ``admin_token`` every WebSocket node also serves its admin port (for console streams).
    """

    def admin(child_args: list[str]) -> tuple[list[str], int]:
        if not admin_token:
            return child_args, 0
        admin_port = free_port()
        return [*child_args, "--admin-port", str(admin_port), "--admin-token", admin_token], admin_port

    if kind not in TOPOLOGIES:
        raise ValueError(f"unknown topology {kind!r}")
    variant_env = {**({"HUB_BENCH_VARIANT": hub_variant} if hub_variant else {}), **(hub_env or {})} or None
    workdir = Path(tempfile.mkdtemp(prefix=f"hub-bench-{kind}-"))
    apps_file = _write_apps_file(workdir)
    topology = Topology(kind, workdir)
    try:
        if kind == "embedded":
            for i in range(max(1, ws_nodes)):
                port = free_port()
                argv, admin_port = admin(_hub_args("serve", port, apps_file, send_buffer_kb, hub_variant))
                child = Child(f"hub-serve-{i}", argv, port, env=variant_env)
                child.admin_port = admin_port
                child.start()
                topology.children.append(child)
                child.wait_http_ready(f"http://{LOOPBACK}:{port}/ready")
                topology.ws_nodes.append(child)
            topology.api_node = topology.ws_nodes[0]
            return topology
        if kind == "cluster":
            _start_single_redis(topology)
        elif kind == "rediscluster":
            _start_redis_cluster(topology)
        else:
            _start_sentinel(topology)
        redis_url = topology.redis_url
        for i in range(ws_nodes if with_ws else 0):
            port = free_port()
            argv, admin_port = admin(
                [*_hub_args("ws", port, apps_file, send_buffer_kb, hub_variant), "--redis-url", redis_url]
            )
            child = Child(f"hub-ws-{i}", argv, port, env=variant_env)
            child.admin_port = admin_port
            child.start()
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


def _redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise TopologyError("redis-server is not installed (make system-deps)")
    return path


def _redis_argv(workdir: Path, name: str, port: int, *extra: str) -> list[str]:
    """A redis-server without persistence, in its own directory (cluster nodes write nodes.conf there)."""
    directory = workdir / name
    directory.mkdir(exist_ok=True)
    return [
        _redis_server(),
        "--bind",
        LOOPBACK,
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
        # A replica's first sync starts at once (redis waits 5 s for more replicas by default).
        "--repl-diskless-sync-delay",
        "0",
        # Stopping must not wait for lagging replicas (the default waits up to 10 s).
        "--shutdown-timeout",
        "0",
        *extra,
    ]


def _start_redis(topology: Topology, name: str, *extra: str) -> Child:
    port = free_port()
    child = Child(name, _redis_argv(topology.workdir, name, port, *extra), port).start()
    topology.children.append(child)
    topology.redis_nodes.append(child)
    child.wait_tcp_ready()
    return child


def _start_single_redis(topology: Topology) -> None:
    topology.redis = _start_redis(topology, "redis-server")
    topology.redis_url = f"redis://{LOOPBACK}:{topology.redis.port}/0"


def _start_redis_cluster(topology: Topology, replicas_per_primary: int = 1) -> None:
    """3 primaries + 3 replicas formed by ``redis-cli --cluster create``; wait until ok and every replica synced.

    ``cluster-require-full-coverage no`` keeps the other shards serving while one fails over;
    ``cluster-replica-validity-factor 0`` lets a replica take over however long its link was down.
    """
    cli = shutil.which("redis-cli")
    if cli is None:
        raise TopologyError("redis-cli is not installed (make system-deps)")
    count = CLUSTER_PRIMARIES * (1 + replicas_per_primary)
    for i in range(count):
        bus_port = free_port()
        _start_redis(
            topology,
            f"redis-node-{i}",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(CLUSTER_NODE_TIMEOUT_MS),
            "--cluster-port",
            str(bus_port),  # explicit: port + 10000 may be taken or above 65535
            "--cluster-require-full-coverage",
            "no",
            "--cluster-replica-validity-factor",
            "0",
            "--cluster-allow-replica-migration",
            "no",
        )
    addresses = [f"{LOOPBACK}:{child.port}" for child in topology.redis_nodes]
    created = subprocess.run(
        [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(replicas_per_primary), "--cluster-yes"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if created.returncode != 0:
        raise TopologyError(f"redis-cli --cluster create failed:\n{created.stdout}\n{created.stderr}")
    ports = [child.port for child in topology.redis_nodes]
    try:
        redis_admin.wait_for(lambda: redis_admin.cluster_unstable_reason(ports, count), 30.0, "the Redis Cluster")
    except TimeoutError as exc:
        raise TopologyError(str(exc)) from exc
    _name_cluster_nodes(topology)
    seeds = ",".join(addresses[:CLUSTER_PRIMARIES])
    topology.redis_url = f"redis+cluster://{seeds}"


def _name_cluster_nodes(topology: Topology) -> None:
    """Name each node for the shard it serves at start: shard1 holds the lowest slots; ``-primary``/``-replica``.

    A replica's primary is what the replica itself reports (INFO replication), not gossip, which may lag.
    """
    views = redis_admin.cluster_nodes(topology.redis_nodes[0].port)
    primaries = sorted((v for v in views if v.primary and v.slots), key=lambda v: min(a for a, _ in v.slots))
    shard_of = {primary.port: index for index, primary in enumerate(primaries, start=1)}
    replicas: dict[int, list[Child]] = {}
    for child in topology.redis_nodes:
        if child.port in shard_of:
            child.name = f"shard{shard_of[child.port]}-primary"
            continue
        primary_port = int(redis_admin.info(child.port, "replication")["master_port"])
        replicas.setdefault(shard_of[primary_port], []).append(child)
    for shard, children in replicas.items():
        for n, child in enumerate(children, start=1):
            child.name = f"shard{shard}-replica" + (f"{n}" if len(children) > 1 else "")


def _start_sentinel(topology: Topology) -> None:
    """1 primary, 1 replica, 3 sentinels (quorum 2); wait until every sentinel sees the replica and its peers."""
    primary = _start_redis(topology, "primary")
    replica = _start_redis(topology, "replica", "--replicaof", LOOPBACK, str(primary.port))
    for i in range(3):
        port = free_port()
        directory = topology.workdir / f"sentinel-{i + 1}"
        directory.mkdir()
        config = directory / "sentinel.conf"
        config.write_text(
            "\n".join(
                [
                    f"port {port}",
                    f"bind {LOOPBACK}",
                    f'dir "{directory}"',
                    f"sentinel monitor {SENTINEL_SERVICE} {LOOPBACK} {primary.port} 2",
                    f"sentinel down-after-milliseconds {SENTINEL_SERVICE} {SENTINEL_DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {SENTINEL_SERVICE} 3000",
                    f"sentinel parallel-syncs {SENTINEL_SERVICE} 1",
                ]
            )
            + "\n"
        )
        child = Child(f"sentinel-{i + 1}", [_redis_server(), str(config), "--sentinel"], port).start()
        topology.children.append(child)
        topology.sentinels.append(child)
        child.wait_tcp_ready()

    def unsettled() -> str | None:
        try:
            role = redis_admin.command(replica.port, "ROLE")
            if role[0] != b"slave" or role[3] != b"connected":
                return f"replica {role[:4]}"
            for sentinel in topology.sentinels:
                address = redis_admin.command(sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE)
                if not address or int(address[1]) != primary.port:
                    return f"{sentinel.name} names {address}"
                if len(redis_admin.command(sentinel.port, "SENTINEL", "SENTINELS", SENTINEL_SERVICE)) != 2:
                    return f"{sentinel.name} does not see both other sentinels yet"
                if not redis_admin.command(sentinel.port, "SENTINEL", "REPLICAS", SENTINEL_SERVICE):
                    return f"{sentinel.name} does not see the replica yet"
        except redis_admin.ADMIN_ERRORS as exc:
            return repr(exc)
        return None

    try:
        redis_admin.wait_for(unsettled, 30.0, "the sentinels to settle")
    except TimeoutError as exc:
        raise TopologyError(str(exc)) from exc
    hosts = ",".join(f"{LOOPBACK}:{s.port}" for s in topology.sentinels)
    topology.redis_url = f"redis+sentinel://{hosts}/{SENTINEL_SERVICE}"


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
