"""HMAC-SHA256 signatures: channel auth, user sign-in, HTTP API requests and webhooks.

Every comparison is constant-time (``hmac.compare_digest``) so a signature cannot be guessed byte
by byte from response timing.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable

from hub.protocol.errors import ApiError

TIMESTAMP_WINDOW_SECONDS = 600
EMPTY_BODY_MD5 = hashlib.md5(b"").hexdigest()


def sign(secret: str, message: str | bytes) -> str:
    """Hex HMAC-SHA256 of ``message`` keyed with the app secret."""
    data = message.encode() if isinstance(message, str) else message
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def channel_auth_message(socket_id: str, channel: str, channel_data: str | None = None) -> str:
    """The string a private (``socket_id:channel``) or presence (``...:channel_data``) auth signs."""
    if channel_data is None:
        return f"{socket_id}:{channel}"
    return f"{socket_id}:{channel}:{channel_data}"


def signin_message(socket_id: str, user_data: str) -> str:
    """The string a ``pusher:signin`` auth signs."""
    return f"{socket_id}::user::{user_data}"


def auth_token(key: str, secret: str, message: str) -> str:
    """The ``auth`` value a backend hands its client: ``<key>:<signature>``."""
    return f"{key}:{sign(secret, message)}"


def verify_token(key: str, secret: str, message: str, auth: object) -> bool:
    """Whether ``auth`` is ``<key>:<signature of message>`` for this app, compared in constant time."""
    if not isinstance(auth, str):
        return False
    given_key, sep, signature = auth.partition(":")
    if not sep:
        return False
    expected = sign(secret, message)
    key_ok = hmac.compare_digest(given_key.encode(), key.encode())
    sig_ok = hmac.compare_digest(signature.encode(), expected.encode())
    return key_ok and sig_ok


def webhook_signature(secret: str, body: bytes) -> str:
    """``X-Pusher-Signature`` for a webhook body."""
    return sign(secret, body)


def api_string_to_sign(method: str, path: str, params: Iterable[tuple[str, str]]) -> str:
    """The HTTP API string to sign: method, path and the sorted, lower-cased, unescaped query.

    Repeated keys are joined with ``,`` as the PHP library signs arrays; ``auth_signature`` is left out.
    """
    merged: dict[str, list[str]] = {}
    for key, value in params:
        lowered = key.lower()
        if lowered == "auth_signature":
            continue
        merged.setdefault(lowered, []).append(value)
    query = "&".join(f"{k}={','.join(v)}" for k, v in sorted(merged.items()))
    return f"{method.upper()}\n{path}\n{query}"


def verify_api_request(
    *,
    method: str,
    path: str,
    params: list[tuple[str, str]],
    body: bytes,
    key: str,
    secret: str,
    now: float,
) -> None:
    """Check an HTTP API request's signature the way the Pusher SDKs sign; raise ApiError(401) if bad.

    ``path`` is the path from ``/apps/`` on, without any deployment prefix. A ``body_md5`` must match
    the body; the Python SDK sends the empty body's MD5 on GET, which is accepted.
    """
    values: dict[str, str] = {}
    for k, v in params:
        values.setdefault(k.lower(), v)
    for required in ("auth_key", "auth_timestamp", "auth_signature"):
        if not values.get(required):
            raise ApiError(401, f"Missing {required} query parameter.")
    if not hmac.compare_digest(values["auth_key"].encode(), key.encode()):
        raise ApiError(401, "auth_key does not match the app.")
    version = values.get("auth_version", "1.0")
    if version != "1.0":
        raise ApiError(401, f"Unsupported auth_version {version!r}; expected 1.0.")
    try:
        timestamp = float(values["auth_timestamp"])
    except ValueError:
        raise ApiError(401, "auth_timestamp is not a number.") from None
    # ``float`` parses "nan", and a NaN compares false with everything: it must not pass the window check.
    if not math.isfinite(timestamp) or abs(now - timestamp) > TIMESTAMP_WINDOW_SECONDS:
        raise ApiError(
            401,
            f"auth_timestamp is more than {TIMESTAMP_WINDOW_SECONDS} s away from the server time; check the clock.",
        )
    body_md5 = values.get("body_md5")
    if body:
        if body_md5 is None:
            raise ApiError(401, "Missing body_md5 query parameter for a request with a body.")
        if not hmac.compare_digest(body_md5.encode(), hashlib.md5(body).hexdigest().encode()):
            raise ApiError(401, "body_md5 does not match the request body.")
    elif body_md5 is not None and body_md5 != EMPTY_BODY_MD5:
        raise ApiError(401, "body_md5 does not match the (empty) request body.")
    expected = sign(secret, api_string_to_sign(method, path, params))
    if not hmac.compare_digest(values["auth_signature"].encode(), expected.encode()):
        raise ApiError(401, "Invalid signature: the request was not signed with this app's secret.")
