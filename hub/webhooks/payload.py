"""The webhook request Pusher sends: ``{"time_ms", "events"}`` signed with the app secret."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hub.protocol.messages import dumps
from hub.protocol.signatures import webhook_signature


def webhook_body(time_ms: int, events: list[dict[str, Any]]) -> bytes:
    """The JSON body; ``time_ms`` is when the events happened, kept across retries."""
    return dumps({"time_ms": time_ms, "events": events}).encode()


def webhook_headers(key: str, secret: str, body: bytes, extra: Iterable[tuple[str, str]] = ()) -> dict[str, str]:
    """Headers of a webhook request; the app's own headers cannot override the Pusher ones.

    ``Content-Type`` is exactly ``application/json``: pusher-http-node compares it with ``===``.
    """
    headers = dict(extra)
    headers["Content-Type"] = "application/json"
    headers["X-Pusher-Key"] = key
    headers["X-Pusher-Signature"] = webhook_signature(secret, body)
    return headers
