"""The soak: the cluster of tests/stress/cluster.py under hours-shaped load, then its answers checked.

    python -m tests.stress.soak --minutes 60 --report soak.json      # make soak
    python -m tests.stress.soak --minutes 1.5 --sample-seconds 10    # what CI runs (tests/stress/test_soak.py)

Stable subscribers check every event's sequence number; churners cycle through public, private and
presence channels, leaving by clean close, unsubscribe or TCP reset; a publisher publishes steadily.
Every ``--sample-seconds`` (60 in long mode) each node's RSS, fds and asyncio tasks and Redis's memory
and keys are sampled. At the end, after the churners stop and the webhook hold passes, the cluster's
own answers are compared with what the clients know; ``check`` lists every mismatch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.stress.cluster import Cluster, Sampler, running_cluster
from tests.stress.load import STABLE_PRESENCE, Churner, Publisher, Stable

HOLD_SECONDS = 3.0


@dataclass(frozen=True)
class SoakConfig:
    """Size and length of a run."""

    minutes: float
    stable: int = 20
    stable_channels: int = 5
    churners: int = 20
    publish_interval: float = 0.02
    sample_seconds: float = 60.0


@dataclass
class Load:
    """The clients of one run and their tasks."""

    stable: list[Stable]
    churners: list[Churner]
    publisher: Publisher
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def stable_channels(config: SoakConfig) -> list[str]:
    """The channels the stable subscribers hold."""
    return [f"stable-{n}" for n in range(config.stable_channels)]


async def start_load(cluster: Cluster, config: SoakConfig, session: aiohttp.ClientSession, until: float) -> Load:
    """Connect the stable subscribers, then start the publisher and the churners."""
    channels = stable_channels(config)
    stable = [
        Stable(f"stable-{i}", cluster.ws_urls, [channels[i % len(channels)], channels[(i + 1) % len(channels)]], node=i)
        for i in range(config.stable)
    ]
    load = Load(stable, [], Publisher(cluster.api_url, channels, config.publish_interval))
    load.tasks = [asyncio.create_task(s.run(session)) for s in stable]
    deadline = time.monotonic() + 30
    while not all(s.connected_since for s in stable):
        if time.monotonic() > deadline:
            raise RuntimeError("stable subscribers did not all connect within 30 s")
        await asyncio.sleep(0.1)
    load.churners = [Churner(cluster.ws_urls, "", seed) for seed in range(config.churners)]
    load.tasks += [asyncio.create_task(c.run(session, until)) for c in load.churners]
    load.tasks.append(asyncio.create_task(load.publisher.run(session, until)))
    return load


def lost_events(load: Load, connected_only: bool = False) -> dict[str, int]:
    """Per stable subscriber, events answered 200 on its channels that it did not receive.

    With ``connected_only``, only events published while the subscriber was connected count (an
    outage of its node interrupts it; events in the gap are not replayed, as with Pusher).
    """
    lost: dict[str, int] = {}
    for s in load.stable:
        missing = 0
        for channel in s.channels:
            got = set(s.received.get(channel, []))
            for seq in load.publisher.accepted.get(channel, []):
                if seq in got:
                    continue
                if connected_only and _published_in_outage(load, s, channel, seq):
                    continue
                missing += 1
        if missing:
            lost[s.name] = missing
    return lost


def _published_in_outage(load: Load, s: Stable, channel: str, seq: int) -> bool:
    at = load.publisher.published_at.get((channel, seq))
    return at is not None and any(start - 1.0 <= at <= end + 1.0 for start, end in s.outages)


def _first_break(names: list[str]) -> str:
    """Where a sequence of webhooks stops alternating, with a little context."""
    for i in range(1, len(names)):
        if names[i] == names[i - 1]:
            return f"#{i} of {len(names)}: {names[max(0, i - 3) : i + 2]}"
    return f"ends with {names[-1]} after {len(names)}"


def _alternates(events: list[str], first: str, second: str) -> bool:
    return all(name == (first if i % 2 == 0 else second) for i, name in enumerate(events))


def _webhook_problems(cluster: Cluster) -> list[str]:
    problems = []
    by_channel: dict[str, list[str]] = {}
    by_member: dict[tuple[str, str], list[str]] = {}
    # In the order the events happened (a backend orders by time_ms: several nodes deliver concurrently).
    received_events = sorted(
        cluster.receiver.events(path="/soak"),
        key=lambda r: (json.loads(r.request.body)["time_ms"], r.request.received_at),
    )
    for received in received_events:
        event = received.event
        if event["name"] in ("channel_occupied", "channel_vacated"):
            by_channel.setdefault(event["channel"], []).append(event["name"])
        else:
            by_member.setdefault((event["channel"], event["user_id"]), []).append(event["name"])
    for channel, names in by_channel.items():
        if not channel.startswith(("stable-", STABLE_PRESENCE)) and (
            not _alternates(names, "channel_occupied", "channel_vacated") or names[-1] != "channel_vacated"
        ):
            problems.append(f"{channel}: occupancy webhooks {_first_break(names)} (not occupied/vacated pairs)")
    for (channel, user), names in by_member.items():
        if channel != STABLE_PRESENCE and (
            not _alternates(names, "member_added", "member_removed") or names[-1] != "member_removed"
        ):
            problems.append(f"{channel} {user}: membership webhooks {_first_break(names)} (not added/removed pairs)")
    return problems


async def run_soak(config: SoakConfig, workdir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the soak and return its report (``problems`` is empty when the cluster agreed with the clients)."""
    with running_cluster(workdir) as cluster:
        sampler = Sampler(cluster, config.sample_seconds)
        sampling = asyncio.create_task(sampler.run())
        until = time.monotonic() + config.minutes * 60
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            load = await start_load(cluster, config, session, until)
            log(f"soak: {config.stable} stable subscribers, {config.churners} churners, for {config.minutes} min")
            timed = load.tasks[len(load.stable) :]
            await asyncio.gather(*timed, return_exceptions=True)
            await asyncio.sleep(HOLD_SECONDS + 2.0)  # churners' last leaves: held webhooks, final counts
            problems = live_checks(cluster, load, config)
            lost = lost_events(load)
            for s in load.stable:
                s.stop()
            await asyncio.gather(*load.tasks[: len(load.stable)], return_exceptions=True)
        await asyncio.sleep(HOLD_SECONDS + 2.0)
        problems += final_checks(cluster)
        await sampler.sample_now()
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
        report = {
            "config": config.__dict__,
            "problems": problems,
            "lost": lost,
            "duplicates": sum(s.duplicates for s in load.stable),
            "out_of_order": sum(s.out_of_order for s in load.stable),
            "published": load.publisher.tally(),
            "delivered": sum(len(v) for s in load.stable for v in s.received.values()),
            "churn": {
                "joins": sum(c.joins for c in load.churners),
                "failures": sum(c.failures for c in load.churners),
                "exits": _sum_dicts([c.exits for c in load.churners]),
            },
            "webhooks": len(cluster.receiver.events(path="/soak")),
            "rss": sampler.rss_summary(),
            "samples": [s.__dict__ for s in sampler.samples],
        }
    return report


