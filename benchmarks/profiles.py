"""Named sets of scenario runs: ``smoke`` (CI, seconds), ``standard`` (``make bench``), ``full`` (``make bench-full``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.scenarios import (
    SCENARIOS,
    BroadcastParams,
    ChatParams,
    Common,
    ConsoleParams,
    FailoverParams,
    IdleParams,
    IngestParams,
    RampParams,
    StormParams,
)


@dataclass
class Run:
    """One scenario run of a profile: its report name, scenario and parameters."""

    name: str
    scenario: str
    params: Common


def smoke(topology: str) -> list[Run]:
    """Every scenario at a tiny scale (about 20 clients, about 1 s each): proves the code runs."""
    small: dict[str, Any] = {"topology": topology, "workers": 2}
    return [
        Run("broadcast", "broadcast", BroadcastParams(**small, subscribers=20, rate=5, seconds=1, warmup_seconds=0.2)),
        Run("chat", "chat", ChatParams(**small, channels=10, rate=20, seconds=1, warmup_seconds=0.2)),
        Run(
            "ramp", "ramp", RampParams(**small, subscribers=20, start_rate=10, factor=2, max_rate=40, step_seconds=0.5)
        ),
        Run("idle", "idle", IdleParams(**small, connections=20, settle_seconds=0.5)),
        Run("storm", "storm", StormParams(**small, clients=20, timeout_seconds=20)),
        Run("ingest", "ingest", IngestParams(**small, seconds=1, processes=1, concurrency=4)),
        Run("console", "console", ConsoleParams(**small, start_rate=20, max_rate=40, step_seconds=0.5)),
    ]


def standard(topology: str) -> list[Run]:
    """``make bench``: every scenario at the issue's connection counts, shorter; under 5 minutes on 2 cores.

    Gated (exit 1): broadcast and chat p99 >= 100 ms or any lost delivery. The ramp runs on two ws nodes only.
    """
    base: dict[str, Any] = {"topology": topology}
    return [
        Run("broadcast", "broadcast", BroadcastParams(**base, seconds=20)),
        Run("chat", "chat", ChatParams(**base, seconds=20)),
        Run("ramp-2nodes", "ramp", RampParams(**base, ws_nodes=2, step_seconds=3, start_rate=40, factor=1.3)),
        Run("idle", "idle", IdleParams(**base, settle_seconds=3)),
        Run("storm", "storm", StormParams(**base)),
        Run("ingest", "ingest", IngestParams(**base, seconds=5)),
    ]


def full(topology: str) -> list[Run]:
    """``make bench-full``: every scenario at the issue's scale, the ramp on one and on two ws nodes."""
    base: dict[str, Any] = {"topology": topology}
    return [
        Run("broadcast", "broadcast", BroadcastParams(**base)),
        Run("broadcast-embedded", "broadcast", BroadcastParams(topology="embedded", ws_nodes=1)),
        Run("chat", "chat", ChatParams(**base)),
        Run("ramp-1node", "ramp", RampParams(**base, ws_nodes=1)),
        Run("ramp-2nodes", "ramp", RampParams(**base, ws_nodes=2)),
        Run("idle", "idle", IdleParams(**base)),
        Run("storm", "storm", StormParams(**base)),
        Run("ingest", "ingest", IngestParams(**base)),
        *console_runs(base),
    ]


def console_runs(base: dict[str, Any]) -> list[Run]:
    """The debug console's stream under rising API publishes: at the default rate cap, and uncapped."""
    return [
        Run("console", "console", ConsoleParams(**base)),
        Run("console-uncapped", "console", ConsoleParams(**base, hub_env="HUB_CONSOLE_MAX_EVENTS=1000000")),
    ]


def console(topology: str) -> list[Run]:
    """``--profile console``: the console runs alone, plus the 2-node ramp with a stream open and without."""
    base: dict[str, Any] = {"topology": topology}
    return [
        Run("ramp-2nodes", "ramp", RampParams(**base, ws_nodes=2, step_seconds=3, start_rate=40, factor=1.3)),
        Run(
            "ramp-2nodes-console",
            "ramp",
            RampParams(**base, ws_nodes=2, step_seconds=3, start_rate=40, factor=1.3, console_streams=1),
        ),
        *console_runs(base),
    ]


