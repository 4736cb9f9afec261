"""The load of the soak and chaos suites: stable subscribers that check every event, churning clients, a publisher.

- ``Stable``: a raw WebSocket client subscribed to a few ``stable-*`` channels and ``presence-stable``
  for the whole run. It records every event's (channel, sequence number) and when it was connected,
  and reconnects (to the other ws node) when its node goes away.
- ``Churner``: connects, joins a public, private or presence channel, stays a moment, and leaves by a
  clean close, an unsubscribe, or an abrupt TCP reset; over and over until told to stop.
- ``Publisher``: a signed HTTP publish per ``interval`` into the stable channels, round robin, with a
  sequence number per channel; it records each answer (200, 503, other, connection failure).

At the end the suites compare what the clients know (who is subscribed where, what was answered 200)
with what the cluster says (``/channels``, counts, presence ``/users``, metrics, webhooks).
"""

# ruff: noqa: ASYNC109  -- per-call timeouts are this module's point; callers pass seconds

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
import pusher

from tests.support.request_signing import signed_params
from tests.support.topology import APP_ID, APP_KEY, APP_SECRET

STABLE_PRESENCE = "presence-stable"
SIGNER = pusher.Pusher(app_id=APP_ID, key=APP_KEY, secret=APP_SECRET)


def _auth(channel: str, socket_id: str, user_id: str | None = None) -> dict[str, str]:
    """The subscribe data a backend's auth endpoint would answer, signed by the real SDK."""
    if user_id is None:
        signed = SIGNER.authenticate(channel, socket_id)
    else:
        signed = SIGNER.authenticate(channel, socket_id, {"user_id": user_id, "user_info": {"name": user_id}})
    return {"channel": channel, **signed}


async def _connect(
    session: aiohttp.ClientSession, url: str, timeout: float = 5.0
) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    ws = await session.ws_connect(url, heartbeat=None, autoping=True)
    frame = await ws.receive_json(timeout=timeout)
    if frame.get("event") != "pusher:connection_established":
        await ws.close()
        raise ConnectionError(f"not established: {frame}")
    return ws, json.loads(frame["data"])["socket_id"]


async def _subscribed(ws: aiohttp.ClientWebSocketResponse, data: dict[str, str], timeout: float = 5.0) -> bool:
    await ws.send_json({"event": "pusher:subscribe", "data": data})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = await ws.receive_json(timeout=max(0.01, deadline - time.monotonic()))
        if frame.get("channel") != data["channel"]:
            continue
        if frame.get("event") == "pusher_internal:subscription_succeeded":
            return True
        if frame.get("event") == "pusher:subscription_error":
            return False
    return False


