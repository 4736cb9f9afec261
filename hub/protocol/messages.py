"""Client messages in, server frames out: the Pusher v7 message envelope and its double encoding.

Server frames are JSON text. ``data`` is a JSON *string* for ``connection_established``, presence
``subscription_succeeded``, ``member_added``/``member_removed`` and channel events triggered over
HTTP (relayed exactly as published); ``pusher:error`` carries an object, as the spec shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hub.protocol.errors import CloseCode, PusherError, SubscriptionError

_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(value: Any) -> str:
    """Compact JSON text, as every frame is written."""
    return _compact(value)


class InvalidMessage(Exception):
    """A client frame that is not a Pusher message; carries the error to send back."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.error = PusherError(CloseCode.RECONNECT, message)


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """A parsed client frame: the event, its channel (if any) and its raw ``data``."""

    event: str
    channel: str | None
    data: Any


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    """``pusher:subscribe``: the channel and, for private/presence, ``auth`` and ``channel_data``."""

    channel: str
    auth: str | None
    channel_data: str | None


@dataclass(frozen=True, slots=True)
class SigninRequest:
    """``pusher:signin``: the signed ``user_data`` string and its ``auth``."""

    auth: str
    user_data: str


def parse_client_message(raw: str | bytes) -> ClientMessage:
    """Parse one client text frame; raise InvalidMessage when it is not a Pusher message."""
    try:
        # Strict UTF-8: json.loads would decode bytes with "surrogatepass" and let lone surrogates in.
        text = raw.decode() if isinstance(raw, bytes) else raw
        message = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidMessage("Invalid message format: not JSON.") from None
    if not isinstance(message, dict):
        raise InvalidMessage("Invalid message format: expected a JSON object.")
    event = message.get("event")
    if not isinstance(event, str) or not event:
        raise InvalidMessage("Invalid message format: missing event name.")
    channel = message.get("channel")
    if channel is not None and not isinstance(channel, str):
        raise InvalidMessage("Invalid message format: channel must be a string.")
    # A JSON escape such as \ud800 decodes to a lone surrogate, which no UTF-8 frame or HMAC input can hold.
    # Only frames holding a \u escape pay for the check; well-formed clients rarely send one.
    if "\\u" in text and not _is_unicode_text(message):
        raise InvalidMessage("Invalid message format: lone surrogate escape (not valid Unicode text).")
    return ClientMessage(event=event, channel=channel, data=message.get("data"))


def _is_unicode_text(value: Any) -> bool:
    try:
        dumps(value).encode()
    except (UnicodeEncodeError, RecursionError):
        return False
    return True


def _data_object(data: Any) -> dict[str, Any]:
    # Some clients (Reverb accepts this) send ``data`` as a JSON-encoded string instead of an object.
    if isinstance(data, str):
        text = data
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            raise InvalidMessage("Invalid message format: data is not a JSON object.") from None
        if "\\u" in text and not _is_unicode_text(data):
            raise InvalidMessage("Invalid message format: lone surrogate escape (not valid Unicode text).")
    if not isinstance(data, dict):
        raise InvalidMessage("Invalid message format: data must be an object.")
    return data


def parse_subscribe(data: Any) -> SubscribeRequest:
    """The fields of a ``pusher:subscribe``/``pusher:unsubscribe`` ``data``; raise InvalidMessage if absent."""
    obj = _data_object(data)
    channel = obj.get("channel")
    if not isinstance(channel, str) or not channel:
        raise InvalidMessage("Invalid message format: subscribe needs a channel.")
    auth = obj.get("auth")
    channel_data = obj.get("channel_data")
    return SubscribeRequest(
        channel=channel,
        auth=auth if isinstance(auth, str) and auth else None,
        channel_data=channel_data if isinstance(channel_data, str) else None,
    )


def parse_signin(data: Any) -> SigninRequest:
    """The fields of a ``pusher:signin`` ``data``; raise InvalidMessage if absent."""
    obj = _data_object(data)
    auth = obj.get("auth")
    user_data = obj.get("user_data")
    if not isinstance(auth, str) or not isinstance(user_data, str):
        raise InvalidMessage("Invalid message format: signin needs auth and user_data strings.")
    return SigninRequest(auth=auth, user_data=user_data)


def event_frame(event: str, channel: str | None, data: Any, user_id: str | None = None) -> str:
    """A channel event as clients receive it; ``data`` is relayed as given (string or JSON value)."""
    message: dict[str, Any] = {"event": event}
    if channel is not None:
        message["channel"] = channel
    message["data"] = data
    if user_id is not None:
        message["user_id"] = user_id
    return dumps(message)


def connection_established(socket_id: str, activity_timeout: int) -> str:
    """``pusher:connection_established``; pusher-js refuses a handshake without ``activity_timeout``."""
    return event_frame(
        "pusher:connection_established",
        None,
        dumps({"socket_id": socket_id, "activity_timeout": activity_timeout}),
    )


def error_frame(error: PusherError, channel: str | None = None) -> str:
    """``pusher:error`` with ``{"code", "message"}`` data; with ``channel``, handlers bound on it see it too."""
    return event_frame("pusher:error", channel, {"code": int(error.code), "message": error.message})


PONG = event_frame("pusher:pong", None, {})
PING = event_frame("pusher:ping", None, {})


def subscription_succeeded(channel: str, presence: dict[str, Any] | None = None) -> str:
    """``pusher_internal:subscription_succeeded``, with the member list for presence channels."""
    data = dumps({"presence": presence}) if presence is not None else "{}"
    return event_frame("pusher_internal:subscription_succeeded", channel, data)


def subscription_error(channel: str, error: SubscriptionError) -> str:
    """``pusher:subscription_error`` with ``type``, ``error`` and ``status``, as pusher-js reads it."""
    return event_frame(
        "pusher:subscription_error",
        channel,
        {"type": error.type, "error": error.error, "status": error.status},
    )


def presence_payload(members: dict[str, Any]) -> dict[str, Any]:
    """The ``presence`` object of ``subscription_succeeded``: ids, hash and count."""
    return {"ids": list(members), "hash": members, "count": len(members)}


def member_added_data(user_id: str, user_info: Any) -> str:
    """``data`` of ``pusher_internal:member_added`` (a JSON string)."""
    return dumps({"user_id": user_id, "user_info": user_info})


def member_removed_data(user_id: str) -> str:
    """``data`` of ``pusher_internal:member_removed`` (a JSON string)."""
    return dumps({"user_id": user_id})


def cache_miss(channel: str) -> str:
    """``pusher:cache_miss`` for a cache channel with nothing cached: no ``data``, as Pusher documents it."""
    return dumps({"event": "pusher:cache_miss", "channel": channel})


def signin_success(user_data: str) -> str:
    """``pusher:signin_success`` carrying the user's ``user_data`` string (as signed; a numeric id as text)."""
    return event_frame("pusher:signin_success", None, {"user_data": user_data})


def watchlist_events(online: list[str], offline: list[str]) -> str:
    """``pusher_internal:watchlist_events`` in the shape pusher-js's watchlist emits from."""
    events = []
    if online:
        events.append({"name": "online", "user_ids": online})
    if offline:
        events.append({"name": "offline", "user_ids": offline})
    return event_frame("pusher_internal:watchlist_events", None, {"events": events})


def subscription_count(channel: str, count: int) -> str:
    """``pusher_internal:subscription_count``; pusher-js reads ``data.subscription_count``."""
    return event_frame("pusher_internal:subscription_count", channel, dumps({"subscription_count": count}))
