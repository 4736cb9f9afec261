"""Writing a run's results: ``results.json``, ``results.md`` (tables) and PNG plots (when matplotlib is there)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.scenarios import Result, Target


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _latency(result: Result, key: str) -> str:
    if not result.latency or not result.latency.get("count"):
        return "-"
    return _fmt(float(result.latency[key]), 2)


def markdown(results: Sequence[Result], meta: dict[str, Any]) -> str:
    """The results as markdown: the main table, the ramp steps, targets and the gate."""
    machine = meta.get("machine", {})
    lines = [
        f"# hub benchmark: profile `{meta.get('profile')}`, {meta.get('started')}",
        "",
        f"Machine: {machine.get('cpu_model')}, {machine.get('cpus')} CPUs, {machine.get('memory_gib')} GiB, "
        f"Linux {machine.get('kernel')}; load average at start {meta.get('load_start')}, at end {meta.get('load_end')}; "
        f"hub at {meta.get('hub_commit', 'unknown')}. "
        "Load generator, Redis and hub on the same machine, over loopback.",
        "",
        "Latency is publish-to-delivery: from the backend's HTTP call (scheduled time) to the subscriber's read "
        "(ingest: the HTTP request; storm: from the kill to each client's new subscription). "
        "CPU/1k = CPU seconds of the hub processes per 1,000 deliveries (ingest: per 1,000 publishes). "
        "Machine busy = all CPUs over the measurement; 'of it others' = the part not used by hub, Redis or the "
        "load generator (other tenants of the machine).",
        "",
        "| run | topology | conns | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | expected | received | lost "
        "| deliveries/s | hub CPU s/1k | gen CPU s/1k | RSS KiB/conn | machine busy | of it others |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        topology = f"{r.topology} x{r.ws_nodes}" if r.scenario != "ingest" else f"{r.topology} (api)"
        rate = _fmt(r.deliveries_per_s, 0)
        if r.scenario == "ingest":
            rate = f"{rate} pub/s"
        lines.append(
            f"| {r.name} | {topology} | {_fmt(r.connections)} | {_latency(r, 'p50_ms')} | {_latency(r, 'p90_ms')} "
            f"| {_latency(r, 'p99_ms')} | {_latency(r, 'p999_ms')} | {_latency(r, 'max_ms')} | {_fmt(r.expected)} "
            f"| {_fmt(r.received)} | {_fmt(r.lost)} | {rate} | {_fmt(r.hub_cpu_s_per_1000, 4)} "
            f"| {_fmt(r.generator_cpu_s_per_1000, 4)} | {_fmt(r.rss_per_connection_kib, 1)} "
            f"| {_fmt(r.machine_busy * 100 if r.machine_busy is not None else None, 0)}% "
            f"| {_fmt(r.outside_busy * 100 if r.outside_busy is not None else None, 0)}% |"
        )
    errors = [r for r in results if r.error]
    if errors:
        lines += ["", "## Errors", ""]
        lines += [f"- **{r.name}**: {r.error}" for r in errors]
    for r in results:
        steps = r.extra.get("steps")
        if not steps:
            continue
        lines += [
            "",
            f"## {r.name}: ramp steps ({r.ws_nodes} ws node{'s' if r.ws_nodes > 1 else ''}, "
            f"{r.connections:,} subscribers)",
            "",
            "| step | events/s | offered deliveries/s | delivered/s | p50 ms | p99 ms | max ms | lost "
            "| hub CPU s/1k | machine busy | passed |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for s in steps:
            lines.append(
                f"| {s['step']} | {_fmt(s['events_per_s'])} | {_fmt(s['offered_deliveries_per_s'], 0)} "
                f"| {_fmt(s['deliveries_per_s'], 0)} | {_fmt(s['p50_ms'], 2)} | {_fmt(s['p99_ms'], 2)} "
                f"| {_fmt(s['max_ms'], 2)} | {_fmt(s['lost'])} | {_fmt(s['hub_cpu_s_per_1000'], 4)} "
                f"| {_fmt((s['machine_busy'] or 0) * 100, 0)}% | {'yes' if s['passed'] else 'no'} |"
            )
    for r in results:
        console_steps = r.extra.get("console_steps")
        if not console_steps:
            continue
        lines += [
            "",
            f"## {r.name}: console stream under rising API publishes",
            "",
            "| step | offered/s | published/s | shown/s | not shown/s |",
            "|---:|---:|---:|---:|---:|",
        ]
        for s in console_steps:
            lines.append(
                f"| {s['step']} | {_fmt(s['offered_per_s'])} | {_fmt(s['published_per_s'])} "
                f"| {_fmt(s['shown_per_s'])} | {_fmt(s['not_shown_per_s'])} |"
            )
    extras = []
    for r in results:
        if r.scenario == "storm":
            extras.append(
                f"- **{r.name}**: {r.extra.get('clients_back')} of {r.connections:,} clients subscribed again on the "
                f"surviving node; all back after {_fmt(r.extra.get('storm_seconds'), 2)} s; "
                f"a check event afterwards reached {_fmt(r.received)} of {_fmt(r.expected)}; machine TCP counters "
                f"during the storm {r.extra.get('storm_tcp_counters')}."
            )
        if r.scenario == "idle":
            extras.append(
                f"- **{r.name}**: {r.connections:,} idle subscribed connections; ws RSS grew "
                f"{_fmt(r.rss_per_connection_kib)} KiB per connection; idle hub CPU "
                f"{_fmt(r.extra.get('idle_hub_cpu_percent'))} % of one core."
            )
        if r.scenario == "ingest":
            extras.append(
                f"- **{r.name}**: {_fmt(r.deliveries_per_s, 0)} signed publishes/s on one API node "
                f"({r.params.get('processes')} publisher processes x {r.params.get('concurrency')} in flight); "
                f"statuses {r.extra.get('statuses')}; Redis CPU {r.redis_cpu_s} s."
            )
        if r.extra.get("connect_seconds") is not None and r.scenario in ("broadcast", "chat"):
            extras.append(
                f"- **{r.name}**: {r.connections:,} clients connected and subscribed in "
                f"{r.extra['connect_seconds']} s. Over the {r.measure_seconds} s measured: hub CPU {r.hub_cpu_s} s "
                f"(ws nodes {r.ws_cpu_s} s, the rest the API node), Redis {r.redis_cpu_s} s, load generator "
                f"{r.generator_cpu_s} s; publish HTTP p50/p99 "
                f"{r.extra.get('publish_http_latency_ms', {}).get('p50_ms')}/"
                f"{r.extra.get('publish_http_latency_ms', {}).get('p99_ms')} ms."
            )
    if extras:
        lines += ["", "## Notes", "", *extras]
    lines += _redis_cpu(results)
    lines += _per_publish(results)
    lines += _failover(results)
    targets = [(r, t) for r in results for t in r.targets]
    if targets:
        lines += ["", "## Targets", "", "| target | wanted | measured | met |", "|---|---|---:|---|"]
        for _, t in targets:
            met = "-" if t.met is None else ("yes" if t.met else "**no**")
            lines.append(f"| {t.name} | {t.wanted} | {_fmt(t.value, 2)} | {met} |")
    gated = [r for r in results if r.gated]
    if gated:
        lines += ["", "## Gate (p99 < 100 ms and no loss in broadcast and chat)", ""]
        for r in gated:
            verdict = "pass" if not r.gate_failures and not r.error else "FAIL: " + "; ".join(r.gate_failures)
            lines.append(f"- {r.name}: {verdict}")
    return "\n".join(lines) + "\n"


def _replay(r: Result) -> str:
    return "off" if "HUB_REDIS_REPLAY_SECONDS=0" in str(r.params.get("hub_env", "")) else "on"


def _units(r: Result) -> str:
    return "publishes" if r.scenario == "ingest" else "deliveries"


def _redis_cpu(results: Sequence[Result]) -> list[str]:
    """Redis CPU over the measurement, per process (each shard's primary and replica apart) and summed."""
    rows = [r for r in results if r.extra.get("redis_cpu_by_process")]
    if not rows:
        return []
    lines = [
        "",
        "## Redis CPU by process",
        "",
        "CPU seconds of each Redis process over the measurement (names are the roles at start: `shardN` serves "
        "the Nth slot range; ramp: the best step). s/1k: Redis CPU per 1,000 deliveries (ingest: publishes).",
        "",
        "| run | topology | replay | Redis CPU s | s/1k | by process (s) |",
        "|---|---|---|---:|---:|---|",
    ]
    for r in rows:
        by = r.extra["redis_cpu_by_process"]
        parts = ", ".join(f"{name} {seconds:.2f}" for name, seconds in sorted(by.items()))
        lines.append(
            f"| {r.name} | {r.topology} | {_replay(r)} | {_fmt(sum(by.values()), 2)} "
            f"| {_fmt(r.extra.get('redis_cpu_s_per_1000'), 4)} | {parts} |"
        )
    return lines


def _per_publish(results: Sequence[Result]) -> list[str]:
    """CPU per publish (hub, API node, ws nodes, Redis) and the Redis memory the replay streams took."""
    rows = [r for r in results if r.extra.get("per_publish_us")]
    if not rows:
        return []
    lines = [
        "",
        "## Per publish: CPU and Redis memory (the replay buffer's price)",
        "",
        "CPU µs per published event over the measurement (chat: each event reaches 2 members on 2 ws nodes). "
        "Memory: INFO used_memory of the primaries after the run minus before it; replay streams counted with "
        "SCAN on each primary, MEMORY USAGE of up to 200 of them.",
        "",
        "| run | topology | replay | publishes | hub µs | API node µs | ws nodes µs | Redis µs | used_memory growth "
        "| replay streams | MEMORY USAGE per stream | entries per stream | bytes per entry |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        per = r.extra["per_publish_us"]
        mem = r.extra.get("redis_memory") or {}
        publishes = r.extra.get("events_published") or r.received
        growth = mem.get("used_memory_growth")
        lines.append(
            f"| {r.name} | {r.topology} | {_replay(r)} | {_fmt(publishes)} | {_fmt(per['hub'])} "
            f"| {_fmt(per['api_node'])} | {_fmt(per['ws_nodes'])} | {_fmt(per['redis'])} "
            f"| {_fmt(growth / 1024 if growth is not None else None)} KiB | {_fmt(mem.get('stream_keys'))} "
            f"| {_fmt(mem.get('mean_memory_usage_bytes'))} B | {_fmt(mem.get('mean_entries'))} "
            f"| {_fmt(mem.get('bytes_per_entry'))} |"
        )
    return lines


def _failover(results: Sequence[Result]) -> list[str]:
    """What a ``kill -9`` of a Redis primary did to publishes and deliveries, per channel."""
    rows = [r for r in results if r.scenario == "failover" and r.extra.get("failover_channels")]
    if not rows:
        return []
    lines = [
        "",
        "## Failover (`kill -9` of the primary serving the first channel)",
        "",
        "Promoted: kill to a replica serving the slot (as Redis reports it). Resume: kill to the first delivery "
        "of an event published after the kill. Gap: longest time between two new events seen on the channel. "
        "Lost: events answered 200 that a subscriber who stayed connected never received.",
        "",
        "| run | channel | subscribers | published | answered 200 | refused 503 | other failures | lost "
        "| duplicates | out of order | refused, yet delivered | promoted s | resume s | gap s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        for index, (channel, c) in enumerate(r.extra["failover_channels"].items()):
            label = f"{channel} (victim {r.extra.get('victim')})" if index == 0 else channel
            lines.append(
                f"| {r.name} | {label} | {_fmt(c['subscribers'])} | {_fmt(c['published'])} | {_fmt(c['accepted'])} "
                f"| {_fmt(c['refused_503'])} | {_fmt(c['failed_other'])} | {_fmt(c['lost'])} | {_fmt(c['duplicates'])} "
                f"| {_fmt(c['out_of_order'])} | {_fmt(c['refused_but_delivered'])} "
                f"| {_fmt(r.extra.get('promoted_seconds'), 2) if index == 0 else ''} "
                f"| {_fmt(c['resume_seconds'], 2)} | {_fmt(c['longest_gap_seconds'], 2)} |"
            )
    return lines


def plot(results: Sequence[Result], directory: Path) -> list[Path]:
    """latency.png (percentile curves) and ramp.png (delivered/s and p99 per offered rate); [] without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written: list[Path] = []
    # Storm times are reconnects (seconds), not deliveries: they have their own line in results.md.
    curves = [
        (r.name, r.extra["percentile_curve_ms"])
        for r in results
        if r.extra.get("percentile_curve_ms") and r.scenario != "storm"
    ]
    if curves:
        fig, ax = plt.subplots(figsize=(9, 5))
        for name, curve in curves:
            labels = list(curve)
            ax.plot(range(len(labels)), [max(v, 0.001) for v in curve.values()], marker="o", label=name)
        ax.set_xticks(range(len(labels)), labels)
        ax.set_yscale("log")
        ax.set_ylabel("latency (ms, log)")
        ax.set_xlabel("percentile")
        ax.axhline(100, color="red", linestyle="--", linewidth=1, label="100 ms gate")
        ax.set_title("hub: publish-to-delivery latency percentiles (ingest: HTTP publish latency)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = directory / "latency.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    ramps = [r for r in results if r.extra.get("steps")]
    if ramps:
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
        for r in ramps:
            steps = r.extra["steps"]
            offered = [s["offered_deliveries_per_s"] for s in steps]
            top.plot(offered, [s["deliveries_per_s"] for s in steps], marker="o", label=r.name)
            bottom.plot(offered, [max(s["p99_ms"], 0.01) for s in steps], marker="o", label=f"{r.name} p99")
        top.set_ylabel("delivered / s")
        top.axhline(150_000, color="green", linestyle=":", linewidth=1, label="target 150k/s")
        top.legend(fontsize=8)
        top.grid(True, alpha=0.3)
        bottom.set_yscale("log")
        bottom.set_ylabel("p99 latency (ms, log)")
        bottom.set_xlabel("offered deliveries / s")
        bottom.axhline(100, color="red", linestyle="--", linewidth=1, label="100 ms")
        bottom.legend(fontsize=8)
        bottom.grid(True, which="both", alpha=0.3)
        fig.suptitle("hub: ramp (one channel, rate rising until p99 > 100 ms)")
        fig.tight_layout()
        path = directory / "ramp.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write(results: Sequence[Result], meta: dict[str, Any], directory: Path, *, plots: bool = True) -> list[Path]:
    """Write results.json, results.md and (optionally) the plots into ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "results": [r.as_dict() for r in results]}
    json_path = directory / "results.json"
    json_path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    md_path = directory / "results.md"
    md_path.write_text(markdown(results, meta))
    written = [json_path, md_path]
    if plots:
        written += plot(results, directory)
    return written


def load(directory: Path) -> tuple[list[Result], dict[str, Any]]:
    """Read a run's results.json back into Results (to re-render the markdown and plots)."""
    doc = json.loads((directory / "results.json").read_text())
    results = []
    for raw in doc["results"]:
        raw = dict(raw)
        raw["targets"] = [Target(**t) for t in raw.get("targets", [])]
        for key in ("load_before", "load_after"):
            if raw.get(key) is not None:
                raw[key] = tuple(raw[key])
        results.append(Result(**raw))
    return results, doc["meta"]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.report DIR...``: re-render results.md and the plots from results.json."""
    import sys

    for name in argv if argv is not None else sys.argv[1:]:
        directory = Path(name)
        results, meta = load(directory)
        for path in write(results, meta, directory):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