def reset(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Drop the connection with a TCP RST, as a crashed phone or a pulled cable looks to the server."""
    sock = ws.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # aiohttp offers no public abort; its connection's transport closes the descriptor, which with
    # SO_LINGER 0 sends the RST.
    connection = ws._response.connection
    if connection is not None and connection.transport is not None:
        connection.transport.abort()


@dataclass
class Stable:
    """A long-lived subscriber; ``received[channel]`` lists the sequence numbers it got, in order."""

    name: str
    urls: Sequence[str]
    channels: Sequence[str]
    node: int = 0
    received: dict[str, list[int]] = field(default_factory=dict)
    arrivals: list[float] = field(default_factory=list)
    connected_since: float | None = None
    outages: list[tuple[float, float]] = field(default_factory=list)
    duplicates: int = 0
    out_of_order: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def user_id(self) -> str:
        """Its presence user id."""
        return self.name

    def stop(self) -> None:
        """Close after the current read."""
        self._stop.set()

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Stay connected and subscribed; on a lost connection, reconnect to the next node."""
        down_since: float | None = None
        while not self._stop.is_set():
            try:
                ws, socket_id = await _connect(session, self.urls[self.node % len(self.urls)])
            except (aiohttp.ClientError, OSError, TimeoutError, ConnectionError):
                down_since = down_since or time.time()
                self.node += 1
                await asyncio.sleep(0.2)
                continue
            try:
                ok = all([await _subscribed(ws, {"channel": c}) for c in self.channels])
                ok = ok and await _subscribed(ws, _auth(STABLE_PRESENCE, socket_id, self.user_id))
                if not ok:
                    raise ConnectionError("a stable subscription was refused")
                now = time.time()
                if down_since is not None:
                    self.outages.append((down_since, now))
                    down_since = None
                self.connected_since = now
                await self._read(ws)
            except (aiohttp.ClientError, OSError, TimeoutError, ConnectionError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    await ws.close()
            self.connected_since = None
            if not self._stop.is_set():
                down_since = down_since or time.time()
                self.node += 1

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            while True:
                receive = asyncio.ensure_future(ws.receive())
                done, _ = await asyncio.wait({receive, stop}, return_when=asyncio.FIRST_COMPLETED)
                if stop in done:
                    receive.cancel()
                    return
                msg = receive.result()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"socket ended: {msg.type}")
                frame = json.loads(msg.data)
                if frame.get("event") != "seq":
                    continue
                seq = json.loads(frame["data"])["seq"]
                got = self.received.setdefault(frame["channel"], [])
                if got and seq == got[-1]:
                    self.duplicates += 1
                elif got and seq < got[-1]:
                    self.out_of_order += 1
                got.append(seq)
                self.arrivals.append(time.time())
        finally:
            stop.cancel()


@dataclass
class Churner:
    """Joins and leaves channels in a loop; counts what it did."""

    urls: Sequence[str]
    prefix: str
    seed: int
    joins: int = 0
    failures: int = 0
    exits: dict[str, int] = field(default_factory=dict)

    async def run(self, session: aiohttp.ClientSession, until: float) -> None:
        """Churn until ``until`` (monotonic)."""
        rng = random.Random(self.seed)
        while time.monotonic() < until:
            kind = rng.choice(("public", "private", "presence"))
            n = rng.randrange(20)
            channel = {"public": f"churn-{n}", "private": f"private-churn-{n}", "presence": f"presence-churn-{n}"}[kind]
            channel = f"{self.prefix}{channel}" if kind == "public" else channel.replace("churn", f"{self.prefix}churn")
            exit_kind = rng.choice(("close", "unsubscribe", "reset"))
            try:
                ws, socket_id = await _connect(session, rng.choice(self.urls))
            except (aiohttp.ClientError, OSError, TimeoutError, ConnectionError):
                self.failures += 1
                await asyncio.sleep(0.2)
                continue
            try:
                if kind == "public":
                    data = {"channel": channel}
                elif kind == "private":
                    data = _auth(channel, socket_id)
                else:
                    data = _auth(channel, socket_id, f"churn-user-{self.seed}-{rng.randrange(3)}")
                if await _subscribed(ws, data):
                    self.joins += 1
                await asyncio.sleep(rng.uniform(0.1, 1.5))
                if exit_kind == "unsubscribe":
                    await ws.send_json({"event": "pusher:unsubscribe", "data": {"channel": channel}})
                    await asyncio.sleep(0.05)
                if exit_kind == "reset":
                    reset(ws)
                else:
                    await ws.close()
                self.exits[exit_kind] = self.exits.get(exit_kind, 0) + 1
            except (aiohttp.ClientError, OSError, TimeoutError, ConnectionError):
                self.failures += 1
                with contextlib.suppress(Exception):
                    await ws.close()


@dataclass
class Publisher:
    """Publishes ``seq`` events round robin into ``channels``; ``accepted[channel]`` holds the 200 ones."""

    api_url: str
    channels: Sequence[str]
    interval: float
    accepted: dict[str, list[int]] = field(default_factory=dict)
    answers: list[tuple[float, str]] = field(default_factory=list)
    published_at: dict[tuple[str, int], float] = field(default_factory=dict)

    async def run(self, session: aiohttp.ClientSession, until: float) -> None:
        """Publish until ``until`` (monotonic)."""
        path = f"/apps/{APP_ID}/events"
        seqs = dict.fromkeys(self.channels, 0)
        index = 0
        while time.monotonic() < until:
            started = time.monotonic()
            channel = self.channels[index % len(self.channels)]
            index += 1
            seq = seqs[channel]
            seqs[channel] += 1
            self.published_at[(channel, seq)] = time.time()
            body = json.dumps({"name": "seq", "channel": channel, "data": json.dumps({"seq": seq})}).encode()
            try:
                async with session.post(
                    self.api_url + path,
                    params=signed_params("POST", path, body),
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=5),
                ) as response:
                    answer = str(response.status)
            except (aiohttp.ClientError, OSError, TimeoutError):
                answer = "no answer"
            self.answers.append((time.time(), answer))
            if answer == "200":
                self.accepted.setdefault(channel, []).append(seq)
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def tally(self, since: float = 0.0, until: float = float("inf")) -> dict[str, int]:
        """Answers by kind between two wall-clock times."""
        counts: dict[str, int] = {}
        for at, answer in self.answers:
            if since <= at <= until:
                counts[answer] = counts.get(answer, 0) + 1
        return counts
