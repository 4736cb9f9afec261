"""Bodies of the Pusher HTTP API: trigger and batch requests, parsed and checked against the limits."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hub.protocol.channels import channel_name_error
from hub.protocol.errors import ApiError
from hub.protocol.limits import Limits
from hub.protocol.messages import dumps
from hub.protocol.socket_ids import is_socket_id

TRIGGER_INFO = frozenset({"user_count", "subscription_count"})


@dataclass(frozen=True, slots=True)
class TriggerEvent:
    """One event to publish to one or more channels."""

    name: str
    data: str
    channels: tuple[str, ...]
    socket_id: str | None
    info: frozenset[str]


def load_json_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or ApiError(400) saying why not."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "Request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise ApiError(400, "Request body must be a JSON object.")
    return value


def parse_info(raw: object) -> frozenset[str]:
    """The attributes of a comma-separated ``info`` parameter."""
    if raw is None or raw == "":
        return frozenset()
    if not isinstance(raw, str):
        raise ApiError(400, "info must be a comma-separated string.")
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def parse_event(obj: dict[str, Any], limits: Limits, *, batch: bool) -> TriggerEvent:
    """Validate one event object of a trigger or batch request."""
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "Event name (name) is required and must be a string.")
    if len(name) > limits.max_event_name_length:
        raise ApiError(400, f"Event name is longer than {limits.max_event_name_length} characters.")
    if "data" not in obj:
        raise ApiError(400, "Event data (data) is required.")
    data = obj["data"]
    # The SDKs always send a string; a JSON value is accepted and encoded as one for lenient clients.
    if not isinstance(data, str):
        data = dumps(data)
    try:
        size = len(data.encode())
        name.encode()
    except UnicodeEncodeError:
        # JSON allows lone surrogates (``"\ud800"``); no frame holding them can be sent as UTF-8 text.
        raise ApiError(400, "Event name and data must be valid Unicode text.") from None
    if size > limits.max_payload_bytes:
        raise ApiError(413, f"Event data is larger than {limits.max_event_payload_in_kb} KB.")
    if batch:
        channel = obj.get("channel")
        if not isinstance(channel, str):
            raise ApiError(400, "Each batch event needs a channel string.")
        channels: list[Any] = [channel]
    elif "channels" in obj:
        raw_channels = obj["channels"]
        if not isinstance(raw_channels, list) or not raw_channels:
            raise ApiError(400, "channels must be a non-empty list of channel names.")
        channels = raw_channels
    elif isinstance(obj.get("channel"), str):
        channels = [obj["channel"]]
    else:
        raise ApiError(400, "Either channels (a list) or channel (a string) is required.")
    if len(channels) > limits.max_event_channels_at_once:
        raise ApiError(400, f"An event can be sent to at most {limits.max_event_channels_at_once} channels.")
    for channel in channels:
        problem = channel_name_error(channel, limits.max_channel_name_length, allow_server_channels=True)
        if problem:
            raise ApiError(400, f"Invalid channel {channel!r}: {problem}")
    if len(channels) > 1 and any(c.startswith("private-encrypted-") for c in channels):
        raise ApiError(400, "Events to encrypted channels must be sent to one channel at a time.")
    socket_id = obj.get("socket_id")
    if socket_id is not None and not is_socket_id(socket_id):
        raise ApiError(400, "socket_id must look like 123.456.")
    info = parse_info(obj.get("info"))
    unknown = info - TRIGGER_INFO
    if unknown:
        raise ApiError(400, f"Unsupported info attributes: {', '.join(sorted(unknown))}.")
    return TriggerEvent(
        name=name,
        data=data,
        channels=tuple(dict.fromkeys(channels)),
        socket_id=socket_id,
        info=info,
    )


def parse_trigger(body: bytes, limits: Limits) -> TriggerEvent:
    """The event of a ``POST /apps/{id}/events`` body."""
    return parse_event(load_json_object(body), limits, batch=False)


def parse_batch(body: bytes, limits: Limits) -> list[TriggerEvent]:
    """The events of a ``POST /apps/{id}/batch_events`` body."""
    obj = load_json_object(body)
    batch = obj.get("batch")
    if not isinstance(batch, list) or not batch:
        raise ApiError(400, "batch must be a non-empty list of events.")
    if len(batch) > limits.max_event_batch_size:
        raise ApiError(400, f"A batch can hold at most {limits.max_event_batch_size} events.")
    events = []
    for item in batch:
        if not isinstance(item, dict):
            raise ApiError(400, "Each batch item must be an object.")
        events.append(parse_event(item, limits, batch=True))
    return events
