"""Waiting for a value that settles a moment after what changes it: counts, occupancy, queued jobs."""

# ruff: noqa: ASYNC109  -- a per-call timeout in seconds is this helper's point

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(read: Callable[[], Awaitable[Any]], expected: Any, *, timeout: float = 5.0) -> Any:
    """Poll `read()` every 50 ms until it returns `expected` and return that; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if value == expected or time.monotonic() >= deadline:
            # tests/support is not assertion-rewritten by pytest, so say what was read.
            assert value == expected, f"read {value!r} after {timeout} s, expected {expected!r}"
            return value
        await asyncio.sleep(0.05)
