"""Server-to-client WebSocket frames built as bytes, so one frame can be written to many sockets.

Server frames are never masked (RFC 6455 5.1) and we do not negotiate compression, so the bytes of a
frame are the same for every receiver: fan-out builds them once per message
(guarded by benchmarks/ fan-out scenarios).
"""

from __future__ import annotations

import struct

_TEXT = 0x81  # FIN + text opcode
PING_FRAME = b"\x89\x00"  # FIN + ping, empty payload


def text_frame(payload: bytes) -> bytes:
    """A complete, unmasked text frame carrying ``payload`` (UTF-8 JSON)."""
    n = len(payload)
    if n < 126:
        return bytes((_TEXT, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", _TEXT, 126, n) + payload
    return struct.pack("!BBQ", _TEXT, 127, n) + payload
