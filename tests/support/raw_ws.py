"""A bare aiohttp WebSocket client speaking the Pusher protocol by hand, for wire-level checks.

This is our own test client, not a supported client library: it exists to look at exact frames, to send
frames no real library would send (malformed JSON, binary frames, oversize events) and to imitate clients
whose libraries we cannot run here (the Java/Android SDK: protocol 5, `pusher:ping` without data, answers
only RFC 6455 pings). Real-client behaviour is tested with pusher-js through `JsClients`.
"""

# ruff: noqa: ASYNC109  -- per-call timeouts are this test-helper API's point; callers pass seconds

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp

from tests.support.ports import LOOPBACK


@dataclass(frozen=True)
class Frame:
    """One text frame from the server: the raw text and its decoded envelope."""

    text: str
    message: dict[str, Any]

    @property
    def event(self) -> str | None:
        """The frame's `event`."""
        value = self.message.get("event")
        return value if isinstance(value, str) else None

    @property
    def channel(self) -> str | None:
        """The frame's `channel`, if any."""
        value = self.message.get("channel")
        return value if isinstance(value, str) else None

    @property
    def data(self) -> Any:
        """`data` exactly as sent (a JSON string stays a string)."""
        return self.message.get("data")

    def decoded_data(self) -> Any:
        """`data` with one level of JSON string encoding removed, as pusher-js decodes it."""
        data = self.data
        if isinstance(data, str):
            try:
                return json.loads(data)
            except ValueError:
                return data
        return data


class RawWsError(AssertionError):
    """An expected frame or close did not happen (an assertion failure of the test)."""


