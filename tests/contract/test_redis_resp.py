"""The broker's RESP2 parser: every split of the byte stream yields the same messages and replies."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hub.redis_resp import ConnectionClosed, RespError, RespProtocol, encode_command, parse_value


class FakeTransport(asyncio.Transport):
    """Records writes and aborts instead of touching a socket."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview[int]) -> None:
        self.written += bytes(data)

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.aborted


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def message(channel: bytes, payload: bytes) -> bytes:
    return b"*3\r\n" + bulk(b"message") + bulk(channel) + bulk(payload)


STREAM = (
    b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
    + message(b"ch", b"one")
    + message(b"ch", b"payload with \r\n inside and \x00 bytes")
    + b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"
    + message(b"other", b"")
    + b"+OK\r\n"
    + message(b"ch", b"x" * 70_000)
    + b"*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n"
)
EXPECTED = [
    (b"ch", b"one"),
    (b"ch", b"payload with \r\n inside and \x00 bytes"),
    (b"other", b""),
    (b"ch", b"x" * 70_000),
]


async def feed(chunks: list[bytes]) -> tuple[list[tuple[bytes, bytes]], list[int], list[Any], RespProtocol]:
    """Run chunks through a protocol with two requests outstanding; return messages, counts and replies."""
    messages: list[tuple[bytes, bytes]] = []
    counts: list[int] = []
    protocol = RespProtocol(lambda c, p: messages.append((c, p)), lambda kind, channel, n: counts.append(n))
    protocol.connection_made(FakeTransport())
    ping = protocol.send_request(b"PING")
    auth = protocol.send_request(b"AUTH", b"pw")
    for chunk in chunks:
        protocol.data_received(chunk)
    return messages, counts, [ping.result(), auth.result()], protocol


async def test_whole_stream_in_one_read() -> None:
    messages, counts, replies, _ = await feed([STREAM])
    assert messages == EXPECTED
    assert counts == [1, 0]
    assert replies == [[b"pong", b""], b"OK"]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1000, 4096])
async def test_stream_split_into_reads_of_any_size(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    messages, counts, replies, _ = await feed(chunks)
    assert messages == EXPECTED
    assert counts == [1, 0]
    assert replies == [[b"pong", b""], b"OK"]


async def test_stream_split_at_every_position_in_two_reads() -> None:
    small = STREAM.replace(b"x" * 70_000, b"tail")
    small = small.replace(b"$70000\r\n", b"$4\r\n")
    for cut in range(1, len(small)):
        messages, _, _, _ = await feed([small[:cut], small[cut:]])
        assert messages[-1] == (b"ch", b"tail")
        assert len(messages) == 4


async def test_error_reply_fails_its_request() -> None:
    protocol = RespProtocol(lambda c, p: None)
    protocol.connection_made(FakeTransport())
    auth = protocol.send_request(b"AUTH", b"bad")
    protocol.data_received(b"-WRONGPASS invalid username-password pair\r\n")
    with pytest.raises(RespError, match="WRONGPASS"):
        auth.result()


async def test_unexpected_error_drops_the_connection() -> None:
    transport = FakeTransport()
    protocol = RespProtocol(lambda c, p: None)
    protocol.connection_made(transport)
    protocol.data_received(b"-NOPERM no permissions to access a channel\r\n")
    assert transport.aborted


async def test_garbage_drops_the_connection_and_fails_waiters() -> None:
    transport = FakeTransport()
    protocol = RespProtocol(lambda c, p: None)
    protocol.connection_made(transport)
    ping = protocol.send_request(b"PING")
    protocol.data_received(b"?what\r\n")
    assert transport.aborted
    with pytest.raises(ConnectionClosed):
        ping.result()


async def test_connection_lost_fails_waiters_and_resolves_closed() -> None:
    protocol = RespProtocol(lambda c, p: None)
    protocol.connection_made(FakeTransport())
    ping = protocol.send_request(b"PING")
    protocol.connection_lost(None)
    with pytest.raises(ConnectionClosed):
        ping.result()
    assert protocol.closed.done()


def test_commands_are_encoded_as_arrays_of_bulk_strings() -> None:
    assert encode_command(b"SUBSCRIBE", b"a", b"") == b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$0\r\n\r\n"


def test_parse_value_reads_nested_arrays_nil_and_integers() -> None:
    raw = b"*3\r\n:42\r\n$-1\r\n*1\r\n+OK\r\n"
    assert parse_value(raw, 0) == ([42, None, [b"OK"]], len(raw))
    assert parse_value(raw[:-1], 0) is None
