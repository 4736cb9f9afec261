"""Start a server subprocess, wait until it is ready, and stop it again by its pid.

Used by integration tests to run `hub serve` (and friends) as real processes. Output goes to an
unlinked temporary file rather than a pipe, so a chatty server can never block on a full pipe buffer,
and `output()` can be attached to assertion messages.
"""

# ruff: noqa: ASYNC109  -- per-call timeouts are this test-helper API's point; callers pass seconds

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from tests.support.ports import LOOPBACK, port_is_open

ReadyCheck = Callable[[], bool]
"""A cheap, non-blocking-ish probe: True once the process serves what the test needs."""

REPO_ROOT = Path(__file__).resolve().parents[2]


class ProcessFailedError(RuntimeError):
    """The process exited, or never became ready, while a test depended on it."""


def tcp_ready(port: int, host: str = LOOPBACK) -> ReadyCheck:
    """Ready once host:port accepts TCP connections."""
    return lambda: port_is_open(port, host)


def http_ready(url: str, status: int = 200) -> ReadyCheck:
    """Ready once GET `url` answers with `status`."""

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=0.5) as response:
                code: int = response.status
        except urllib.error.HTTPError as err:
            code = err.code
        except (OSError, ValueError):
            return False
        return code == status

    return check


def hub_command(*args: str) -> list[str]:
    """argv for the `hub` console script of the interpreter running the tests (its venv's bin/hub)."""
    beside_python = Path(sys.executable).with_name("hub")
    if beside_python.exists():
        return [str(beside_python), *args]
    found = shutil.which("hub")
    if found:
        return [found, *args]
    # Last resort: run the package directly, which works from a source checkout.
    return [sys.executable, "-m", "hub", *args]


class ManagedProcess:
    """One subprocess owned by a test: started on demand, stopped by pid, output kept for diagnostics."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        name: str | None = None,
    ) -> None:
        """Describe the process; nothing runs until `start()`. `env` is added to os.environ."""
        self.argv = list(argv)
        self.env = dict(env or {})
        self.cwd = str(cwd or REPO_ROOT)
        self.name = name or Path(self.argv[0]).name
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        """Pid of the running (or exited) process."""
        if self._popen is None:
            raise ProcessFailedError(f"{self.name} was never started")
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """Exit status once the process has exited, else None."""
        return None if self._popen is None else self._popen.poll()

    def is_running(self) -> bool:
        """True while the process has not exited."""
        return self._popen is not None and self._popen.poll() is None

    def start(self) -> Self:
        """Spawn the process (not waiting for readiness)."""
        if self._popen is not None:
            raise ProcessFailedError(f"{self.name} already started (pid {self._popen.pid})")
        # Closed in close(); it must outlive this method because the child writes to it.
        self._log = tempfile.TemporaryFile(prefix=f"{self.name}-", suffix=".log")  # noqa: SIM115
        self._popen = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Own session: a Ctrl-C in the test terminal must not reach it before the fixture stops it.
            start_new_session=True,
        )
        return self

    def output(self, limit: int = 20_000) -> str:
        """The last `limit` characters the process wrote to stdout/stderr."""
        if self._log is None:
            return ""
        size = os.fstat(self._log.fileno()).st_size
        start = max(0, size - limit)
        return os.pread(self._log.fileno(), size - start, start).decode("utf-8", "replace")

    def _not_ready_error(self, why: str) -> ProcessFailedError:
        return ProcessFailedError(f"{self.name} (pid {self.pid}) {why}; output:\n{self.output()}")

    def _fail_unless_still_starting(self, deadline: float, timeout: float) -> None:
        """Raise if the process exited, or if `deadline` (`timeout` seconds after the wait began) passed."""
        if not self.is_running():
            raise self._not_ready_error(f"exited with {self.returncode} before it was ready")
        if time.monotonic() >= deadline:
            raise self._not_ready_error(f"not ready after {timeout} s")

    def wait_ready(self, check: ReadyCheck, *, timeout: float = 15.0) -> Self:
        """Block until `check()` is true; fail early if the process exits meanwhile."""
        deadline = time.monotonic() + timeout
        while not check():
            self._fail_unless_still_starting(deadline, timeout)
            time.sleep(0.05)
        return self

    async def wait_ready_async(self, check: ReadyCheck, *, timeout: float = 15.0) -> Self:
        """Like `wait_ready`, but runs probes in a thread so the test's event loop keeps serving."""
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(check):
            self._fail_unless_still_starting(deadline, timeout)
            await asyncio.sleep(0.05)
        return self

    def send_signal(self, sig: int) -> None:
        """Signal the process by its pid (never its group or name)."""
        if self.is_running():
            os.kill(self.pid, sig)

    def stop(self, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Send `sig`, wait up to `timeout` s, then SIGKILL; return the exit status."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self.send_signal(sig)
            try:
                self._popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait(timeout=5)
        return self._popen.returncode

    async def stop_async(self, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """`stop()` without blocking the event loop (a draining server may take seconds)."""
        return await asyncio.to_thread(self.stop, sig=sig, timeout=timeout)

    def close(self) -> None:
        """Stop the process if needed and release the output file."""
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        """Start on entering a `with` block (if not started yet)."""
        if self._popen is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop and clean up on leaving the block."""
        self.close()

    async def __aenter__(self) -> Self:
        """Start on entering an `async with` block (if not started yet)."""
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop without blocking the loop, then clean up."""
        await self.stop_async()
        self.close()


def _spawn_hub_serve(
    port: int, host: str, extra_args: Sequence[str], env: Mapping[str, str] | None
) -> tuple[ManagedProcess, ReadyCheck]:
    """Spawn `hub serve` on host:port with metrics disabled; return it and the check that GET / answers 200."""
    argv = hub_command("serve", "--host", host, "--port", str(port), "--metrics-port", "0", *extra_args)
    process = ManagedProcess(argv, env=env, name=f"hub-serve-{port}").start()
    return process, http_ready(f"http://{host}:{port}/")


def start_hub_serve(
    port: int,
    *,
    host: str = LOOPBACK,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 15.0,
) -> ManagedProcess:
    """Start `hub serve` on host:port with metrics disabled and wait until GET / answers 200."""
    process, ready = _spawn_hub_serve(port, host, extra_args, env)
    try:
        process.wait_ready(ready, timeout=ready_timeout)
    except BaseException:
        process.close()
        raise
    return process
