"""Running a list of scenario runs one after another and writing the report."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.procstats import load_average, machine_description, raise_fd_limit
from benchmarks.profiles import Run
from benchmarks.scenarios import SCENARIOS, Result, _new_result

RESULTS_DIR = Path(__file__).resolve().parent / "results"


async def run_all(runs: Sequence[Run], *, log: bool = True) -> list[Result]:
    """Run each scenario in turn; a scenario that raises becomes a Result with ``error`` set."""
    results: list[Result] = []
    for run in runs:
        _, runner = SCENARIOS[run.scenario]
        if log:
            print(f"[bench] {run.name}: {run.scenario} {run.params}", flush=True)
        started = time.perf_counter()
        try:
            result: Result = await runner(run.params, run.name)
        except Exception as exc:
            result = _new_result(run.name, run.scenario, run.params)
            result.error = f"{type(exc).__name__}: {exc}"
            result.gated = run.scenario in ("broadcast", "chat")
            if log:
                traceback.print_exc()
        result.wall_seconds = round(time.perf_counter() - started, 1)
        if log:
            lat = result.latency or {}
            print(
                f"[bench] {run.name}: {result.wall_seconds} s wall, p50 {lat.get('p50_ms')} p99 {lat.get('p99_ms')} "
                f"max {lat.get('max_ms')} ms, {result.received}/{result.expected} delivered, "
                f"{result.deliveries_per_s}/s, hub CPU/1k {result.hub_cpu_s_per_1000}, "
                f"RSS/conn {result.rss_per_connection_kib} KiB"
                + (f", ERROR {result.error}" if result.error else "")
                + (f", gate: {'; '.join(result.gate_failures)}" if result.gate_failures else ""),
                flush=True,
            )
        results.append(result)
    return results


def gate_failures(results: Sequence[Result]) -> list[str]:
    """Why the gate fails (empty when it passes)."""
    failures = []
    for r in results:
        if r.gated and (r.gate_failures or r.error):
            failures.append(f"{r.name}: {'; '.join(r.gate_failures) or r.error}")
    return failures


def _hub_checkout() -> Path:
    """The work tree of the hub the benchmark starts: this environment's install, not the harness's checkout.

    ``-I`` leaves the current directory out of the path, so a harness run from another checkout (the
    before/after comparisons) still names the hub it measured.
    """
    try:
        found = subprocess.run(
            [sys.executable, "-I", "-c", "import hub; print(hub.__file__)"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return Path(__file__).resolve().parents[1]
    return Path(found).resolve().parents[1]


def _git_commit() -> str:
    """The commit hub ran from, with ``+dirty`` when the work tree had changes (hub is installed editable)."""
    root = _hub_checkout()
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "hub"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def execute(
    runs: Sequence[Run], profile: str, out: Path | None = None, *, plots: bool = True, log: bool = True
) -> tuple[list[Result], Path]:
    """Run ``runs`` and write the report into ``out`` (default: a new folder under benchmarks/results)."""
    raise_fd_limit()
    started = datetime.now(UTC)
    directory = out or RESULTS_DIR / f"{started:%Y%m%d-%H%M%S}-{profile}"
    meta: dict[str, Any] = {
        "profile": profile,
        "hub_commit": _git_commit(),
        "started": started.isoformat(timespec="seconds"),
        "machine": machine_description(),
        "load_start": [round(v, 2) for v in load_average()],
    }
    wall = time.perf_counter()
    results = asyncio.run(run_all(runs, log=log))
    meta["wall_seconds"] = round(time.perf_counter() - wall, 1)
    meta["load_end"] = [round(v, 2) for v in load_average()]
    written = report.write(results, meta, directory, plots=plots)
    if log:
        for path in written:
            print(f"[bench] wrote {path}", flush=True)
    return results, directory
