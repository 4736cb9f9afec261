"""Abusive clients, each a bounded loop run in its own process so it does not share the measuring one's loop.

    python -m tests.support.abusers flood --port 6001 --seconds 5

prints one JSON object with what the abuser saw (statuses, answers, bytes) and exits. Every connection
comes from 127.0.0.2 and goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiohttp

from tests.support.ports import LOOPBACK
from tests.support.request_signing import signed_params
from tests.support.topology import APP_ID, APP_KEY

ABUSER_ADDRESS = "127.0.0.2"


def _session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(local_addr=(ABUSER_ADDRESS, 0), limit=0, force_close=True)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=15))


async def _for_a_while(seconds: float, workers: int, work: Callable[[], Awaitable[None]]) -> None:
    deadline = time.monotonic() + seconds

    async def loop() -> None:
        while time.monotonic() < deadline:
            await work()

    await asyncio.gather(*(loop() for _ in range(workers)))


def _count(counts: dict[str, int], key: object) -> None:
    counts[str(key)] = counts.get(str(key), 0) + 1


async def flood(port: int, seconds: float) -> dict[str, Any]:
    """WebSocket connects as fast as 50 workers can open and close them."""
    statuses: dict[str, int] = {}
    async with _session() as session:

        async def connect() -> None:
            try:
                async with session.ws_connect(f"ws://{LOOPBACK}:{port}/app/{APP_KEY}?protocol=7") as ws:
                    _count(statuses, 101)
                    await ws.close()
            except aiohttp.WSServerHandshakeError as exc:
                _count(statuses, exc.status)
            except aiohttp.ClientError:
                _count(statuses, "error")

        await _for_a_while(seconds, 50, connect)
    return {"statuses": statuses}


async def channels(port: int, wanted: int) -> dict[str, Any]:
    """One socket subscribing to ``wanted`` public channels as fast as it can write."""
    answers: dict[str, int] = {}
    async with _session() as session, session.ws_connect(f"ws://{LOOPBACK}:{port}/app/{APP_KEY}?protocol=7") as ws:
        await ws.receive_json(timeout=5)
        started = time.monotonic()
        for n in range(wanted):
            await ws.send_json({"event": "pusher:subscribe", "data": {"channel": f"greedy-{n}"}})
        while sum(answers.values()) < wanted and time.monotonic() - started < 60:
            frame = await ws.receive_json(timeout=30)
            if frame["event"] == "pusher_internal:subscription_succeeded":
                _count(answers, "succeeded")
            elif frame["event"] == "pusher:subscription_error":
                _count(answers, frame["data"]["type"])
        return {"answers": answers, "seconds": time.monotonic() - started}


async def frames(port: int, seconds: float) -> dict[str, Any]:
    """One socket writing 256 KB frames for ``seconds``, as fast as TCP takes them."""
    frame = json.dumps({"event": "pusher:ping", "data": "x" * (256 * 1024 - 64)})
    sent = 0
    url = f"ws://{LOOPBACK}:{port}/app/{APP_KEY}?protocol=7"
    # The node reads this socket slowly on purpose: do not wait for it to answer the close.
    quick_close = aiohttp.ClientWSTimeout(ws_close=0.5)
    async with (
        _session() as session,
        session.ws_connect(url, max_msg_size=0, autoping=False, timeout=quick_close) as ws,
    ):
        await ws.receive_json(timeout=5)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                await asyncio.wait_for(ws.send_str(frame), timeout=max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
            sent += len(frame)
    return {"sent_bytes": sent}


async def _first_status(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, drip: bytes, rounds: int) -> str:
    """Drip ``drip`` once a second until the server answers or closes; its status, or what happened."""
    try:
        for _ in range(rounds):
            with contextlib.suppress(TimeoutError):
                head = await asyncio.wait_for(reader.read(64), timeout=1.0)
                return head.split(b" ")[1].decode() if head.startswith(b"HTTP/1.1") else "closed"
            writer.write(drip)
            await writer.drain()
        return "none"
    except (ConnectionError, IndexError):
        return "reset"
    finally:
        writer.close()


async def slow_heads(port: int, count: int) -> dict[str, Any]:
    """``count`` connections sending their request head one header line a second."""
    answers: dict[str, int] = {}

    async def one() -> None:
        reader, writer = await asyncio.open_connection(LOOPBACK, port, local_addr=(ABUSER_ADDRESS, 0))
        writer.write(b"POST /apps/1/events HTTP/1.1\r\nHost: hub\r\n")
        _count(answers, await _first_status(reader, writer, b"X-Slow: 1\r\n", 10))

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(count)))
    return {"answers": answers, "seconds": time.monotonic() - started}


async def slow_bodies(port: int, count: int) -> dict[str, Any]:
    """``count`` signed API requests whose 100-byte body comes one byte a second."""
    answers: dict[str, int] = {}
    path = f"/apps/{APP_ID}/events"
    query = "&".join(f"{k}={v}" for k, v in signed_params("POST", path, b"{}" * 50).items())

    async def one() -> None:
        reader, writer = await asyncio.open_connection(LOOPBACK, port, local_addr=(ABUSER_ADDRESS, 0))
        writer.write(f"POST {path}?{query} HTTP/1.1\r\nHost: hub\r\nContent-Length: 100\r\n\r\n{{".encode())
        _count(answers, await _first_status(reader, writer, b" ", 10))

    await asyncio.gather(*(one() for _ in range(count)))
    return {"answers": answers}


async def bad_signatures(port: int, seconds: float) -> dict[str, Any]:
    """Publishes signed with the wrong secret, from 20 workers for ``seconds``."""
    statuses: dict[str, int] = {}
    path = f"/apps/{APP_ID}/events"
    body = json.dumps({"name": "forged", "channel": "well-behaved", "data": "{}"}).encode()
    async with _session() as session:

        async def forge() -> None:
            params = signed_params("POST", path, body, secret="not-the-secret")
            async with session.post(f"http://{LOOPBACK}:{port}{path}", params=params, data=body) as response:
                _count(statuses, response.status)

        await _for_a_while(seconds, 20, forge)
    return {"statuses": statuses}


CASES: dict[str, Callable[[int, float], Coroutine[Any, Any, dict[str, Any]]]] = {
    "flood": flood,
    "channels": lambda port, n: channels(port, int(n)),
    "frames": frames,
    "slow_heads": lambda port, n: slow_heads(port, int(n)),
    "slow_bodies": lambda port, n: slow_bodies(port, int(n)),
    "bad_signatures": bad_signatures,
}


def main() -> None:
    """Run one case and print its result as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--size", type=float, required=True, help="seconds, or a count for counted cases")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(CASES[args.case](args.port, args.size))))


if __name__ == "__main__":
    main()
