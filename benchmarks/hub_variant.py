"""Run ``hub`` with one thing changed from outside, to measure what a hot-path idea would buy: experiments only.

``python -m benchmarks.hub_variant ws --port ...`` takes the same arguments as ``hub``; the environment variable
``HUB_BENCH_VARIANT`` says what to change (comma-separated):

- ``uvloop``: run on uvloop instead of asyncio's default loop. hub's RESP client asserts
  ``isinstance(transport, asyncio.Transport)``, which uvloop's transports (same methods, no common base class)
  fail, so that one module sees a widened ``Transport``.
- ``backlog=N``: listen with an accept queue of N instead of aiohttp's default 128.

The benchmarks select it with ``--set hub_variant=uvloop`` (or ``backlog=4096``). hub itself is unchanged.
"""

from __future__ import annotations

import asyncio
import os
import sys
import types
from typing import Any

from aiohttp import web

VARIANT_ENV = "HUB_BENCH_VARIANT"


class _AsyncioWithUvloopTransports(types.ModuleType):
    """``asyncio`` as one hub module sees it: ``Transport`` also matches uvloop's transports."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


def _use_uvloop() -> None:
    import uvloop

    import hub.broker.redis_resp as redis_resp

    shim = _AsyncioWithUvloopTransports("asyncio")
    shim.Transport = (asyncio.Transport, uvloop.loop.TCPTransport, uvloop.loop.UnixTransport)  # type: ignore[attr-defined]
    redis_resp.asyncio = shim  # type: ignore[attr-defined]
    uvloop.install()


def _set_backlog(backlog: int) -> None:
    original = web.TCPSite.__init__

    def init(self: web.TCPSite, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("backlog", backlog)
        original(self, *args, **kwargs)

    web.TCPSite.__init__ = init  # type: ignore[method-assign]


def apply(variant: str) -> None:
    """Apply every change named in ``variant``."""
    for item in filter(None, (part.strip() for part in variant.split(","))):
        name, _, value = item.partition("=")
        if name == "uvloop":
            _use_uvloop()
        elif name == "backlog":
            _set_backlog(int(value))
        else:
            raise SystemExit(f"unknown hub variant {item!r}")


if __name__ == "__main__":
    apply(os.environ.get(VARIANT_ENV, ""))
    from hub.cli import main

    sys.exit(main())
