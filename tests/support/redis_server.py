"""A real `redis-server` for tests: own port and temp dir, no persistence, stopped (and restarted) by pid.

    server = RedisServer().start()      # waits until it answers PING
    server.url                          # redis://127.0.0.1:<port>/0
    server.stop(); server.start()       # an outage, then the same port again (restart() does both)
    server.pause(); server.resume()     # SIGSTOP/SIGCONT: a server that hangs instead of refusing
    server.close()                      # stop and remove the temp dir

Callers skip (or fail in CI) when redis-server is missing via
``tests.support.requirements.require_executable("redis-server")``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.ports import LOOPBACK, free_port


class RedisServerError(RuntimeError):
    """redis-server did not start, or exited, while a test depended on it."""


def _command(*args: str) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class RedisServer:
    """One redis-server process on 127.0.0.1; the port stays the same across stop/start."""

    def __init__(
        self,
        port: int | None = None,
        *,
        password: str | None = None,
        extra_args: Sequence[str] = (),
        executable: str = "redis-server",
    ) -> None:
        """Describe the server; nothing runs until ``start()``. ``extra_args`` go to the command line as is."""
        self.port = port or free_port()
        self.host = LOOPBACK
        self.password = password
        self.extra_args = list(extra_args)
        self.executable = shutil.which(executable) or executable
        self.dir = Path(tempfile.mkdtemp(prefix=f"redis-{self.port}-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis:// URL of the server (with the password when one is set)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def pid(self) -> int:
        """Pid of the running server."""
        if self._process is None:
            raise RedisServerError("redis-server is not running")
        return self._process.pid

    @property
    def log_path(self) -> Path:
        """Where the server writes its log (attach it to failure messages)."""
        return self.dir / "redis.log"

    def is_running(self) -> bool:
        """True while the process has not exited."""
        return self._process is not None and self._process.poll() is None

    def argv(self) -> list[str]:
        """The command line: loopback only, no RDB or AOF, everything inside the temp dir."""
        argv = [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--daemonize",
            "no",
        ]
        if self.password:
            argv += ["--requirepass", self.password]
        return argv + self.extra_args

    def start(self, *, timeout: float = 10.0) -> Self:
        """Spawn redis-server and block until it answers PING."""
        if self.is_running():
            raise RedisServerError(f"redis-server already running (pid {self.pid})")
        log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                self.argv(),
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal must not reach it first
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not self.ping():
            if not self.is_running():
                raise RedisServerError(f"redis-server exited with {self._process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop(sig=signal.SIGKILL)
                raise RedisServerError(f"redis-server not answering after {timeout} s:\n{self.log()}")
            time.sleep(0.01)
        return self

    def ping(self) -> bool:
        """Whether the server answers PING (after AUTH when a password is set)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                expected = b""
                if self.password:
                    sock.sendall(_command("AUTH", self.password))
                    expected += b"+OK\r\n"
                sock.sendall(_command("PING"))
                expected += b"+PONG\r\n"
                received = b""
                while len(received) < len(expected):
                    chunk = sock.recv(64)
                    if not chunk:
                        return False
                    received += chunk
                return received == expected
        except OSError:
            return False

    def client(self) -> redis.Redis:
        """A blocking redis-py client of this server that fails at once when it is down; the caller closes it.

        redis-py retries a refused connection 10 times with backoff by default (about 4.5 s), which would
        make every probe of a killed server slow.
        """
        return redis.Redis(
            host=self.host,
            port=self.port,
            password=self.password,
            socket_timeout=5,
            protocol=2,
            retry=Retry(NoBackoff(), 0),
        )

    def stop(self, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Signal the server by its pid and wait for it to exit (SIGKILL after ``timeout``)."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            if sig != signal.SIGKILL:
                self.resume()  # a stopped process cannot act on SIGTERM
            process.send_signal(sig)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self._process = None

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), like a crashed or OOM-killed server."""
        self.stop(sig=signal.SIGKILL)

    def restart(self, *, timeout: float = 10.0) -> Self:
        """Stop and start again on the same port (all data is lost: nothing is persisted)."""
        self.stop()
        return self.start(timeout=timeout)

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing is answered, like a hung server or a network black hole."""
        if self.is_running():
            os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause()``."""
        if self.is_running():
            os.kill(self.pid, signal.SIGCONT)

    async def start_async(self, *, ready_within: float = 10.0) -> Self:
        """``start()`` without blocking the test's event loop (clients keep reconnecting meanwhile)."""
        return await asyncio.to_thread(self.start, timeout=ready_within)

    async def stop_async(self, *, sig: int = signal.SIGTERM) -> None:
        """``stop()`` without blocking the test's event loop."""
        await asyncio.to_thread(self.stop, sig=sig)

    def log(self, limit: int = 5000) -> str:
        """The last ``limit`` characters of the server log."""
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def close(self) -> None:
        """Stop the server and remove its temp dir."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        """Start on entering a ``with`` block (if not running yet)."""
        if not self.is_running():
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop and clean up on leaving the block."""
        self.close()