def compression(topology: str) -> list[Run]:
    """permessage-deflate priced: bytes and hub CPU per delivery, 100 B and 2 KB events, clients offering it or not.

    One ws node, 2,000 subscribers, 50 events/s for 10 s; the hub compresses everything of 64 bytes or more
    here (HUB_COMPRESSION_MIN_BYTES=64), so the 100-byte case is compressed too.
    """
    base: dict[str, Any] = {
        "topology": topology,
        "ws_nodes": 1,
        "subscribers": 2_000,
        "rate": 50.0,
        "seconds": 10.0,
        "hub_env": "HUB_COMPRESSION_MIN_BYTES=64",
    }
    return [
        Run(
            f"deflate-{size}B-{'on' if on else 'off'}",
            "broadcast",
            BroadcastParams(**base, payload_bytes=size, deflate=on),
        )
        for size in (100, 2_000)
        for on in (False, True)
    ]


REPLAY_OFF = "HUB_REDIS_REPLAY_SECONDS=0"


def redis(topology: str) -> list[Run]:
    """``make bench-redis``: single Redis beside a Redis Cluster (3 primaries + 3 replicas), the replay buffer's
    price, and failovers; about 8 minutes on 2 cores. ``topology`` is ignored: each run names its own.

    Broadcast, chat and ramp on both; chat on single Redis with the replay buffer off; signed publishes
    (ingest) with it on and off on both; ``kill -9`` of a primary on the cluster and under Sentinel.
    """
    single: dict[str, Any] = {"topology": "cluster"}
    sharded: dict[str, Any] = {"topology": "rediscluster"}
    broadcast: dict[str, Any] = {"subscribers": 5_000, "seconds": 15}
    chat: dict[str, Any] = {"seconds": 20}
    ramp: dict[str, Any] = {"ws_nodes": 2, "step_seconds": 3, "start_rate": 40, "factor": 1.3}
    return [
        Run("broadcast-single", "broadcast", BroadcastParams(**single, **broadcast)),
        Run("broadcast-rediscluster", "broadcast", BroadcastParams(**sharded, **broadcast)),
        Run("chat-single", "chat", ChatParams(**single, **chat)),
        Run("chat-single-replay-off", "chat", ChatParams(**single, **chat, hub_env=REPLAY_OFF)),
        Run("chat-rediscluster", "chat", ChatParams(**sharded, **chat)),
        Run("ramp-single", "ramp", RampParams(**single, **ramp)),
        Run("ramp-rediscluster", "ramp", RampParams(**sharded, **ramp)),
        Run("ingest-single", "ingest", IngestParams(**single, seconds=5)),
        Run("ingest-single-replay-off", "ingest", IngestParams(**single, seconds=5, hub_env=REPLAY_OFF)),
        Run("ingest-rediscluster", "ingest", IngestParams(**sharded, seconds=5)),
        Run("ingest-rediscluster-replay-off", "ingest", IngestParams(**sharded, seconds=5, hub_env=REPLAY_OFF)),
        Run("failover-rediscluster", "failover", FailoverParams(**sharded)),
        Run("failover-sentinel", "failover", FailoverParams(topology="sentinel")),
    ]


def smoke_redis(topology: str) -> list[Run]:
    """The CI smoke run of the Redis Cluster topology: a short failover at a tiny scale (``topology`` is ignored)."""
    small: dict[str, Any] = {"topology": "rediscluster", "workers": 2}
    return [
        Run(
            "failover",
            "failover",
            FailoverParams(**small, subscribers=30, rate=30, seconds=5, kill_after_seconds=1, settle_seconds=1),
        ),
    ]


PROFILES: dict[str, Callable[[str], list[Run]]] = {
    "smoke": smoke,
    "standard": standard,
    "full": full,
    "compression": compression,
    "redis": redis,
    "smoke-redis": smoke_redis,
    "console": console,
}


def _coerce(current: Any, raw: str) -> Any:
    if isinstance(current, bool):
        return raw.lower() in ("1", "true", "yes")
    if isinstance(current, int):
        return int(raw)
    if isinstance(current, float):
        return float(raw)
    return raw


def apply_overrides(runs: Sequence[Run], overrides: Sequence[str]) -> None:
    """Apply ``field=value`` (every run that has the field) or ``run.field=value`` (that run only)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not field=value")
        target, _, field_name = key.rpartition(".")
        matched = False
        for run in runs:
            if target and target not in (run.name, run.scenario):
                continue
            names = {f.name for f in dataclasses.fields(run.params)}
            if field_name in names:
                setattr(run.params, field_name, _coerce(getattr(run.params, field_name), raw))
                matched = True
        if not matched:
            raise ValueError(f"override {item!r} matches no field of the selected runs")


def select(runs: list[Run], names: Sequence[str]) -> list[Run]:
    """Only the runs named (by run name or scenario); all when ``names`` is empty."""
    if not names:
        return runs
    unknown = set(names) - {r.name for r in runs} - {r.scenario for r in runs} - set(SCENARIOS)
    if unknown:
        raise ValueError(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return [r for r in runs if r.name in names or r.scenario in names]
