"""Subscriber processes: each runs one event loop of lean subscribers and answers commands over a pipe.

Spreading the subscribers over several processes keeps the generator from being the bottleneck (one
Python process tops out on one core). The controller sends each worker its share of the clients, then
asks for progress (``status``), the recorded latencies (``collect``), and finally ``close`` and ``exit``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from benchmarks.histogram import Histogram
from benchmarks.procstats import raise_fd_limit, total_cpu_seconds
from benchmarks.wsclient import ClientSpec, SubscriberPool


@dataclass(frozen=True)
class WorkerConfig:
    """What every worker needs to know: the app, whether clients reconnect, handshake concurrency."""

    app_key: str
    app_secret: str
    reconnect: bool = False
    concurrency: int = 50
    loop: str = "auto"
    deflate: bool = False
    track_sequences: bool = False


@dataclass
class WorkerStatus:
    """One worker's progress."""

    subscribed: int
    live: int
    lost: int
    delivered: dict[int, int]
    other_frames: int
    connect_failures: int
    errors: list[str]
    resubscribed_since: int
    resubscribe_times_ns: list[int]
    bytes_received: int = 0


async def _serve(pipe: Connection, config: WorkerConfig) -> None:
    pool = SubscriberPool(
        config.app_key,
        config.app_secret,
        reconnect=config.reconnect,
        deflate=config.deflate,
        track_sequences=config.track_sequences,
    )
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def read_commands() -> None:
        # A thread, not loop.add_reader: uvloop would switch the pipe to non-blocking and large replies
        # (histograms) would then fail to send.
        while True:
            try:
                message = pipe.recv()
            except (EOFError, OSError):
                message = ("exit", None)
            loop.call_soon_threadsafe(commands.put_nowait, message)
            if message[0] == "exit":
                return

    threading.Thread(target=read_commands, name="commands", daemon=True).start()
    while True:
        command, arg = await commands.get()
        reply: Any = None
        if command == "connect":
            reply = await pool.connect_many(arg, config.concurrency)
        elif command == "status":
            since_ns, with_times = arg
            times = pool.resubscribe_times_ns
            reply = WorkerStatus(
                subscribed=pool.subscribed_count,
                live=len(pool.live),
                lost=pool.lost_count,
                delivered=pool.recorder.delivered(),
                other_frames=pool.recorder.other_frames,
                connect_failures=pool.connect_failures,
                errors=list(pool.errors),
                resubscribed_since=sum(1 for t in times if t > since_ns) if since_ns else 0,
                resubscribe_times_ns=[t for t in times if t > since_ns] if with_times else [],
                bytes_received=pool.bytes_received,
            )
        elif command == "sequences":
            reply = pool.sequence_report()
        elif command == "collect":
            reply = {step: hist.to_sparse() for step, hist in pool.recorder.take().items()}
        elif command == "close":
            await pool.close_all()
        elif command == "exit":
            await pool.close_all(limit_s=2.0)
            pipe.send(None)
            return
        pipe.send(reply)


def client_loop_name(wanted: str) -> str:
    """The event loop subscribers run on: uvloop when asked (or ``auto`` and installed), else asyncio."""
    if wanted == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401 - only whether it is there
    except ImportError:
        if wanted == "uvloop":
            raise
        return "asyncio"
    return "uvloop"


def worker_main(pipe: Connection, config: WorkerConfig) -> None:
    """Entry point of a subscriber process.

    uvloop (a benchmark-only dependency) halves the generator's CPU per delivery, leaving more of a small
    machine to the server under test; plain asyncio works too.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the controller stops us; a terminal Ctrl-C goes to it
    raise_fd_limit()
    if client_loop_name(config.loop) == "uvloop":
        import uvloop

        uvloop.install()
    asyncio.run(_serve(pipe, config))


class WorkerSet:
    """The controller's handle on its subscriber processes."""

    def __init__(self, count: int, config: WorkerConfig) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        for i in range(count):
            parent, child = context.Pipe()
            process = context.Process(target=worker_main, args=(child, config), name=f"bench-subscribers-{i}")
            process.start()
            child.close()
            self.pipes.append(parent)
            self.processes.append(process)

    @property
    def pids(self) -> list[int]:
        """Pids of the worker processes."""
        return [p.pid for p in self.processes if p.pid is not None]

    def cpu_seconds(self) -> float:
        """CPU seconds the workers used so far."""
        return total_cpu_seconds(self.pids)

    async def _call(self, pipe: Connection, command: str, arg: Any) -> Any:
        pipe.send((command, arg))
        return await asyncio.to_thread(pipe.recv)

    async def call_all(self, command: str, args: Sequence[Any] | None = None) -> list[Any]:
        """Send ``command`` to every worker (with its own argument, when given) and gather the replies."""
        per_worker = list(args) if args is not None else [None] * len(self.pipes)
        return list(
            await asyncio.gather(*(self._call(p, command, a) for p, a in zip(self.pipes, per_worker, strict=True)))
        )

    async def connect(self, specs: Sequence[ClientSpec]) -> int:
        """Spread ``specs`` round-robin over the workers, connect them all; return the failures."""
        shares: list[list[ClientSpec]] = [[] for _ in self.pipes]
        for i, spec in enumerate(specs):
            shares[i % len(shares)].append(spec)
        return sum(await self.call_all("connect", shares))

    async def status(self, since_ns: int = 0, with_times: bool = False) -> list[WorkerStatus]:
        """Every worker's progress; with ``since_ns``, how many subscriptions succeeded after it (and when)."""
        return await self.call_all("status", [(since_ns, with_times)] * len(self.pipes))

    async def delivered(self, step: int) -> int:
        """Deliveries of ``step``'s events recorded by all workers since the last collect."""
        return sum(s.delivered.get(step, 0) for s in await self.status())

    async def collect(self) -> dict[int, Histogram]:
        """Merged histograms by step from all workers; resets them."""
        merged: dict[int, Histogram] = {}
        for reply in await self.call_all("collect"):
            for step, sparse in reply.items():
                hist = Histogram.from_sparse(sparse)
                if step in merged:
                    merged[step].merge(hist)
                else:
                    merged[step] = hist
        return merged

    async def sequences(self) -> tuple[list[tuple[str, list[int], bool]], dict[int, int]]:
        """Every tracked subscriber's (channel, sequence numbers in arrival order, dropped), and when each number
        was first seen by any subscriber (ns, the earliest over the workers)."""
        subscribers: list[tuple[str, list[int], bool]] = []
        first_seen: dict[int, int] = {}
        for reply in await self.call_all("sequences"):
            subscribers += reply["subscribers"]
            for n, at in reply["first_seen_ns"].items():
                if n not in first_seen or at < first_seen[n]:
                    first_seen[n] = at
        return subscribers, first_seen

    async def close_clients(self) -> None:
        """Close every connection (clients do not reconnect)."""
        await self.call_all("close")

    async def shutdown(self) -> None:
        """Ask each worker to exit, then make sure it did (SIGKILL by pid as the last resort)."""
        try:
            async with asyncio.timeout(15):
                await self.call_all("exit")
        except (TimeoutError, EOFError, BrokenPipeError, OSError):
            pass
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGKILL)
                process.join(timeout=5)
        for pipe in self.pipes:
            pipe.close()