class RawClient:
    """One WebSocket to the hub. Frames are collected by a reader task; tests wait on them.

    With ``autoping=True`` (aiohttp's default) RFC 6455 pings are answered automatically, as every
    browser and the Java SDK do. With ``autoping=False`` pings are recorded in ``pings`` and answered only
    when ``answer_pings`` is set, so a test can play a client that answers nothing.
    """

    def __init__(
        self,
        port: int,
        key: str,
        *,
        protocol: str | int | None = 7,
        client: str = "raw-test",
        host: str = LOOPBACK,
        autoping: bool = True,
        answer_pings: bool = True,
    ) -> None:
        """Describe the connection; nothing happens until `open()`."""
        query = {"client": client, "version": "0.0.1"}
        if protocol is not None:
            query["protocol"] = str(protocol)
        self.url = f"ws://{host}:{port}/app/{key}"
        self.query = query
        self.autoping = autoping
        self.answer_pings = answer_pings
        self.frames: list[Frame] = []
        self.pings = 0
        self.close_code: int | None = None
        self.socket_id: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._closed = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------------------------------

    async def open(self, *, timeout: float = 5.0) -> Self:
        """Connect and start reading; does not wait for `connection_established` (see `established`)."""
        self._session = aiohttp.ClientSession()
        try:
            self._ws = await asyncio.wait_for(
                self._session.ws_connect(
                    self.url,
                    params=self.query,
                    autoping=self.autoping,
                    heartbeat=None,
                    timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                ),
                timeout,
            )
        except BaseException:
            await self._session.close()
            raise
        self._reader = asyncio.create_task(self._read(), name=f"raw-ws-{self.url}")
        return self

    async def established(self, *, timeout: float = 5.0) -> str:
        """Wait for `pusher:connection_established` and return the socket id it carries."""
        frame = await self.wait_event("pusher:connection_established", timeout=timeout)
        self.socket_id = str(frame.decoded_data()["socket_id"])
        return self.socket_id

    async def close(self) -> None:
        """Close the socket (if still open) and the session."""
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 2.0)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> Self:
        """Open on entering `async with`."""
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close on leaving `async with`."""
        await self.close()

    @property
    def closed(self) -> bool:
        """True once the server closed the socket (or the connection dropped)."""
        return self._closed.is_set()

    # --- sending -----------------------------------------------------------------------------------

    @property
    def ws(self) -> aiohttp.ClientWebSocketResponse:
        """The underlying aiohttp WebSocket."""
        if self._ws is None:
            raise RuntimeError("RawClient is not open")
        return self._ws

    async def send_json(self, message: Any) -> None:
        """Send one JSON text frame."""
        await self.ws.send_str(json.dumps(message))

    async def send_text(self, text: str) -> None:
        """Send a text frame verbatim."""
        await self.ws.send_str(text)

    async def send_bytes(self, payload: bytes) -> None:
        """Send a binary frame."""
        await self.ws.send_bytes(payload)

    async def subscribe(
        self, channel: str, auth: str | None = None, channel_data: str | None = None, *, timeout: float = 5.0
    ) -> Frame:
        """Send `pusher:subscribe`; return the `subscription_succeeded` or `subscription_error` frame."""
        data: dict[str, Any] = {"channel": channel}
        if auth is not None:
            data["auth"] = auth
        if channel_data is not None:
            data["channel_data"] = channel_data
        since = len(self.frames)
        await self.send_json({"event": "pusher:subscribe", "data": data})
        return await self.wait_for(
            lambda f: (
                f.channel == channel
                and f.event in ("pusher_internal:subscription_succeeded", "pusher:subscription_error")
            ),
            since=since,
            timeout=timeout,
            what=f"an answer to subscribing {channel}",
        )

    # --- receiving ---------------------------------------------------------------------------------

    async def wait_for(
        self,
        predicate: Any,
        *,
        since: int = 0,
        timeout: float = 5.0,
        what: str = "a matching frame",
    ) -> Frame:
        """The first frame (index >= `since`) satisfying `predicate`, waiting up to `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        index = since
        while True:
            while index < len(self.frames):
                frame = self.frames[index]
                index += 1
                if predicate(frame):
                    return frame
            remaining = deadline - loop.time()
            if remaining <= 0 or self.closed:
                raise RawWsError(
                    f"no {what} within {timeout} s (closed={self.closed}, close code {self.close_code}); "
                    f"frames: {[f.text[:200] for f in self.frames[-10:]]}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_event(
        self, event: str, *, channel: str | None = None, since: int = 0, timeout: float = 5.0
    ) -> Frame:
        """The first frame with this event (and channel, when given)."""
        return await self.wait_for(
            lambda f: f.event == event and (channel is None or f.channel == channel),
            since=since,
            timeout=timeout,
            what=f"{event} frame" + (f" on {channel}" if channel else ""),
        )

    async def expect_no_event(
        self, event: str, *, channel: str | None = None, since: int = 0, within: float = 0.5
    ) -> None:
        """Assert no frame with this event (and channel) exists after `since` or arrives within `within` s."""
        try:
            frame = await self.wait_event(event, channel=channel, since=since, timeout=within)
        except RawWsError:
            return
        raise AssertionError(f"unexpected frame {frame.text}")

    async def wait_closed(self, *, timeout: float = 5.0) -> int | None:
        """Wait until the server closes the socket; return the close code."""
        try:
            await asyncio.wait_for(self._closed.wait(), timeout)
        except TimeoutError:
            raise RawWsError(f"socket still open after {timeout} s") from None
        return self.close_code

    def mark(self) -> int:
        """Index to pass as `since=` to consider only frames arriving after now."""
        return len(self.frames)

    async def _read(self) -> None:
        ws = self.ws
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    try:
                        message = json.loads(msg.data)
                    except ValueError:
                        message = {}
                    self.frames.append(Frame(msg.data, message if isinstance(message, dict) else {}))
                elif msg.type is aiohttp.WSMsgType.PING:
                    self.pings += 1
                    if self.answer_pings:
                        await ws.pong(msg.data)
                self._changed.set()
        finally:
            self.close_code = ws.close_code
            self._closed.set()
            self._changed.set()


async def refusal(port: int, key: str, *, protocol: str | int | None = 7, timeout: float = 5.0) -> tuple[Frame, int]:
    """Connect expecting a refusal: return the first frame (a `pusher:error`) and the close code."""
    async with RawClient(port, key, protocol=protocol) as client:
        code = await client.wait_closed(timeout=timeout)
        if not client.frames:
            raise RawWsError(f"closed with {code} without a pusher:error frame")
        assert code is not None
        return client.frames[0], code


async def subscription_answer(
    port: int, key: str, channel: str, *, sign: Callable[[str], Mapping[str, str]] | None = None
) -> Frame:
    """Subscribe a fresh socket to `channel` once and return the server's answer; the socket is closed after.

    `sign` gets the socket id and returns what to send with the subscription: `auth`, and `channel_data`
    for a presence channel (e.g. the SDK's `authenticate(channel, socket_id, ...)`).
    """
    async with RawClient(port, key) as client:
        socket_id = await client.established()
        signed = sign(socket_id) if sign is not None else {}
        return await client.subscribe(channel, auth=signed.get("auth"), channel_data=signed.get("channel_data"))


async def open_established(port: int, key: str, *, quota_wait: float = 3.0, **options: Any) -> RawClient:
    """An open socket past `connection_established`.

    A 4004 refusal (connection quota) is retried for up to `quota_wait` seconds: sockets closed by an
    earlier test may not be counted out yet. Any other refusal fails.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + quota_wait
    while True:
        client = await RawClient(port, key, **options).open()
        first = await client.wait_for(lambda f: True, what="a first frame")
        if first.event == "pusher:connection_established":
            client.socket_id = str(first.decoded_data()["socket_id"])
            return client
        await client.close()
        if first.decoded_data().get("code") != 4004 or loop.time() > deadline:
            raise RawWsError(f"connection to {key} refused: {first.text}")
        await asyncio.sleep(0.1)
