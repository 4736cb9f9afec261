"""The WebSocket wire, pure: client frame parsing (RFC 6455), the opening handshake, permessage-deflate."""

from __future__ import annotations

import os
import struct
import zlib

import pytest

from hub.ws import deflate
from hub.ws.frame_parser import (
    BINARY,
    PING,
    TEXT,
    FrameParser,
    ProtocolViolation,
    parse_close,
    unmask,
)
from hub.ws.frames import close_frame, deflated_text_frame, pong_frame, text_frame
from hub.ws.handshake import HandshakeError, accept, accept_key

LIMIT = 1024


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True) -> bytes:
    """A client frame with every flag under the test's control."""
    first = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((first, mask_bit | n))
    elif n < 65536:
        head = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + unmask(payload, mask)


def compressed(data: bytes) -> bytes:
    stream = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (stream.compress(data) + stream.flush(zlib.Z_SYNC_FLUSH))[:-4]


def parse(data: bytes, *, deflate_on: bool = False, limit: int = LIMIT) -> list[tuple[int, bytes | str]]:
    return list(FrameParser(limit, deflate=deflate_on).feed(data))


def violation(data: bytes, **kwargs: bool | int) -> int:
    with pytest.raises(ProtocolViolation) as info:
        parse(data, **kwargs)  # type: ignore[arg-type]
    return info.value.code


# --- parsing -----------------------------------------------------------------------------------


def test_a_masked_text_frame_is_unmasked_and_decoded() -> None:
    assert parse(frame(TEXT, "héllo".encode())) == [(TEXT, "héllo")]


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_every_length_encoding_is_read(size: int) -> None:
    assert parse(frame(BINARY, b"x" * size), limit=70_000) == [(BINARY, b"x" * size)]


def test_frames_split_at_every_byte_come_out_once_and_in_order() -> None:
    data = frame(TEXT, b"one") + frame(PING, b"p") + frame(TEXT, b"two" * 50)
    parser = FrameParser(LIMIT)
    out = [m for i in range(len(data)) for m in parser.feed(data[i : i + 1])]
    assert out == [(TEXT, "one"), (PING, b"p"), (TEXT, "two" * 50)]


def test_fragments_are_joined_and_control_frames_may_come_between_them() -> None:
    data = frame(TEXT, b"ab", fin=False) + frame(PING, b"") + frame(0, b"cd", fin=False) + frame(0, b"ef")
    assert parse(data) == [(PING, b""), (TEXT, "abcdef")]


def test_an_unmasked_client_frame_fails_with_1002() -> None:
    assert violation(frame(TEXT, b"x", masked=False)) == 1002


@pytest.mark.parametrize(
    "data",
    [
        frame(0, b"x"),  # continuation of nothing
        frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"),  # new message inside a fragmented one
        frame(PING, b"x", fin=False),  # fragmented control frame
        frame(PING, b"x" * 126),  # control frame over 125 bytes
        frame(0x3, b""),  # reserved data opcode
        frame(0xB, b""),  # reserved control opcode
        frame(TEXT, b"x", rsv=0x20),  # RSV2
        frame(TEXT, b"x", rsv=0x40),  # RSV1 without deflate negotiated
    ],
)
def test_rfc_6455_violations_fail_with_1002(data: bytes) -> None:
    assert violation(data) == 1002


def test_a_message_over_the_limit_is_refused_from_its_header_before_its_payload_arrives() -> None:
    header_only = frame(TEXT, b"x" * (LIMIT + 1))[:8]
    assert violation(header_only) == 1009


