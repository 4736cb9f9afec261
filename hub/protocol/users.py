"""Who a socket is: presence ``channel_data`` and sign-in ``user_data``, parsed and checked."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hub.protocol.channels import user_id_error


class InvalidUserData(Exception):
    """``channel_data`` or ``user_data`` that does not describe a user; the message says why."""


@dataclass(frozen=True, slots=True)
class PresenceMember:
    """A presence member: the user id (always a string) and the app's ``user_info``."""

    user_id: str
    user_info: Any


@dataclass(frozen=True, slots=True)
class SignedInUser:
    """A signed-in user: id, info and the ids it watches."""

    user_id: str
    user_info: Any
    watchlist: tuple[str, ...] = field(default=())
    user_data: str = ""


def _load_object(raw: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidUserData(f"{what} is not valid JSON.") from None
    if not isinstance(value, dict):
        raise InvalidUserData(f"{what} must be a JSON object.")
    # A lone surrogate (raw, or decoded from an escape such as \ud800) cannot go into a UTF-8 member frame.
    if not _is_unicode_text(value):
        raise InvalidUserData(f"{what} holds a lone surrogate escape (not valid Unicode text).")
    return value


def _is_unicode_text(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except (UnicodeEncodeError, RecursionError):
        return False
    return True


def _normalise_id(raw: object, what: str) -> str:
    # Pusher's own examples send numeric ids; identity is the string form so 10 and "10" are one user.
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise InvalidUserData(f"{what} must be a string or an integer.")
    user_id = str(raw)
    problem = user_id_error(user_id)
    if problem:
        raise InvalidUserData(problem)
    return user_id


def parse_channel_data(raw: str, max_info_bytes: int) -> PresenceMember:
    """The member a presence ``channel_data`` string describes."""
    data = _load_object(raw, "channel_data")
    if "user_id" not in data:
        raise InvalidUserData("channel_data must contain user_id.")
    user_id = _normalise_id(data["user_id"], "user_id")
    info = data.get("user_info")
    if len(json.dumps(info).encode()) > max_info_bytes:
        raise InvalidUserData(f"user_info is larger than {max_info_bytes} bytes.")
    return PresenceMember(user_id=user_id, user_info=info)


def _dumps_user_data(data: dict[str, Any]) -> str:
    """``user_data`` as JSON text, compact as pusher-js and the SDKs write it."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def parse_user_data(raw: str, max_watchlist: int = 100) -> tuple[SignedInUser, bool]:
    """The user a sign-in ``user_data`` string describes, and whether its watchlist was cut to the limit.

    The returned ``user_data`` is the signed string, except that a numeric id is rewritten as a string.
    """
    data = _load_object(raw, "user_data")
    raw_id = data.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
        raise InvalidUserData("user_data must contain a non-empty string or integer id.")
    user_id = _normalise_id(raw_id, "id")
    if not isinstance(raw_id, str):
        # Laravel signs `$user->id`, an integer. pusher-js drops a signin_success whose id is not a string,
        # so the socket is told its user_data with the id in the string form used everywhere else.
        raw = _dumps_user_data({**data, "id": user_id})
    watchlist_raw = data.get("watchlist") or []
    if not isinstance(watchlist_raw, list):
        raise InvalidUserData("watchlist must be a list of user ids.")
    watchlist = tuple(_normalise_id(w, "watchlist entry") for w in watchlist_raw)
    truncated = len(watchlist) > max_watchlist
    return (
        SignedInUser(
            user_id=user_id,
            user_info=data.get("user_info"),
            watchlist=watchlist[:max_watchlist],
            user_data=raw,
        ),
        truncated,
    )
