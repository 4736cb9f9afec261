"""The message that travels between nodes: a versioned msgpack array."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack

ENVELOPE_VERSION = 1


class Kind(IntEnum):
    """What a message asks the receiving nodes to do."""

    EVENT = 1  # deliver a frame to the channel's local subscribers
    TERMINATE_USER = 2  # close every local socket signed in as user_id
    USER_PRESENCE = 3  # user_id came online (data True) or went offline (data False): watchlists
    CONSOLE_WATCH = 4  # a node has a console stream open for the app for ``data`` more seconds: tap it
    CONSOLE_EVENTS = 5  # a batch of tapped events for the app's console streams (hub/tap.py)


class EnvelopeError(ValueError):
    """Bytes that are not an envelope this version understands."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A published message: app, channel, event, data, the socket to skip, origin and publish time.

    ``data`` is what clients receive in the frame's ``data`` field: the string a backend published, or
    the JSON value of a client event. ``published_at`` (Unix seconds) lets receivers measure lag.
    """

    kind: Kind
    app_id: str
    channel: str
    event: str
    data: Any
    except_socket: str | None = None
    origin_node: str = ""
    published_at: float = 0.0
    user_id: str | None = None

    def pack(self) -> bytes:
        """msgpack bytes, version first so a future format can be told apart."""
        packed: bytes = msgpack.packb(
            [
                ENVELOPE_VERSION,
                int(self.kind),
                self.app_id,
                self.channel,
                self.event,
                self.data,
                self.except_socket,
                self.origin_node,
                self.published_at,
                self.user_id,
            ],
            use_bin_type=True,
        )
        return packed

    @staticmethod
    def unpack(raw: bytes) -> Envelope:
        """Decode an envelope; raise EnvelopeError for anything malformed or of another version."""
        try:
            fields = msgpack.unpackb(raw, raw=False)
        except Exception as exc:  # msgpack raises several unrelated types for bad input
            raise EnvelopeError(f"not msgpack: {exc}") from None
        if not isinstance(fields, list) or len(fields) != 10 or fields[0] != ENVELOPE_VERSION:
            raise EnvelopeError("unknown envelope version or shape")
        try:
            kind = Kind(fields[1])
        except ValueError:
            raise EnvelopeError(f"unknown envelope kind {fields[1]!r}") from None
        _, _, app_id, channel, event, data, except_socket, origin_node, published_at, user_id = fields
        if not (isinstance(app_id, str) and isinstance(channel, str) and isinstance(event, str)):
            raise EnvelopeError("app id, channel and event must be strings")
        if not (_optional_str(except_socket) and _optional_str(user_id) and isinstance(origin_node, str)):
            raise EnvelopeError("socket, user and node ids must be strings")
        if isinstance(published_at, bool) or not isinstance(published_at, (int, float)):
            raise EnvelopeError("published_at must be a number")
        return Envelope(kind, app_id, channel, event, data, except_socket, origin_node, float(published_at), user_id)


def _optional_str(value: object) -> bool:
    return value is None or isinstance(value, str)


def event_envelope(
    app_id: str,
    channel: str,
    event: str,
    data: Any,
    *,
    origin_node: str,
    except_socket: str | None = None,
    user_id: str | None = None,
) -> Envelope:
    """An EVENT envelope stamped with the current time."""
    return Envelope(
        Kind.EVENT,
        app_id,
        channel,
        event,
        data,
        except_socket=except_socket,
        origin_node=origin_node,
        published_at=time.time(),
        user_id=user_id,
    )


def user_envelope(kind: Kind, app_id: str, user_id: str, data: Any, *, origin_node: str) -> Envelope:
    """A control envelope about one user (terminate its sockets, or its online status in ``data``)."""
    return Envelope(kind, app_id, "", "", data, origin_node=origin_node, published_at=time.time(), user_id=user_id)
