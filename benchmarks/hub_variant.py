"""Run ``hub`` with one thing changed from outside, to measure what a hot-path idea would buy: experiments only.

``python -m benchmarks.hub_variant ws --port ...`` takes the same arguments as ``hub``; the environment variable
``HUB_BENCH_VARIANT`` says what to change (comma-separated):

- ``uvloop``: run on uvloop instead of asyncio's default loop. hub's RESP client asserts
  ``isinstance(transport, asyncio.Transport)``, which uvloop's transports (same methods, no common base class)
  fail, so that one module sees a widened ``Transport``.
- ``backlog=N``: listen with an accept queue of N instead of aiohttp's default 128.
- ``gclog=DIR``: time every garbage collection; at exit write ``DIR/gc-<pid>.json`` (pauses by generation).
- ``cork``: frames written to a socket during one event-loop iteration are joined and sent with one
  ``send()`` at the end of the iteration, instead of one ``send()`` per frame (per-socket write coalescing,
  which pays off when one read from Redis carries several events).
- ``batchread``: like ``cork`` but scoped to one read from Redis that carries several events: frames those
  envelopes write to the same socket are joined and sent at the end of that read, synchronously (no extra
  loop turn); a read with one event takes the normal path.
- ``gcfreeze=S``: every S seconds move all live objects to the permanent generation (``gc.freeze()``), so
  long-lived connection objects stop being traversed by full collections.
- ``tracemalloc=DIR``: trace Python allocations (10 frames deep); each SIGUSR2 writes a snapshot to
  ``DIR/tm-<pid>-<n>.snap``. The idle scenario signals before and after connecting, and
  ``python -m benchmarks.memory_breakdown DIR`` turns the pair into bytes per connection by module.

The benchmarks select it with ``--set hub_variant=uvloop`` (or ``backlog=4096``). hub itself is unchanged.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import json
import os
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

from aiohttp import web

VARIANT_ENV = "HUB_BENCH_VARIANT"


class _AsyncioWithUvloopTransports(types.ModuleType):
    """``asyncio`` as one hub module sees it: ``Transport`` also matches uvloop's transports."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


def _use_uvloop() -> None:
    import uvloop

    import hub.redis_resp as redis_resp

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


def _log_gc(directory: str) -> None:
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    long_pauses: list[tuple[float, int, float]] = []  # (unix time, generation, seconds) of pauses over 5 ms
    started: list[float] = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            took = time.perf_counter() - started[0]
            pauses[info["generation"]].append(took)
            if took > 0.005:
                long_pauses.append((round(time.time(), 3), info["generation"], round(took * 1000, 2)))

    def write() -> None:
        summary = {
            str(gen): {
                "count": len(values),
                "total_ms": round(1000 * sum(values), 2),
                "max_ms": round(1000 * max(values, default=0.0), 2),
                "over_10ms": sum(1 for v in values if v > 0.01),
            }
            for gen, values in pauses.items()
        }
        summary["long_pauses"] = long_pauses  # type: ignore[assignment]
        Path(directory, f"gc-{os.getpid()}.json").write_text(json.dumps(summary, indent=2))

    gc.callbacks.append(callback)
    atexit.register(write)


def _trace_allocations(directory: str) -> None:
    import signal
    import tracemalloc

    tracemalloc.start(10)
    taken = [0]

    def snapshot(signum: int, frame: Any) -> None:
        taken[0] += 1
        tracemalloc.take_snapshot().dump(str(Path(directory, f"tm-{os.getpid()}-{taken[0]}.snap")))

    Path(directory).mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGUSR2, snapshot)


def _freeze_every(seconds: float) -> None:
    def loop() -> None:
        while True:
            time.sleep(seconds)
            gc.freeze()

    threading.Thread(target=loop, name="gc-freeze", daemon=True).start()


def _cork() -> None:
    from hub.ws.connection import Connection

    original = Connection.write
    pending: dict[Connection, list[bytes]] = {}
    scheduled = [False]

    def flush() -> None:
        scheduled[0] = False
        batch = list(pending.items())
        pending.clear()
        for conn, frames in batch:
            original(conn, frames[0] if len(frames) == 1 else b"".join(frames))

    def write(self: Connection, frame: bytes) -> None:
        frames = pending.get(self)
        if frames is None:
            pending[self] = [frame]
        else:
            frames.append(frame)
        if not scheduled[0]:
            scheduled[0] = True
            asyncio.get_running_loop().call_soon(flush)

    Connection.write = write  # type: ignore[method-assign]


def _batch_reads() -> None:
    from hub.redis_resp import RespProtocol
    from hub.ws.connection import Connection

    original_write = Connection.write
    original_received = RespProtocol.data_received
    batch: list[dict[Connection, list[bytes]] | None] = [None]

    def write(self: Connection, frame: bytes) -> None:
        pending = batch[0]
        if pending is None:
            original_write(self, frame)
            return
        frames = pending.get(self)
        if frames is None:
            pending[self] = [frame]
        else:
            frames.append(frame)

    def data_received(self: RespProtocol, data: bytes) -> None:
        if data.count(b"*3\r\n$7\r\nmessage\r\n") < 2:
            # One event (or none) in this read: nothing to join, and no per-socket allocation either, which
            # would feed the garbage collector on every broadcast.
            original_received(self, data)
            return
        pending: dict[Connection, list[bytes]] = {}
        batch[0] = pending
        try:
            original_received(self, data)
        finally:
            batch[0] = None
            for conn, frames in pending.items():
                original_write(conn, frames[0] if len(frames) == 1 else b"".join(frames))

    Connection.write = write  # type: ignore[method-assign]
    RespProtocol.data_received = data_received  # type: ignore[method-assign]


def apply(variant: str) -> None:
    """Apply every change named in ``variant``."""
    for item in filter(None, (part.strip() for part in variant.split(","))):
        name, _, value = item.partition("=")
        if name == "uvloop":
            _use_uvloop()
        elif name == "backlog":
            _set_backlog(int(value))
        elif name == "cork":
            _cork()
        elif name == "batchread":
            _batch_reads()
        elif name == "gclog":
            _log_gc(value)
        elif name == "gcfreeze":
            _freeze_every(float(value))
        elif name == "tracemalloc":
            _trace_allocations(value)
        else:
            raise SystemExit(f"unknown hub variant {item!r}")


if __name__ == "__main__":
    apply(os.environ.get(VARIANT_ENV, ""))
    from hub.cli import main

    sys.exit(main())
