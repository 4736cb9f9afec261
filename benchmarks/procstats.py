"""What the kernel says about processes and the machine: CPU seconds, RSS, load (Linux ``/proc``)."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds the process has used so far ((0, 0) once it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0, 0.0
    # The command name (field 2) may contain spaces; the fields after its closing parenthesis are fixed.
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (0.0 once it is gone)."""
    user, system = cpu_split(pid)
    return user + system


def total_system_seconds(pids: Iterable[int]) -> float:
    """Summed kernel-mode CPU seconds of several processes."""
    return sum(cpu_split(pid)[1] for pid in pids)


def rss_bytes(pid: int) -> int:
    """Resident set size of the process (VmRSS), 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return 0


def total_cpu_seconds(pids: Iterable[int]) -> float:
    """Summed CPU seconds of several processes."""
    return sum(cpu_seconds(pid) for pid in pids)


def total_rss_bytes(pids: Iterable[int]) -> int:
    """Summed RSS of several processes."""
    return sum(rss_bytes(pid) for pid in pids)


TCP_COUNTERS = ("ListenOverflows", "ListenDrops", "TCPSynRetrans", "TCPReqQFullDoCookies")


def tcp_counters() -> dict[str, int]:
    """Machine-wide TCP counters that show accept-queue overflows (``/proc/net/netstat`` TcpExt)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return {}
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        if header.startswith("TcpExt:"):
            pairs = dict(zip(header.split()[1:], values.split()[1:], strict=False))
            return {name: int(pairs[name]) for name in TCP_COUNTERS if name in pairs}
    return {}


def counters_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """``after - before`` for each counter present in both."""
    return {k: after[k] - before[k] for k in before if k in after}


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages."""
    one, five, fifteen = os.getloadavg()
    return one, five, fifteen


@dataclass(frozen=True)
class MachineCpu:
    """Cumulative busy and total jiffies of all CPUs, from ``/proc/stat``."""

    busy: int
    total: int

    @classmethod
    def read(cls) -> MachineCpu:
        """Sample the counters now."""
        first = Path("/proc/stat").read_text().splitlines()[0].split()
        values = [int(v) for v in first[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        total = sum(values[:8])
        return cls(busy=total - idle, total=total)

    def busy_fraction_since(self, earlier: MachineCpu) -> float:
        """Share of all CPU time that was busy between ``earlier`` and this sample (0..1)."""
        total = self.total - earlier.total
        return (self.busy - earlier.busy) / total if total > 0 else 0.0


def raise_fd_limit(wanted: int = 65_536) -> int:
    """Raise this process's open-file limit as far as allowed (the hard limit too, when root); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            pass
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(soft, target)


def machine_description() -> dict[str, object]:
    """CPU model, core count and memory of this machine, for the report."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": os.uname().release,
    }
