"""The server side of the WebSocket opening handshake (RFC 6455 4.2), as pure functions of the headers.

The checks and their messages follow what aiohttp answered when it did the handshake for us, so a
client sees the same 400s as before.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from hub.ws import deflate

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HandshakeError(Exception):
    """Not a WebSocket upgrade we can accept: answer HTTP 400 with this message."""


@dataclass(frozen=True, slots=True)
class Handshake:
    """An accepted upgrade: the bytes of the 101 response and whether permessage-deflate is on."""

    response: bytes
    deflate: bool


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def accept(
    upgrade: str | None,
    connection: str | None,
    version: str | None,
    key: str | None,
    extensions: Iterable[str],
    *,
    compression: bool,
) -> Handshake:
    """Check the upgrade request's headers; the 101 response to send, or ``HandshakeError``."""
    if (upgrade or "").strip().lower() != "websocket":
        raise HandshakeError(f'No WebSocket UPGRADE hdr: {upgrade}\n Can "Upgrade" only to "WebSocket".')
    if "upgrade" not in (token.strip().lower() for token in (connection or "").split(",")):
        raise HandshakeError(f"No CONNECTION upgrade hdr: {connection}")
    if (version or "") not in ("13", "8", "7"):
        raise HandshakeError(f"Unsupported version: {version or ''}")
    try:
        if not key or len(base64.b64decode(key)) != 16:
            raise HandshakeError(f"Handshake error: {key!r}")
    except (binascii.Error, ValueError):
        raise HandshakeError(f"Handshake error: {key!r}") from None
    compress = compression and deflate.negotiate(extensions)
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key)}",
    ]
    if compress:
        lines.append(f"Sec-WebSocket-Extensions: {deflate.RESPONSE}")
    return Handshake(("\r\n".join(lines) + "\r\n\r\n").encode(), compress)
