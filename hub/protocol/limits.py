"""The size and count limits an app applies to events, channels and presence."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-app limits; defaults follow Soketi where Soketi users would notice a stricter Pusher value."""

    max_channel_name_length: int = 200
    max_event_name_length: int = 200
    max_event_payload_in_kb: int = 100
    max_event_channels_at_once: int = 100
    max_event_batch_size: int = 10
    max_presence_members_per_channel: int = 100
    max_presence_member_size_in_kb: int = 2
    max_watchlist_size: int = 100

    @property
    def max_payload_bytes(self) -> int:
        """Largest event ``data`` in bytes."""
        return self.max_event_payload_in_kb * 1024

    @property
    def max_member_info_bytes(self) -> int:
        """Largest presence ``user_info`` in bytes (JSON-encoded)."""
        return self.max_presence_member_size_in_kb * 1024
