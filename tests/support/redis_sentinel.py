"""A real Redis Sentinel setup for tests: 1 primary + 1 replica watched by 3 sentinels, stopped by pid.

    with RedisSentinel() as setup:                # start(): replica in sync, every sentinel sees both
        setup.url                                 # redis+sentinel://127.0.0.1:s1,127.0.0.1:s2,127.0.0.1:s3/hubmaster
        old = setup.kill_primary()                # SIGKILL by pid; returns the killed server
        new_port = setup.wait_for_failover()      # once all 3 sentinels name it and it answers ROLE master
        setup.restart(old)                        # back as a replica of the new primary

Every process is a ``RedisServer`` in one temp dir of this setup (sentinels rewrite their config files).
Sentinels mark the primary down after ``down_after_ms`` and need 2 of 3 to agree. Callers skip (or fail
in CI) when redis-server is missing, via ``require_executable``.
"""

# ruff: noqa: ASYNC109  -- per-call timeouts are this test-helper API's point; callers pass seconds

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis

from tests.support.ports import LOOPBACK
from tests.support.redis_server import RedisServer, RedisServerError

SERVICE = "hubmaster"


class RedisSentinelError(RuntimeError):
    """The setup did not come up, or did not fail over, in time."""


class SentinelProcess(RedisServer):
    """``redis-server <conf> --sentinel``: the config file must come first, and sentinel rewrites it."""

    def __init__(
        self, directory: Path, monitor_port: int, *, down_after_ms: int, failover_timeout_ms: int, password: str | None
    ) -> None:
        """Write the sentinel's config into its own file under ``directory``; nothing runs until ``start()``."""
        super().__init__()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = directory / f"sentinel-{self.port}"
        self.dir.mkdir()
        self.config_path = self.dir / "sentinel.conf"
        lines = [
            f"port {self.port}",
            f"bind {self.host}",
            f'dir "{self.dir}"',
            f"sentinel monitor {SERVICE} {LOOPBACK} {monitor_port} 2",
            f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}",
            f"sentinel failover-timeout {SERVICE} {failover_timeout_ms}",
            f"sentinel parallel-syncs {SERVICE} 1",
        ]
        if password:
            lines.append(f"sentinel auth-pass {SERVICE} {password}")
        self.config_path.write_text("\n".join(lines) + "\n")

    def argv(self) -> list[str]:
        """Config file first, then ``--sentinel``."""
        return [self.executable, str(self.config_path), "--sentinel", "--daemonize", "no"]

    def command(self, *args: str | int) -> Any:
        """Run one command on this sentinel."""
        with self.client() as client:
            return client.execute_command(*args)

    def primary_port(self) -> int | None:
        """The port this sentinel names as the primary of the service (SENTINEL GET-MASTER-ADDR-BY-NAME)."""
        reply = self.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(reply[1]) if reply else None

    def view(self, kind: str) -> list[dict[str, str]]:
        """SENTINEL REPLICAS / SENTINELS of the service, each entry as a dict of strings."""
        entries = []
        for flat in self.command("SENTINEL", kind, SERVICE):
            items = [item.decode() if isinstance(item, bytes) else str(item) for item in flat]
            entries.append(dict(zip(items[::2], items[1::2], strict=True)))
        return entries


