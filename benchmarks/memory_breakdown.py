"""Where a ws node's memory per connection goes, from two tracemalloc snapshots of the idle scenario.

    .venv/bin/python -m benchmarks --profile standard --topology embedded --only idle \\
        --set hub_variant=tracemalloc=/tmp/tm --set connections=10000
    .venv/bin/python -m benchmarks.memory_breakdown /tmp/tm 10000

For each ws process: Python allocations alive after connecting minus before, per connection, grouped by the
module that allocated them (the innermost frame), largest first. RSS growth beyond this total is the
allocator's own overhead and memory allocated outside Python's allocators (the kernel's socket buffers are
not in RSS).
"""

from __future__ import annotations

import sys
import tracemalloc
from collections import defaultdict
from pathlib import Path

SHORTEN = ("site-packages/", "lib/python3.11/", "lib/python3.12/", "lib/python3.13/", "/hub/")


def _short(filename: str) -> str:
    for marker in SHORTEN:
        if marker in filename:
            tail = filename.split(marker, 1)[1]
            return ("hub/" + tail) if marker == "/hub/" else tail
    return filename


def breakdown(directory: Path, connections: int) -> str:
    """A markdown table per traced process: bytes per connection by allocating module."""
    by_pid: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(directory.glob("tm-*-*.snap")):
        by_pid[path.name.split("-")[1]].append(path)
    lines: list[str] = []
    for pid, paths in by_pid.items():
        if len(paths) < 2:
            continue
        before, after = (
            tracemalloc.Snapshot.load(str(p)) for p in sorted(paths, key=lambda p: int(p.stem.split("-")[2]))[:2]
        )
        grouped: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))
        for stat in after.compare_to(before, "filename"):
            key = _short(stat.traceback[0].filename)
            size, count = grouped[key]
            grouped[key] = (size + stat.size_diff, count + stat.count_diff)
        total = sum(size for size, _ in grouped.values())
        lines += [
            f"process {pid}: {total / connections:,.0f} bytes of Python allocations per connection",
            "",
            "| allocated in | bytes/conn | objects/conn |",
            "|---|---:|---:|",
        ]
        for key, (size, count) in sorted(grouped.items(), key=lambda kv: -kv[1][0])[:15]:
            if size / connections >= 8:
                lines.append(f"| `{key}` | {size / connections:,.0f} | {count / connections:.1f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(breakdown(Path(sys.argv[1]), int(sys.argv[2])))
