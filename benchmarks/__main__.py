"""``python -m benchmarks``: run a profile (or some of its scenarios) and write the report.

Examples::

    python -m benchmarks --profile standard --gate        # make bench
    python -m benchmarks --profile full --gate            # make bench-full
    python -m benchmarks --profile full --only ramp-2nodes --set ramp-2nodes.step_seconds=3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.profiles import PROFILES, apply_overrides, select
from benchmarks.runner import execute, gate_failures
from benchmarks.topology import TOPOLOGIES, cluster_available


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, report; exit 1 when ``--gate`` is given and the gate fails."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="standard")
    parser.add_argument("--topology", choices=("auto", *TOPOLOGIES), default="auto")
    parser.add_argument("--only", nargs="*", default=[], help="run names or scenario kinds to run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="[RUN.]FIELD=VALUE")
    parser.add_argument("--out", type=Path, help="report folder (default benchmarks/results/<time>-<profile>)")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--gate", action="store_true", help="exit 1 if p99 >= 100 ms or loss in broadcast/chat")
    args = parser.parse_args(argv)
    topology = args.topology
    if topology == "auto":
        topology = "cluster" if cluster_available() else "embedded"
        if topology == "embedded":
            print("[bench] cluster unavailable (redis-server or hub.state.redis missing): using hub serve", flush=True)
    try:
        runs = select(PROFILES[args.profile](topology), args.only)
        apply_overrides(runs, args.overrides)
    except ValueError as exc:
        parser.error(str(exc))
    results, _ = execute(runs, args.profile, args.out, plots=not args.no_plots)
    failures = gate_failures(results)
    for failure in failures:
        print(f"[bench] GATE FAILED: {failure}", file=sys.stderr, flush=True)
    return 1 if args.gate and failures else 0


if __name__ == "__main__":
    sys.exit(main())
