"""A real PostgreSQL for tests: Debian's `postgresql` binaries, `initdb` into a temp dir, a free loopback port.

    server = PostgresServer().start()   # waits until it accepts connections
    server.url                          # postgresql://hub@127.0.0.1:<port>/postgres (trust auth, loopback only)
    server.close()                      # fast shutdown by pid, temp dir removed

PostgreSQL refuses to run as root. Tests (and CI) run as root, so as root the server runs as the
`postgres` user that Debian's package creates (`setpriv` drops to it and then execs, so the pid we hold
is the server's own); otherwise as whoever runs the tests.

Callers skip (fail in CI) when the binaries are missing via ``require_postgres()``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg

from tests.support.ports import LOOPBACK, free_port, port_is_open
from tests.support.requirements import require

SERVICE_USER = "postgres"


def postgres_bin_dir() -> Path | None:
    """Debian's newest /usr/lib/postgresql/<version>/bin (or the directory of `initdb` on PATH)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def require_postgres() -> Path:
    """The PostgreSQL bin dir; skip the test (fail it in CI) when PostgreSQL is not installed."""
    bin_dir = postgres_bin_dir()
    require(bin_dir is not None, "PostgreSQL is not installed (Debian: apt-get install postgresql)")
    assert bin_dir is not None
    if os.geteuid() == 0:
        require(_has_user(SERVICE_USER), f"running as root needs the {SERVICE_USER!r} user to run PostgreSQL")
    return bin_dir


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class PostgresServerError(RuntimeError):
    """PostgreSQL did not start, or exited, while a test depended on it."""


class PostgresServer:
    """One PostgreSQL server on 127.0.0.1 with a throwaway data directory."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        """Describe the server; nothing runs until ``start()``."""
        self.bin_dir = bin_dir or require_postgres()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"postgres-{self.port}-"))
        self.data = self.dir / "data"
        self._process: subprocess.Popen[bytes] | None = None
        self._log = self.dir / "postgres.log"

    @property
    def url(self) -> str:
        """A libpq URL of the server's `postgres` database, as the superuser `hub`."""
        return f"postgresql://hub@{LOOPBACK}:{self.port}/postgres"

    def _as_service_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["setpriv", f"--reuid={SERVICE_USER}", f"--regid={SERVICE_USER}", "--init-groups", "--", *argv]

    def start(self) -> Self:
        """initdb (first time), start the server and wait until it accepts connections."""
        if os.geteuid() == 0:
            user = pwd.getpwnam(SERVICE_USER)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        if not self.data.exists():
            subprocess.run(
                self._as_service_user(
                    [str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "hub", "--auth=trust", "-E", "UTF8"]
                ),
                check=True,
                capture_output=True,
                timeout=120,
            )
        log = self._log.open("ab")
        argv = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={LOOPBACK}",
            "-c",
            f"unix_socket_directories={self.dir}",
            # Throwaway data: durability only slows the tests down.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]
        self._process = subprocess.Popen(
            self._as_service_user(argv), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + 60
        while not self._accepts_queries():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise PostgresServerError(f"PostgreSQL did not start; log:\n{self._log.read_text()[-4000:]}")
            time.sleep(0.05)
        return self

    def _accepts_queries(self) -> bool:
        # The port opens before recovery ends ("the database system is starting up"): wait for a query.
        if not port_is_open(self.port):
            return False
        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def stop(self) -> None:
        """Fast shutdown (SIGINT) by pid; SIGKILL if it lingers."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        self._process = None

    def close(self) -> None:
        """Stop the server and remove its files."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        """Start on entering a `with` block."""
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop and clean up."""
        self.close()
