"""Free loopback ports for servers started by tests."""

# ruff: noqa: ASYNC109  -- per-call timeouts are this test-helper API's point; callers pass seconds

from __future__ import annotations

import asyncio
import socket
import time

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on `host` that was free a moment ago.

    The kernel picks it (bind to port 0), so parallel test runs do not collide on guessed numbers. The
    socket is closed before the caller binds, so another process could still take it in between; that
    window is tiny and accepted in tests.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_open(port: int, host: str = LOOPBACK, *, timeout: float = 0.2) -> bool:
    """Return True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(port: int, host: str = LOOPBACK, *, timeout: float = 10.0) -> None:
    """Block until host:port accepts connections; raise TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not port_is_open(port, host):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"nothing listening on {host}:{port} after {timeout} s")
        time.sleep(0.05)


async def wait_for_port_async(port: int, host: str = LOOPBACK, *, timeout: float = 10.0) -> None:
    """Like `wait_for_port` but yields to the event loop between attempts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=0.5)
        except (OSError, TimeoutError):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout} s") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
