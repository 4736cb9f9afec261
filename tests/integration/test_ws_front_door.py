"""Who answers the upgrade: hub's front door for a connection's first request, aiohttp for anything else.

Both paths end in the same Connection, so the checks here are that each path works and that the
front door leaves everything that is not a plain upgrade to aiohttp untouched.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ports import LOOPBACK
from tests.support.served import Served, start_served
from tests.support.topology import APP_KEY

UPGRADE = (
    f"GET /app/{APP_KEY}?protocol=7 HTTP/1.1\r\nHost: {LOOPBACK}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
).encode()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    running = start_served(Path(tmp_path_factory.mktemp("door")))
    try:
        yield running
    finally:
        running.process.close()


def exchange(port: int, *requests: bytes, until: bytes) -> bytes:
    """Send the requests one after another on one connection; read until ``until`` shows up."""
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        received = b""
        for request in requests:
            sock.sendall(request)
            mark = len(received)
            while b"\r\n\r\n" not in received[mark:]:
                received += sock.recv(65536)
        while until not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


async def test_a_first_request_upgrade_is_answered_by_the_front_door(served: Served) -> None:
    received = await asyncio.to_thread(exchange, served.port, UPGRADE, until=b"connection_established")
    head = received.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"Server: " not in head, "aiohttp did not build this response"
    assert b"pusher:connection_established" in received


async def test_an_upgrade_on_a_kept_alive_connection_is_answered_by_aiohttp_and_works_the_same(
    served: Served,
) -> None:
    health = f"GET / HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode()
    received = await asyncio.to_thread(exchange, served.port, health, UPGRADE, until=b"connection_established")
    assert received.startswith(b"HTTP/1.1 200 OK")
    assert b"HTTP/1.1 101 Switching Protocols" in received
    assert b"pusher:connection_established" in received


async def test_a_request_split_in_single_bytes_still_upgrades(served: Served) -> None:
    def trickle() -> bytes:
        with socket.create_connection((LOOPBACK, served.port), timeout=5) as sock:
            for i in range(len(UPGRADE)):
                sock.sendall(UPGRADE[i : i + 1])
            received = b""
            while b"connection_established" not in received:
                received += sock.recv(65536)
            return received

    assert (await asyncio.to_thread(trickle)).startswith(b"HTTP/1.1 101 ")


@pytest.mark.parametrize(
    "request_bytes",
    [
        f"GET /app/{APP_KEY} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),  # no upgrade headers
        UPGRADE.replace(b"Upgrade: websocket", b"Upgrade: h2c"),
        UPGRADE.replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 99"),
        UPGRADE.replace(b"Host:", b"Host :"),
    ],
    ids=["plain-get", "h2c", "bad-version", "space-before-colon"],
)
async def test_anything_but_a_plain_upgrade_gets_aiohttps_answer(served: Served, request_bytes: bytes) -> None:
    received = await asyncio.to_thread(exchange, served.port, request_bytes, until=b"\r\n\r\n")
    assert received.startswith(b"HTTP/1.") and b" 400 " in received.split(b"\r\n", 1)[0]
    assert b"Server: " in received


@pytest.fixture(scope="module")
def served_prefixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    running = start_served(Path(tmp_path_factory.mktemp("door-prefix")), "--path-prefix", "/ws")
    try:
        yield running
    finally:
        running.process.close()


async def test_the_front_door_answers_upgrades_under_the_path_prefix(served_prefixed: Served) -> None:
    upgrade = UPGRADE.replace(b"GET /app/", b"GET /ws/app/")
    received = await asyncio.to_thread(exchange, served_prefixed.port, upgrade, until=b"connection_established")
    assert received.startswith(b"HTTP/1.1 101 ")
    assert b"Server: " not in received.split(b"\r\n\r\n", 1)[0]