def live_checks(cluster: Cluster, load: Load, config: SoakConfig, *, webhooks: bool = True) -> list[str]:
    """Channels, counts, presence users and webhooks while only the stable subscribers remain.

    ``webhooks=False`` leaves the webhook pairs out (a Redis restart loses the queue and the state
    that decided them, so chaos cannot promise them).
    """
    problems: list[str] = []
    channels = stable_channels(config)
    expected_counts = {c: sum(c in s.channels for s in load.stable) for c in channels}
    occupied = cluster.api_get("/apps/1/channels", info="subscription_count")["channels"]
    leaked = sorted(set(occupied) - set(channels) - {STABLE_PRESENCE})
    if leaked:
        problems.append(f"leaked channels still occupied: {leaked[:10]} ({len(leaked)})")
    for channel, count in expected_counts.items():
        got = occupied.get(channel, {}).get("subscription_count")
        if got != count:
            problems.append(f"{channel}: subscription_count {got}, the clients know {count}")
    users = {u["id"] for u in cluster.api_get(f"/apps/1/channels/{STABLE_PRESENCE}/users")["users"]}
    if users != {s.user_id for s in load.stable}:
        problems.append(f"{STABLE_PRESENCE}: users {len(users)}, the clients know {len(load.stable)}")
    for n in range(20):
        ghosts = cluster.api_get(f"/apps/1/channels/presence-churn-{n}/users")["users"]
        if ghosts:
            problems.append(f"ghost members in presence-churn-{n}: {ghosts}")
    ws = [p for p in cluster.topology.ws_processes if p.is_running()]
    connections = sum(cluster.metric(p, "hub_connections") for p in ws)
    subscriptions = sum(cluster.metric(p, "hub_subscriptions") for p in ws)
    want_subs = sum(len(s.channels) + 1 for s in load.stable)
    if (connections, subscriptions) != (len(load.stable), want_subs):
        problems.append(
            f"ws nodes report {connections} connections / {subscriptions} subscriptions, "
            f"the clients know {len(load.stable)} / {want_subs}"
        )
    return problems + (_webhook_problems(cluster) if webhooks else [])


