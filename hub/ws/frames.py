"""Server-to-client WebSocket frames built as bytes, so one frame can be written to many sockets.

Server frames are never masked (RFC 6455 5.1), and compressed frames are compressed without context
takeover (``hub/ws/deflate.py``), so the bytes of a frame are the same for every receiver of one
encoding: fan-out builds them once per message per node (guarded by benchmarks/ fan-out scenarios).
"""

from __future__ import annotations

import struct

_TEXT = 0x81  # FIN + text opcode
_TEXT_DEFLATED = 0xC1  # FIN + RSV1 (permessage-deflate, RFC 7692 6) + text opcode
PING_FRAME = b"\x89\x00"  # FIN + ping, empty payload


def _frame(first: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


def text_frame(payload: bytes) -> bytes:
    """A complete, unmasked text frame carrying ``payload`` (UTF-8 JSON)."""
    return _frame(_TEXT, payload)


def deflated_text_frame(compressed: bytes) -> bytes:
    """A complete text frame whose payload is ``compressed`` by permessage-deflate (RSV1 set)."""
    return _frame(_TEXT_DEFLATED, compressed)


def pong_frame(payload: bytes) -> bytes:
    """The answer to a client's ping: the same application data (at most 125 bytes, checked by the parser)."""
    return bytes((0x8A, len(payload))) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with ``code`` and a reason cut to fit a control frame (125 bytes in all)."""
    raw = reason.encode()[:123]
    while raw:
        try:
            raw.decode()
            break
        except UnicodeDecodeError:  # cut inside a multi-byte character: drop its start
            raw = raw[:-1]
    return bytes((0x88, 2 + len(raw))) + struct.pack("!H", code) + raw
