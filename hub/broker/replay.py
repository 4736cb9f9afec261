"""The replay buffer's pure parts: topic and stream names, the publish script, message framing, merging.

Every event is published by one script that appends it to a short capped stream of its topic (``XADD``
with ``MAXLEN ~`` and a TTL) and publishes it, prefixed with the stream entry's id, in one atomic step. A
node that lost its subscription (Redis restart, failover, a slot moved) resubscribes and reads the
stream from the last id it delivered: what it missed comes from the stream, what it already had is
dropped by id, and the order is the stream's. The stream and the pub/sub channel of a topic share one hash
tag, so on Redis Cluster both live in the slot of the channel (and one app's channels spread over shards).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

StreamId = tuple[int, int]
"""A stream entry id ``<ms>-<seq>`` as a tuple, so ids compare in stream order."""

ZERO: StreamId = (0, 0)

# Frames that carry a stream id start with this byte; a packed envelope never does (it is a msgpack array).
MARK = b"R"
_MARK_BYTE = MARK[0]

# KEYS[1]: the topic's stream. ARGV: channel, payload, max entries, TTL ms, PUBLISH or SPUBLISH.
# Returns the new entry's id. The channel is not a key, but shares KEYS[1]'s hash tag (same slot).
PUBLISH_SCRIPT = b"""
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'm', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call(ARGV[5], ARGV[1], 'R' .. id .. '\\n' .. ARGV[2])
return id
"""


def topic_name(prefix: str, app_id: str, channel: str) -> bytes:
    """The pub/sub channel of (app, channel): the whole name is its hash tag, so its slot is its own."""
    return f"{{{prefix}:{app_id}:{channel}}}".encode()


def stream_key(topic: bytes) -> bytes:
    """The replay stream of a topic (same hash tag, hence same slot)."""
    return topic + b":replay"


def parse_id(raw: bytes) -> StreamId:
    """``b"1700000000000-3"`` -> ``(1700000000000, 3)``."""
    ms, _, seq = raw.partition(b"-")
    return int(ms), int(seq)


def format_id(stream_id: StreamId) -> bytes:
    """The inverse of parse_id."""
    return b"%d-%d" % stream_id


def split_frame(payload: bytes) -> tuple[StreamId | None, bytes]:
    """(stream id, envelope bytes) of a received pub/sub payload; id None for frames without one."""
    if not payload or payload[0] != _MARK_BYTE:
        return None, payload
    end = payload.index(b"\n")
    return parse_id(payload[1:end]), payload[end + 1 :]


def stream_entries(reply: Any) -> list[tuple[StreamId, bytes]]:
    """The (id, envelope) pairs of an ``XRANGE``/``XREVRANGE`` reply (entries without our field skipped)."""
    entries: list[tuple[StreamId, bytes]] = []
    for raw_id, fields in reply or ():
        for i in range(0, len(fields) - 1, 2):
            if fields[i] == b"m":
                entries.append((parse_id(raw_id), fields[i + 1]))
                break
    return entries


def merge(
    floor: StreamId | None, stored: Iterable[tuple[StreamId, bytes]], live: Iterable[tuple[StreamId, bytes]]
) -> tuple[list[bytes], StreamId | None]:
    """What to deliver after a resync, in stream order and once each, and the new floor.

    ``floor`` is the last id already delivered (None: the topic was just subscribed, so ``stored``
    entries predate the subscription and only the ``live`` ones are new). ``stored`` comes from the
    stream, ``live`` arrived on the subscription meanwhile; they overlap.
    """
    chosen: dict[StreamId, bytes] = {}
    if floor is not None:
        for entry_id, body in stored:
            if entry_id > floor:
                chosen[entry_id] = body
    for entry_id, body in live:
        if floor is None or entry_id > floor:
            chosen.setdefault(entry_id, body)
    order = sorted(chosen)
    new_floor = floor
    if order:
        new_floor = order[-1] if floor is None else max(floor, order[-1])
    return [chosen[i] for i in order], new_floor