def final_checks(cluster: Cluster) -> list[str]:
    """After every client left: nothing occupied, no connection counted."""
    problems = []
    occupied = cluster.api_get("/apps/1/channels")["channels"]
    if occupied:
        problems.append(f"after every client left, still occupied: {sorted(occupied)[:10]}")
    ws = [p for p in cluster.topology.ws_processes if p.is_running()]
    left = sum(cluster.metric(p, "hub_connections") for p in ws)
    if left:
        problems.append(f"after every client left, ws nodes still count {left} connections")
    return problems


def _sum_dicts(dicts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = total.get(k, 0) + v
    return total


def summary(report: dict[str, Any]) -> str:
    """The report's figures in a few lines."""
    lines = [
        f"published {report['published']}, delivered {report['delivered']}, lost {sum(report['lost'].values())}, "
        f"duplicates {report['duplicates']}, out of order {report['out_of_order']}",
        f"churn {report['churn']}, webhooks {report['webhooks']}",
    ]
    for node, rss in report["rss"].items():
        lines.append(
            f"{node}: RSS {rss['start_mb']:.1f} -> {rss['end_mb']:.1f} MB (max {rss['max_mb']:.1f}), "
            f"slope {rss['slope_mb_per_min']:+.3f} MB/min"
        )
    if report["samples"]:
        last = report["samples"][-1]
        lines.append(f"redis: {last['redis_used_mb']:.1f} MB used, {last['redis_keys']} keys at the end")
    lines.append("problems: " + ("none" if not report["problems"] else "; ".join(report["problems"])))
    return "\n".join(lines)


def main() -> int:
    """``make soak``: run, print the summary, write the report, exit 1 on any problem."""
    parser = argparse.ArgumentParser(prog="python -m tests.stress.soak")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--stable", type=int, default=20)
    parser.add_argument("--churners", type=int, default=20)
    parser.add_argument("--publish-interval", type=float, default=0.02)
    parser.add_argument("--sample-seconds", type=float, default=60.0)
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args()
    config = SoakConfig(
        args.minutes,
        stable=args.stable,
        churners=args.churners,
        publish_interval=args.publish_interval,
        sample_seconds=args.sample_seconds,
    )
    with tempfile.TemporaryDirectory(prefix="hub-soak-") as workdir:
        report = asyncio.run(run_soak(config, Path(workdir)))
    print(summary(report))
    if args.report:
        args.report.write_text(json.dumps(report, indent=1, default=str))
    return 1 if report["problems"] or report["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