class RedisSentinel:
    """One primary, one replica and three sentinels (quorum 2) monitoring them as ``hubmaster``."""

    def __init__(
        self,
        *,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        password: str | None = None,
    ) -> None:
        """Describe the setup; nothing runs until ``start()``.

        ``password`` sets requirepass and masterauth on both data servers and auth-pass on the sentinels
        (the sentinels themselves take no password).
        """
        self.dir = Path(tempfile.mkdtemp(prefix="redis-sentinel-"))
        self.password = password
        self.service = SERVICE
        self._old_primary_port: int | None = None
        primary = RedisServer(password=password, extra_args=self._data_args())
        replica = RedisServer(password=password, extra_args=self._data_args(primary.port))
        self.servers: list[RedisServer] = [primary, replica]
        self.sentinels: list[SentinelProcess] = [
            SentinelProcess(
                self.dir,
                primary.port,
                down_after_ms=down_after_ms,
                failover_timeout_ms=failover_timeout_ms,
                password=password,
            )
            for _ in range(3)
        ]

    def _data_args(self, replica_of: int | None = None) -> list[str]:
        args = ["--repl-diskless-sync-delay", "0", "--shutdown-timeout", "0"]
        if self.password:
            args += ["--masterauth", self.password]
        if replica_of is not None:
            args += ["--replicaof", LOOPBACK, str(replica_of)]
        return args

    @property
    def url(self) -> str:
        """``redis+sentinel://[:password@]s1,s2,s3/hubmaster``: the sentinels and the service name."""
        auth = f":{self.password}@" if self.password else ""
        hosts = ",".join(f"{s.host}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{auth}{hosts}/{self.service}"

    @property
    def sentinel_ports(self) -> list[int]:
        """Ports of the three sentinels."""
        return [sentinel.port for sentinel in self.sentinels]

    def server(self, port: int) -> RedisServer:
        """The data server (primary or replica) on ``port``."""
        for server in self.servers:
            if server.port == port:
                return server
        raise KeyError(port)

    def start(self, *, timeout: float = 30.0) -> Self:
        """Start both data servers and the sentinels; wait until the replica is in sync and every sentinel
        sees the primary up, the replica and the two other sentinels (without that no failover can happen)."""
        try:
            for process in [*self.servers, *self.sentinels]:
                process.start()
            primary, replica = self.servers
            self._wait(lambda: self._settled(primary.port, [replica]), timeout, "the sentinels to settle")
        except BaseException:
            self.close()
            raise
        return self

    def _role(self, server: RedisServer) -> list[Any]:
        with server.client() as client:
            reply: list[Any] = client.execute_command("ROLE")
            return reply

    def _settled(self, primary_port: int, replicas: list[RedisServer]) -> bool:
        """Every sentinel names ``primary_port``, sees the 2 other sentinels and each replica up and linked."""
        if self._role(self.server(primary_port))[0] != b"master":
            return False
        for replica in replicas:
            role = self._role(replica)
            if role[0] != b"slave" or role[2] != primary_port or role[3] != b"connected":
                return False
        wanted = {replica.port for replica in replicas}
        for sentinel in self.sentinels:
            if sentinel.primary_port() != primary_port or len(sentinel.view("SENTINELS")) != 2:
                return False
            seen = {
                int(entry["port"])
                for entry in sentinel.view("REPLICAS")
                if entry["flags"] == "slave" and entry["master-link-status"] == "ok"
            }
            if not wanted <= seen:
                return False
        return True

    def primary_port(self) -> int:
        """The port the first sentinel names as primary."""
        port = self.sentinels[0].primary_port()
        if port is None:
            raise RedisSentinelError(f"sentinel knows no primary for {self.service}")
        return port

    def primary(self) -> RedisServer:
        """The data server the first sentinel names as primary."""
        return self.server(self.primary_port())

    def replicas(self) -> list[RedisServer]:
        """The running data servers other than the primary."""
        primary = self.primary_port()
        return [server for server in self.servers if server.port != primary and server.is_running()]

    def kill_primary(self) -> RedisServer:
        """SIGKILL the current primary by its pid and return it (``restart`` brings it back as a replica)."""
        primary = self.primary()
        self._old_primary_port = primary.port
        primary.kill()
        return primary

    def wait_for_failover(self, *, timeout: float = 30.0) -> int:
        """Wait until all 3 sentinels name a new primary, a running one answering ROLE master; return its port."""
        old = self._old_primary_port
        found: list[int] = []

        def switched() -> bool:
            ports = {sentinel.primary_port() for sentinel in self.sentinels}
            if len(ports) != 1:
                return False
            (port,) = ports
            if port is None or port == old:
                return False
            server = self.server(port)
            if not server.is_running() or self._role(server)[0] != b"master":
                return False
            found[:] = [port]
            return True

        self._wait(switched, timeout, "the sentinels to fail over")
        return found[0]

    def restart(self, server: RedisServer, *, timeout: float = 30.0) -> RedisServer:
        """Start a killed data server again on its port as a replica of the current primary; wait until it
        is in sync and every sentinel lists it as a healthy replica."""
        primary = self.primary_port()
        server.extra_args = self._data_args(primary)
        server.start()

        def settled() -> bool:
            # Read the primary again each time: a sentinel that missed the first switch may run a second
            # failover meanwhile (seen once in CI), and the restarted server then follows the newer primary.
            current = self.primary_port()
            return self._settled(current, [s for s in self.servers if s.port != current])

        self._wait(
            settled,
            timeout,
            f"redis on {server.port} to rejoin as a replica",
        )
        return server

    async def wait_for_failover_async(self, *, timeout: float = 30.0) -> int:
        """``wait_for_failover`` without blocking the test's event loop."""
        return await asyncio.to_thread(self.wait_for_failover, timeout=timeout)

    async def restart_async(self, server: RedisServer, *, timeout: float = 30.0) -> RedisServer:
        """``restart`` without blocking the test's event loop."""
        return await asyncio.to_thread(self.restart, server, timeout=timeout)

    def _wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if condition():
                    return
            except (redis.RedisError, OSError, RedisServerError, KeyError):
                pass  # a process still starting or just killed: ask again
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- :{p.port} ---\n{p.log(1500)}" for p in [*self.servers, *self.sentinels])
                raise RedisSentinelError(f"timed out after {timeout} s waiting for {what}\n{logs}")
            time.sleep(0.05)

    def close(self) -> None:
        """Stop every process by pid and remove the temp dirs."""
        for process in [*self.sentinels, *self.servers]:
            process.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        """Start on entering a ``with`` block."""
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop and clean up on leaving the block."""
        self.close()
