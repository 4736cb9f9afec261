"""Every failure the protocol defines, mapped in one place to its Pusher code or HTTP status."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class CloseCode(IntEnum):
    """Pusher error and close codes (pusher-websockets-protocol, "Error Codes").

    pusher-js decides how to reconnect from the range: 4000-4099 gives up, 4100-4199 retries after
    1 s, 4200-4299 retries at once. Codes from 4300 are sent inside ``pusher:error`` only: used as a
    close code they make pusher-js give up for good.
    """

    SSL_ONLY = 4000
    APP_NOT_FOUND = 4001
    APP_DISABLED = 4003
    OVER_CONNECTION_QUOTA = 4004
    PATH_NOT_FOUND = 4005
    INVALID_VERSION_FORMAT = 4006
    UNSUPPORTED_PROTOCOL = 4007
    NO_PROTOCOL = 4008
    UNAUTHORIZED = 4009
    OVER_CAPACITY = 4100
    RECONNECT = 4200
    PONG_TIMEOUT = 4201
    CLOSED_AFTER_INACTIVITY = 4202
    CLIENT_EVENT_REJECTED = 4301
    WATCHLIST_LIMIT = 4302


@dataclass(frozen=True, slots=True)
class PusherError:
    """An error told to a client in ``pusher:error`` (and, when ``close`` is set, as the close code)."""

    code: int
    message: str
    close: bool = False


@dataclass(frozen=True, slots=True)
class SubscriptionError:
    """A refused subscription, sent as ``pusher:subscription_error`` with Pusher's ``type``/``status``."""

    type: str
    error: str
    status: int


# Not frozen: Python sets ``__traceback__``/``__notes__`` on exceptions it passes through context managers,
# which a frozen (or slotted frozen) dataclass refuses with a TypeError that replaces the ApiError.
@dataclass(eq=False)
class ApiError(Exception):
    """An HTTP API failure: Pusher's status code and a message that says what is wrong."""

    status: int
    message: str

    def body(self) -> dict[str, object]:
        """The JSON body answered for this error (Soketi's shape, which the SDKs surface)."""
        return {"error": self.message, "code": self.status}
