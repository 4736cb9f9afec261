"""Chaos: the soak's load while nodes die, Redis restarts and the network between ws node 0 and Redis degrades.

    python -m tests.stress.chaos --report chaos.json      # make chaos
    (tests/stress/test_chaos.py runs the same sequence in CI)

Faults, one after another, each measured on its own window: ``kill -9`` of ws node 1 (restarted on
its port 2 s later), ``kill -9`` of the ingest node (restarted 2 s later), a Redis restart (all data
lost, nothing persisted), 200 ms latency each way between ws node 0 and Redis, 10 % packet loss on
that link, and a 30 s partition of ws node 0 from Redis. ws node 0 reaches Redis through a delaying
proxy whose port the nftables rules of tests/stress/faults.py match (this kernel has no netem).

Per fault: the longest delivery gap of any stable subscriber (time until delivery resumed), events
lost by subscribers that stayed connected, how many subscribers had to reconnect, and the publishes
answered 200 / 503 / otherwise. After the last fault and a settle period, the soak's checks run:
channels, counts, presence users, metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.stress.cluster import Cluster, running_cluster
from tests.stress.faults import DelayProxy, nft_rules
from tests.stress.load import Stable
from tests.stress.soak import HOLD_SECONDS, Load, SoakConfig, final_checks, live_checks, start_load
from tests.support.ports import LOOPBACK


@dataclass
class Window:
    """When a fault started and ended (wall clock)."""

    name: str
    start: float
    end: float


async def _kill_ws(cluster: Cluster) -> None:
    victim = cluster.topology.ws_processes[1]
    victim.send_signal(signal.SIGKILL)
    await asyncio.sleep(2.0)
    await asyncio.to_thread(victim.stop)
    cluster.topology.processes.remove(victim)
    victim.close()
    cluster.topology.ws_processes[1] = await asyncio.to_thread(cluster.start_ws, cluster.topology.ws_ports[1])


async def _kill_ingest(cluster: Cluster) -> None:
    victim = next(p for p in cluster.topology.processes if p not in cluster.topology.ws_processes)
    victim.send_signal(signal.SIGKILL)
    await asyncio.sleep(2.0)
    await asyncio.to_thread(victim.stop)
    cluster.topology.processes.remove(victim)
    victim.close()
    await asyncio.to_thread(cluster.start_ingest)


async def _restart_redis(cluster: Cluster) -> None:
    redis = cluster.topology.redis
    await asyncio.to_thread(redis.stop)
    await asyncio.sleep(1.0)
    await asyncio.to_thread(redis.start)


def _with_proxy_delay(proxy: DelayProxy, seconds: float) -> Callable[[Cluster], Awaitable[None]]:
    async def fault(cluster: Cluster) -> None:
        proxy.delay = 0.2
        try:
            await asyncio.sleep(seconds)
        finally:
            proxy.delay = 0.0

    return fault


def _with_nft(proxy: DelayProxy, verdict: str, seconds: float) -> Callable[[Cluster], Awaitable[None]]:
    async def fault(cluster: Cluster) -> None:
        with nft_rules(proxy.port, verdict):
            await asyncio.sleep(seconds)

    return fault


def _connected_throughout(s: Stable, window: Window) -> bool:
    return all(end < window.start - 1.0 or start > window.end + 3.0 for start, end in s.outages) and (
        s.connected_since is None or s.connected_since < window.start
    )


def measure(load: Load, window: Window, after: float) -> dict[str, Any]:
    """The figures of one fault, from ``window.start`` to ``window.end + after``."""
    until = window.end + after
    gaps = []
    for s in load.stable:
        times = [t for t in s.arrivals if window.start <= t <= until]
        edges = [window.start, *times, until]
        gaps.append(max(b - a for a, b in itertools.pairwise(edges)))
    lost = 0
    for s in load.stable:
        if not _connected_throughout(s, window):
            continue
        for channel in s.channels:
            got = set(s.received.get(channel, []))
            for seq in load.publisher.accepted.get(channel, []):
                at = load.publisher.published_at.get((channel, seq), 0.0)
                if window.start <= at <= window.end + 1.0 and seq not in got:
                    lost += 1
    moved = [s for s in load.stable if not _connected_throughout(s, window)]
    reconnects = [end - start for s in moved for start, end in s.outages if window.start - 1 <= start <= until]
    return {
        "fault": window.name,
        "seconds": round(window.end - window.start, 1),
        "delivery_resumed_within_s": round(max(gaps), 2),
        "lost_by_connected_subscribers": lost,
        "subscribers_reconnected": len(moved),
        "longest_reconnect_s": round(max(reconnects), 2) if reconnects else 0.0,
        "publishes": load.publisher.tally(window.start, window.end + 1.0),
    }


async def run_chaos(
    workdir: Path,
    *,
    partition_seconds: float = 30.0,
    only: set[int] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the fault sequence under load; return the per-fault figures and the final checks' problems."""
    config = SoakConfig(minutes=0, stable=16, churners=10, publish_interval=0.05)
    with running_cluster(workdir) as cluster:
        proxy = await DelayProxy(cluster.topology.redis.port).start()
        try:
            # ws node 0 reaches Redis through the proxy, whose port the network faults match.
            first = cluster.topology.ws_processes[0]
            first.stop()
            cluster.topology.processes.remove(first)
            first.close()
            cluster.topology.ws_processes[0] = await asyncio.to_thread(
                cluster.start_ws, cluster.topology.ws_ports[0], "--redis-url", f"redis://{LOOPBACK}:{proxy.port}/0"
            )
            faults: list[tuple[str, Callable[[Cluster], Awaitable[None]], float]] = [
                ("kill -9 ws node 1 (restarted after 2 s)", _kill_ws, 8.0),
                ("kill -9 ingest node (restarted after 2 s)", _kill_ingest, 6.0),
                ("Redis restart (1 s down, data lost)", _restart_redis, 8.0),
                ("200 ms latency each way, ws node 0 <-> Redis, 10 s", _with_proxy_delay(proxy, 10.0), 4.0),
                (
                    "10 % packet loss, ws node 0 <-> Redis, 10 s",
                    _with_nft(proxy, "numgen random mod 100 < 10 drop", 10.0),
                    4.0,
                ),
                (
                    f"partition ws node 0 from Redis, {partition_seconds:.0f} s",
                    _with_nft(proxy, "drop", partition_seconds),
                    12.0,
                ),
            ]
            faults = [f for n, f in enumerate(faults, 1) if only is None or n in only]
            # Load until a while after the last fault: the partitioned node heals and the reaped state returns.
            total = 5.0 + sum(after for _, _, after in faults) + 40.0 + partition_seconds
            until = time.monotonic() + total
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
                load = await start_load(cluster, config, session, until)
                await asyncio.sleep(5.0)
                windows: list[tuple[Window, float]] = []
                for name, fault, after in faults:
                    log(f"chaos: {name}")
                    window = Window(name, time.time(), 0.0)
                    await fault(cluster)
                    window.end = time.time()
                    windows.append((window, after))
                    await asyncio.sleep(after)
                log("chaos: healing")
                await asyncio.sleep(max(0.0, until - time.monotonic()))
                await asyncio.gather(*load.tasks[len(load.stable) :], return_exceptions=True)
                await asyncio.sleep(HOLD_SECONDS + 4.0)
                problems = live_checks(cluster, load, config, webhooks=False)
                results = [measure(load, window, after) for window, after in windows]
                for s in load.stable:
                    s.stop()
                await asyncio.gather(*load.tasks[: len(load.stable)], return_exceptions=True)
            await asyncio.sleep(HOLD_SECONDS + 2.0)
            problems += final_checks(cluster)
        finally:
            await proxy.close()
    return {"faults": results, "problems": problems, "published": load.publisher.tally()}


