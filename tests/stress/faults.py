"""Network faults between one ws node and Redis, on loopback only: a delaying TCP proxy and nftables rules.

This kernel has no ``sch_netem`` (``tc qdisc add dev lo root netem delay 10ms`` answers "Error:
Specified qdisc kind is unknown.": CONFIG_NET_SCH_NETEM is not set), so latency comes from a proxy we
run, and packet loss and the partition from nftables rules that match only the proxy's port:

    proxy = DelayProxy(redis_port).start()        # ws node 0 uses redis://127.0.0.1:<proxy.port>
    proxy.delay = 0.2                             # 200 ms each way
    with nft_rules(proxy.port, "numgen random mod 100 < 10 drop"):   # 10 % of its packets lost
        ...
    with nft_rules(proxy.port, "drop"):           # partitioned from Redis
        ...

The rules live in a table of their own (``hubchaos<pid>``), deleted on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator

from tests.support.ports import LOOPBACK, free_port


class DelayProxy:
    """Forwards 127.0.0.1:<port> to Redis, holding every chunk ``delay`` seconds (order kept).

    ``connection_delay`` says how long one connection's chunks are held; a subclass may give each
    connection its own delay, so that one connection's commands overtake another's.
    """

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target = target_port
        self.delay = 0.0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> DelayProxy:
        """Listen."""
        self._server = await asyncio.start_server(self._serve, LOOPBACK, self.port)
        return self

    async def close(self) -> None:
        """Stop listening and drop every forwarded connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.target)
        except OSError:
            writer.close()
            return
        delay = self.connection_delay()
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink, delay))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def connection_delay(self) -> Callable[[], float]:
        """The hold of a new connection's chunks, read per chunk: ``delay`` as it is at the time."""
        return lambda: self.delay

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, delay: Callable[[], float]) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def later() -> None:
            while True:
                due, chunk = await queue.get()
                if not chunk:
                    break
                await asyncio.sleep(max(0.0, due - loop.time()))
                sink.write(chunk)
                await sink.drain()

        sender = asyncio.create_task(later())
        try:
            while chunk := await source.read(65536):
                await queue.put((loop.time() + delay(), chunk))
            await queue.put((0.0, b""))
            await sender
        except (ConnectionError, asyncio.CancelledError):
            sender.cancel()
        finally:
            with contextlib.suppress(Exception):
                sink.close()


def nft_available() -> str | None:
    """Why nftables rules cannot be used here, or None when they can."""
    if shutil.which("nft") is None:
        return "nft is not installed (Debian package nftables)"
    if os.geteuid() != 0:
        return "nftables rules need root"
    probe = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"nft cannot list tables: {probe.stderr.strip()}"


@contextlib.contextmanager
def nft_rules(port: int, verdict: str) -> Iterator[None]:
    """Apply ``verdict`` (e.g. ``drop``) to every loopback packet to or from ``port`` while the block runs."""
    table = f"hubchaos{os.getpid()}"
    script = f"""
table inet {table} {{
  chain out {{
    type filter hook output priority 0; policy accept;
    tcp dport {port} {verdict}
    tcp sport {port} {verdict}
  }}
}}
"""
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True)
