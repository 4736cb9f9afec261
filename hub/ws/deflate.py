"""permessage-deflate (RFC 7692) without context takeover in either direction.

The server answers every accepted offer with ``server_no_context_takeover`` and
``client_no_context_takeover`` (both allowed in a response whatever the offer said, RFC 7692 7.1.1), so
each message is compressed and decompressed on its own. That is what lets fan-out compress a message
once and write the same bytes to every socket that negotiated the extension, and it means no socket
keeps a zlib stream (tens of KiB each) while idle.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

EXTENSION = "permessage-deflate"
RESPONSE = f"{EXTENSION}; server_no_context_takeover; client_no_context_takeover"
_TAIL = b"\x00\x00\xff\xff"  # the empty stored block a sync flush ends with (RFC 7692 7.2.1, 7.2.2)
_WINDOW_BITS = 15
# Level 6 (zlib's default): the cost is paid once per message per node, not per socket.
_LEVEL = 6


class InflateError(Exception):
    """A compressed client message that does not inflate, or inflates past the size limit."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _acceptable(params: list[str]) -> bool:
    """Whether one offer's parameters are valid and something this server can honour (RFC 7692 7.1)."""
    seen: set[str] = set()
    for raw in params:
        name, _, value = raw.partition("=")
        name, value = name.strip().lower(), value.strip().strip('"')
        if not name or name in seen:
            return False  # a duplicate parameter makes the offer invalid
        seen.add(name)
        if name in ("server_no_context_takeover", "client_no_context_takeover"):
            if value:
                return False
        elif name == "client_max_window_bits":
            # Without a value it only says the client could take a smaller window; we inflate any window.
            if value and not (value.isdigit() and 8 <= int(value) <= 15):
                return False
        elif name == "server_max_window_bits":
            # We compress with one 32 KiB window for everybody; a client asking for less is declined.
            if not (value.isdigit() and int(value) == _WINDOW_BITS):
                return False
        else:
            return False
    return True


def negotiate(header_values: Iterable[str]) -> bool:
    """True when one of the client's ``Sec-WebSocket-Extensions`` offers is a permessage-deflate we accept."""
    for header in header_values:
        for offer in header.split(","):
            name, *params = offer.split(";")
            if name.strip().lower() == EXTENSION and _acceptable(params):
                return True
    return False


class Deflater:
    """Compresses whole messages, each independent of the last (a full flush resets the window).

    One per node: a zlib stream costs about 256 KiB, which is why sockets do not get their own.
    """

    __slots__ = ("_stream", "min_bytes")

    def __init__(self, min_bytes: int) -> None:
        self.min_bytes = min_bytes
        self._stream = zlib.compressobj(_LEVEL, zlib.DEFLATED, -_WINDOW_BITS)

    def compress(self, payload: bytes) -> bytes:
        """The permessage-deflate payload of one message (the sync-flush tail removed, RFC 7692 7.2.1)."""
        stream = self._stream
        out = stream.compress(payload) + stream.flush(zlib.Z_FULL_FLUSH)
        return out[:-4] if out.endswith(_TAIL) else out


def inflate(payload: bytes, limit: int) -> bytes:
    """Decompress one client message (no context takeover); at most ``limit`` bytes, else 1009."""
    stream = zlib.decompressobj(-_WINDOW_BITS)
    try:
        out = stream.decompress(payload + _TAIL, limit + 1)
    except zlib.error:
        raise InflateError(1007, "Invalid compressed data.") from None
    if len(out) > limit:
        raise InflateError(1009, "Message too big.")
    return out