def summary(report: dict[str, Any]) -> str:
    """One line per fault, then the final checks."""
    lines = []
    for f in report["faults"]:
        lines.append(
            f"{f['fault']}: delivery resumed within {f['delivery_resumed_within_s']} s, "
            f"{f['lost_by_connected_subscribers']} lost by connected subscribers, "
            f"{f['subscribers_reconnected']} reconnected (longest {f['longest_reconnect_s']} s), publishes {f['publishes']}"
        )
    lines.append("after healing: " + ("state exact" if not report["problems"] else "; ".join(report["problems"])))
    return "\n".join(lines)


def main() -> int:
    """``make chaos``: run, print, write the report; exit 1 when the healed state is wrong."""
    parser = argparse.ArgumentParser(prog="python -m tests.stress.chaos")
    parser.add_argument("--partition-seconds", type=float, default=30.0)
    parser.add_argument("--only", type=str, default="", help="comma-separated fault numbers (1-6) to run")
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args()
    only = {int(n) for n in args.only.split(",") if n} or None
    with tempfile.TemporaryDirectory(prefix="hub-chaos-") as workdir:
        report = asyncio.run(run_chaos(Path(workdir), partition_seconds=args.partition_seconds, only=only))
    print(summary(report))
    if args.report:
        args.report.write_text(json.dumps(report, indent=1, default=str))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
