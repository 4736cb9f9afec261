"""Names no other test uses, so tests can share one running deployment without seeing each other's traffic."""

from __future__ import annotations

import uuid


def unique(prefix: str) -> str:
    """`prefix` plus a random suffix: a channel name, user id or client id no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
