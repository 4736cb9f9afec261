"""One raw Redis connection speaking RESP2: commands out, replies and pushed messages parsed in one pass.

The broker uses two: a pub/sub connection (SUBSCRIBE, then pushed messages) and a command connection
(PUBLISH). Why not redis-py: receiving is the hot path of every ws node, and ``PubSub.get_message`` costs
one await, a lock and a dict per message. This protocol parses whole TCP reads synchronously inside
``data_received`` and hands each message to the callback without awaiting. Measured on the dev box
(100 000 msgpack envelopes of ~60 bytes published from another process, receiver CPU time per message,
including ``msgpack.unpackb``): redis-py ``PubSub`` 16.2 us, this protocol 1.7 us. Publishing likewise
writes the command and awaits one future: no pool checkout, no per-reply parser coroutine (38 us per
sequential publish against 78 us with redis-py). Coarse guard in the suite:
``tests/contract/test_broker_contract.py::test_receive_path_handles_a_burst_quickly``.

RESP2 only (no HELLO): a pushed message is ``*3 $7 message $<channel> $<payload>`` and ``PING`` in
subscribed mode answers ``*2 $4 pong $0``. Everything that is not a push is the reply to the oldest
outstanding request, since Redis answers a connection's commands in order, so requests pipeline freely.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

MessageCallback = Callable[[bytes, bytes], None]
"""Called with (channel, payload) for every message pushed on a subscribed channel."""

SubscriptionCallback = Callable[[bytes, bytes, int], None]
"""Called with (kind, channel, subscribed count) for each (un)subscribe confirmation or server-pushed
``sunsubscribe`` (Redis Cluster sends one when the channel's slot moved to another node)."""

ErrorCallback = Callable[["RespError"], None]
"""Called with an error reply nobody waits for (a refused SUBSCRIBE, a ``MOVED`` for an SSUBSCRIBE)."""

_CRLF = b"\r\n"
_MESSAGE_HEAD = b"*3\r\n$7\r\nmessage\r\n"
_MESSAGE_HEAD_LEN = len(_MESSAGE_HEAD)
_SMESSAGE_HEAD = b"*3\r\n$8\r\nsmessage\r\n"  # sharded pub/sub (Redis Cluster): same shape, other name
_SMESSAGE_HEAD_LEN = len(_SMESSAGE_HEAD)
_SUBSCRIPTION_KINDS = (
    b"subscribe",
    b"unsubscribe",
    b"psubscribe",
    b"punsubscribe",
    b"ssubscribe",
    b"sunsubscribe",
)
_MESSAGE_KINDS = (b"message", b"smessage")


def _ignore(channel: bytes, payload: bytes) -> None:
    """Message callback of connections that never subscribe."""


class RespError(Exception):
    """An error reply (``-ERR ...``) from Redis."""


class ConnectionClosed(ConnectionError):
    """The connection was lost or closed before a reply arrived."""


def encode_command(*args: bytes) -> bytes:
    """A command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n" % len(arg))
        parts.append(arg)
        parts.append(_CRLF)
    return b"".join(parts)


def parse_value(buf: bytes, pos: int) -> tuple[Any, int] | None:
    """Parse one RESP2 value at ``pos``: (value, next position), or None when ``buf`` ends first.

    Simple strings and bulk strings are bytes, integers int, nil None, arrays lists, errors RespError.
    """
    end = buf.find(_CRLF, pos)
    if end < 0:
        return None
    kind = buf[pos]
    if kind == 36:  # '$' bulk string
        length = int(buf[pos + 1 : end])
        if length < 0:
            return None, end + 2
        start = end + 2
        stop = start + length
        if stop + 2 > len(buf):
            return None
        return buf[start:stop], stop + 2
    if kind == 42:  # '*' array
        count = int(buf[pos + 1 : end])
        if count < 0:
            return None, end + 2
        items: list[Any] = []
        at = end + 2
        for _ in range(count):
            parsed = parse_value(buf, at)
            if parsed is None:
                return None
            item, at = parsed
            items.append(item)
        return items, at
    if kind == 43:  # '+' simple string
        return buf[pos + 1 : end], end + 2
    if kind == 58:  # ':' integer
        return int(buf[pos + 1 : end]), end + 2
    if kind == 45:  # '-' error
        return RespError(buf[pos + 1 : end].decode("utf-8", "replace")), end + 2
    raise ValueError(f"not a RESP2 type byte: {bytes([kind])!r}")


class RespProtocol(asyncio.Protocol):
    """asyncio protocol for one Redis connection; see the module docstring for why it parses RESP itself."""

    def __init__(
        self,
        on_message: MessageCallback | None = None,
        on_subscription: SubscriptionCallback | None = None,
        on_error: ErrorCallback | None = None,
    ) -> None:
        self._on_message = on_message or _ignore
        self._on_subscription = on_subscription
        self._on_error = on_error
        self._transport: asyncio.Transport | None = None
        self._waiters: deque[asyncio.Future[Any]] = deque()
        # Bytes of an incomplete value, kept as chunks and joined once ``_need`` bytes are there, so a large
        # payload arriving in many reads is copied once, not once per read.
        self._rest: list[bytes] = []
        self._rest_len = 0
        self._need = 0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionClosed("Redis connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        # Hot path: everything below runs once per TCP read and loops over the messages in it.
        if self._rest:
            self._rest.append(data)
            self._rest_len += len(data)
            if self._rest_len < self._need:
                return
            data = b"".join(self._rest)
            self._rest = []
        try:
            pos, need = self._parse(data)
        except (ValueError, IndexError) as exc:
            # Bytes we cannot frame: the stream is unusable, so drop the connection and let the owner reconnect.
            self._fail(ConnectionClosed(f"unparseable data from Redis: {exc}"))
            return
        if pos < len(data):
            rest = data[pos:]
            self._rest = [rest]
            self._rest_len = len(rest)
            self._need = max(need, len(rest) + 1)

    def _parse(self, buf: bytes) -> tuple[int, int]:
        """Dispatch every complete value in ``buf``; return where the incomplete tail starts and its known size."""
        on_message = self._on_message
        find = buf.find
        size = len(buf)
        pos = 0
        while pos < size:
            head = _MESSAGE_HEAD_LEN if buf.startswith(_MESSAGE_HEAD, pos) else 0
            if not head and buf.startswith(_SMESSAGE_HEAD, pos):
                head = _SMESSAGE_HEAD_LEN
            if head:
                # Fast path for pushed messages: two length-prefixed bulk strings after a fixed head.
                at = pos + head
                end = find(_CRLF, at)
                if end < 0:
                    return pos, 0
                channel_start = end + 2
                channel_stop = channel_start + int(buf[at + 1 : end])
                at = channel_stop + 2
                end = find(_CRLF, at)
                if end < 0:
                    return pos, 0
                payload_start = end + 2
                payload_stop = payload_start + int(buf[at + 1 : end])
                if payload_stop + 2 > size:
                    return pos, payload_stop + 2 - pos
                on_message(buf[channel_start:channel_stop], buf[payload_start:payload_stop])
                pos = payload_stop + 2
                continue
            parsed = parse_value(buf, pos)
            if parsed is None:
                return pos, 0
            value, pos = parsed
            self._dispatch(value)
        return pos, 0

    def _dispatch(self, value: Any) -> None:
        """Route a value that is not a fast-path message: subscription confirmations, then replies."""
        if isinstance(value, list) and len(value) == 3 and value[0] in _SUBSCRIPTION_KINDS:
            if self._on_subscription is not None and isinstance(value[2], int):
                self._on_subscription(value[0], value[1] or b"", value[2])
            return
        if isinstance(value, list) and len(value) == 3 and value[0] in _MESSAGE_KINDS:
            self._on_message(value[1], value[2])  # only reached if the fast path's head did not match byte-wise
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if waiter.done():  # its requester gave up (timeout); this reply was for it
                return
            if isinstance(value, RespError):
                waiter.set_exception(value)
            else:
                waiter.set_result(value)
            return
        if isinstance(value, RespError):
            if self._on_error is not None:
                self._on_error(value)
                return
            # An error nobody waits for (e.g. a refused SUBSCRIBE): the subscription state is now unknown.
            self._fail(ConnectionClosed(f"Redis refused a command nobody waits for: {value}"))

    def _fail(self, exc: Exception) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(exc)
        self.abort()

    # used by the owner

    @property
    def is_open(self) -> bool:
        """Whether the transport is still connected."""
        return self._transport is not None and not self._transport.is_closing()

    def send(self, *args: bytes) -> None:
        """Write a command whose replies are pushes ((S)SUBSCRIBE, (S)UNSUBSCRIBE); never waits."""
        if self._transport is None:
            raise ConnectionClosed("Redis connection is closed")
        self._transport.write(encode_command(*args))

    def send_request(self, *args: bytes) -> asyncio.Future[Any]:
        """Write a command whose reply is not a push; the future resolves to the reply (RespError if refused)."""
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.send(*args)
        self._waiters.append(waiter)
        return waiter

    async def authenticate(self, username: str | None, password: str | None) -> None:
        """``AUTH [username] password`` when a password is set (nothing otherwise); RespError if refused."""
        if password is not None:
            await self.request(b"AUTH", *([username.encode()] if username else []), password.encode())

    async def request(self, *args: bytes) -> Any:
        """Write a command and wait for its reply (AUTH, CLIENT, PING); raise RespError for an error reply."""
        return await self.send_request(*args)

    def abort(self) -> None:
        """Drop the connection at once (connection_lost follows)."""
        if self._transport is not None:
            self._transport.abort()