def test_fragments_adding_up_past_the_limit_fail_with_1009() -> None:
    half = b"x" * (LIMIT // 2 + 1)
    assert violation(frame(TEXT, half, fin=False) + frame(0, half)) == 1009


def test_invalid_utf8_text_fails_with_1007() -> None:
    assert violation(frame(TEXT, b"\xff\xfe")) == 1007


def test_a_compressed_message_is_inflated_when_deflate_was_negotiated() -> None:
    data = frame(TEXT, compressed(b'{"event":"pusher:ping"}'), rsv=0x40)
    assert parse(data, deflate_on=True) == [(TEXT, '{"event":"pusher:ping"}')]


def test_a_compressed_fragmented_message_is_inflated_once_whole() -> None:
    body = compressed(b"z" * 300)
    data = frame(TEXT, body[:3], fin=False, rsv=0x40) + frame(0, body[3:])
    assert parse(data, deflate_on=True) == [(TEXT, "z" * 300)]


def test_a_deflate_bomb_stops_at_the_limit_with_1009() -> None:
    assert violation(frame(TEXT, compressed(b"\0" * 100_000), rsv=0x40), deflate_on=True) == 1009


def test_garbage_with_rsv1_fails_with_1007() -> None:
    assert violation(frame(TEXT, b"\xff\xff\xff\xff", rsv=0x40), deflate_on=True) == 1007


def test_close_payloads() -> None:
    assert parse_close(b"") == (1005, "")
    assert parse_close(struct.pack("!H", 1000) + b"bye") == (1000, "bye")
    assert parse_close(struct.pack("!H", 4100)) == (4100, "")
    for bad in (b"\x03", struct.pack("!H", 1005), struct.pack("!H", 999), struct.pack("!H", 5000)):
        with pytest.raises(ProtocolViolation):
            parse_close(bad)
    with pytest.raises(ProtocolViolation) as info:
        parse_close(struct.pack("!H", 1000) + b"\xff")
    assert info.value.code == 1007


# --- server frames -----------------------------------------------------------------------------


def test_server_frames() -> None:
    assert text_frame(b"hi") == b"\x81\x02hi"
    assert deflated_text_frame(b"hi") == b"\xc1\x02hi"
    assert pong_frame(b"p") == b"\x8a\x01p"
    assert close_frame(4100, "slow") == b"\x88\x06" + struct.pack("!H", 4100) + b"slow"


def test_a_close_reason_is_cut_to_fit_a_control_frame_without_splitting_a_character() -> None:
    built = close_frame(4200, "é" * 100)
    assert len(built) - 2 <= 125
    assert parse_close(built[2:])[1] == "é" * 61


# --- handshake ---------------------------------------------------------------------------------

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def test_accept_key_matches_rfc_6455_example() -> None:
    assert accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_valid_upgrade_gets_a_101_with_the_accept_key() -> None:
    shake = accept("websocket", "keep-alive, Upgrade", "13", KEY, [], compression=True)
    assert shake.response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in shake.response
    assert shake.response.endswith(b"\r\n\r\n")
    assert not shake.deflate


@pytest.mark.parametrize(
    ("upgrade", "connection", "version", "key"),
    [
        (None, "Upgrade", "13", KEY),
        ("h2c", "Upgrade", "13", KEY),
        ("websocket", "keep-alive", "13", KEY),
        ("websocket", "Upgrade", "12", KEY),
        ("websocket", "Upgrade", "13", None),
        ("websocket", "Upgrade", "13", "c2hvcnQ="),
        ("websocket", "Upgrade", "13", "!!!"),
    ],
)
def test_bad_upgrades_are_refused(
    upgrade: str | None, connection: str | None, version: str | None, key: str | None
) -> None:
    with pytest.raises(HandshakeError):
        accept(upgrade, connection, version, key, [], compression=True)


@pytest.mark.parametrize(
    ("offers", "accepted"),
    [
        (["permessage-deflate"], True),
        (["permessage-deflate; client_max_window_bits"], True),
        (["permessage-deflate; client_max_window_bits=10; server_no_context_takeover"], True),
        (["permessage-deflate; server_max_window_bits=15"], True),
        (["permessage-deflate; server_max_window_bits=10"], False),
        (["permessage-deflate; server_max_window_bits=10, permessage-deflate"], True),
        (["permessage-deflate; client_no_context_takeover; client_no_context_takeover"], False),
        (["permessage-deflate; unknown_param"], False),
        (["permessage-deflate; client_max_window_bits=16"], False),
        (["x-webkit-deflate-frame"], False),
        ([], False),
    ],
)
def test_deflate_offers(offers: list[str], accepted: bool) -> None:
    assert deflate.negotiate(offers) is accepted
    shake = accept("websocket", "Upgrade", "13", KEY, offers, compression=True)
    assert shake.deflate is accepted
    assert (b"server_no_context_takeover; client_no_context_takeover" in shake.response) is accepted


def test_compression_off_declines_every_offer() -> None:
    assert not accept("websocket", "Upgrade", "13", KEY, ["permessage-deflate"], compression=False).deflate


# --- deflate -----------------------------------------------------------------------------------


def test_each_message_inflates_on_its_own_and_compresses_to_the_same_bytes_every_time() -> None:
    deflater = deflate.Deflater(0)
    message = b'{"event":"chat","data":"' + b"hello " * 50 + b'"}'
    first, second = deflater.compress(message), deflater.compress(message)
    assert first == second, "no context carried from one message to the next"
    assert len(first) < len(message) / 4
    assert deflate.inflate(first, 10_000) == message


def test_inflate_is_bounded() -> None:
    with pytest.raises(deflate.InflateError) as info:
        deflate.inflate(deflate.Deflater(0).compress(b"a" * 5000), 4999)
    assert info.value.code == 1009
    assert deflate.inflate(deflate.Deflater(0).compress(b"a" * 5000), 5000) == b"a" * 5000
