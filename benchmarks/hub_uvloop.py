"""Run ``hub`` on uvloop instead of asyncio's default loop, unchanged otherwise: an experiment, not a feature.

``python -m benchmarks.hub_uvloop ws --port ...`` takes the same arguments as ``hub``. The benchmarks use it
(``--set hub_loop=uvloop``) to measure what the event loop alone changes on the hot path.

hub's RESP client asserts ``isinstance(transport, asyncio.Transport)``, which uvloop's transports (same
methods, no common base class) fail; for the experiment that one module sees a widened ``Transport``.
"""

from __future__ import annotations

import asyncio
import sys
import types
from typing import Any

import uvloop

import hub.broker.redis_resp as redis_resp
from hub.cli import main


class _AsyncioWithUvloopTransports(types.ModuleType):
    """``asyncio`` as one hub module sees it: ``Transport`` also matches uvloop's transports."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


def _widen_transport_check() -> None:
    shim = _AsyncioWithUvloopTransports("asyncio")
    shim.Transport = (asyncio.Transport, uvloop.loop.TCPTransport, uvloop.loop.UnixTransport)  # type: ignore[attr-defined]
    redis_resp.asyncio = shim  # type: ignore[attr-defined]


if __name__ == "__main__":
    _widen_transport_check()
    uvloop.install()
    sys.exit(main())
