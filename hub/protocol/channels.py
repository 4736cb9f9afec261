"""Channel names: their kinds, the cache flag and the naming rules."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

SERVER_TO_USER_PREFIX = "#server-to-user-"

# Pusher allows letters, digits and `_ - = @ , . ;`; `#` is reserved for server-owned channels.
_NAME_RE = re.compile(r"[-a-zA-Z0-9_=@,.;]+")
# User ids follow the same alphabet (authenticating-users docs).
_USER_ID_RE = _NAME_RE


class ChannelKind(Enum):
    """What a channel name's prefix makes it."""

    PUBLIC = "public"
    PRIVATE = "private"
    PRIVATE_ENCRYPTED = "private-encrypted"
    PRESENCE = "presence"
    SERVER_TO_USER = "server-to-user"


@dataclass(frozen=True, slots=True)
class ChannelType:
    """A channel's kind and whether it is a cache channel."""

    kind: ChannelKind
    cache: bool

    @property
    def needs_auth(self) -> bool:
        """Private, encrypted and presence channels need a signed ``auth`` to subscribe."""
        return self.kind in (ChannelKind.PRIVATE, ChannelKind.PRIVATE_ENCRYPTED, ChannelKind.PRESENCE)

    @property
    def allows_client_events(self) -> bool:
        """Client events are allowed only on private and presence channels (not encrypted ones)."""
        return self.kind in (ChannelKind.PRIVATE, ChannelKind.PRESENCE)


# Longest prefixes first, so `private-encrypted-cache-` is not taken for `private-`.
_PREFIXES: tuple[tuple[str, ChannelType], ...] = (
    ("private-encrypted-cache-", ChannelType(ChannelKind.PRIVATE_ENCRYPTED, True)),
    ("private-encrypted-", ChannelType(ChannelKind.PRIVATE_ENCRYPTED, False)),
    ("private-cache-", ChannelType(ChannelKind.PRIVATE, True)),
    ("private-", ChannelType(ChannelKind.PRIVATE, False)),
    ("presence-cache-", ChannelType(ChannelKind.PRESENCE, True)),
    ("presence-", ChannelType(ChannelKind.PRESENCE, False)),
    ("cache-", ChannelType(ChannelKind.PUBLIC, True)),
    (SERVER_TO_USER_PREFIX, ChannelType(ChannelKind.SERVER_TO_USER, False)),
)
_PUBLIC = ChannelType(ChannelKind.PUBLIC, False)


def channel_type(name: str) -> ChannelType:
    """Classify a channel by its exact prefix (``privateer`` is public, not private)."""
    for prefix, kind in _PREFIXES:
        if name.startswith(prefix):
            return kind
    return _PUBLIC


def server_to_user_channel(user_id: str) -> str:
    """The pseudo-channel through which a backend reaches every socket signed in as ``user_id``."""
    return SERVER_TO_USER_PREFIX + user_id


def user_of_server_channel(name: str) -> str | None:
    """The user id of a ``#server-to-user-{id}`` channel, or None for any other name."""
    if name.startswith(SERVER_TO_USER_PREFIX) and len(name) > len(SERVER_TO_USER_PREFIX):
        return name[len(SERVER_TO_USER_PREFIX) :]
    return None


def channel_name_error(name: object, max_length: int, *, allow_server_channels: bool) -> str | None:
    """Why ``name`` is not a valid channel name, or None when it is.

    Clients may not use ``#`` names except their own server-to-user channel (checked by the caller);
    backends may publish to ``#server-to-user-{id}``.
    """
    if not isinstance(name, str) or not name:
        return "Channel name must be a non-empty string."
    if len(name) > max_length:
        return f"Channel name is longer than {max_length} characters."
    body = name
    if name.startswith("#"):
        user_id = user_of_server_channel(name)
        if not allow_server_channels or user_id is None:
            return "Channel names starting with # are reserved."
        body = user_id
    if not _NAME_RE.fullmatch(body):
        return "Channel name may only contain letters, digits and _ - = @ , . ;"
    return None


def user_id_error(user_id: object, max_length: int = 128) -> str | None:
    """Why ``user_id`` is not a valid Pusher user id, or None when it is."""
    if not isinstance(user_id, str) or not user_id:
        return "User id must be a non-empty string."
    if len(user_id) > max_length:
        return f"User id is longer than {max_length} characters."
    if not _USER_ID_RE.fullmatch(user_id):
        return "User id may only contain letters, digits and _ - = @ , . ;"
    return None
