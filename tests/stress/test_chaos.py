"""The chaos suite in CI: the full fault sequence of `make chaos` under load, with its figures checked.

Bounds are generous (a loaded two-core machine); what must hold exactly: no event answered 200 is
lost by a subscriber that stayed connected, publishes Redis refused are answered 503 (never a 200
that goes nowhere), and after healing the cluster's counts, presence and metrics match the clients.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stress.chaos import run_chaos, summary
from tests.stress.faults import nft_available
from tests.support.requirements import require, require_executable

# Seconds within which delivery must resume after each fault (see the README's Reliability section).
RESUME_BOUNDS = {"kill -9 ws": 6.0, "kill -9 ingest": 12.0, "Redis restart": 10.0, "latency": 3.0, "loss": 5.0}


@pytest.mark.cluster
@pytest.mark.timeout(420)
async def test_chaos_faults_lose_nothing_answered_200_and_the_state_heals(tmp_path: Path) -> None:
    require_executable("redis-server")
    problem = nft_available()
    require(problem is None, f"the network faults need nftables: {problem}")

    report = await run_chaos(tmp_path, partition_seconds=30.0)

    print("\n[chaos] " + summary(report).replace("\n", "\n[chaos] "))
    faults = {f["fault"]: f for f in report["faults"]}
    assert len(faults) == 6
    for name, fault in faults.items():
        assert fault["lost_by_connected_subscribers"] == 0, name
        bound = next((b for key, b in RESUME_BOUNDS.items() if key in name), 30.0 + 10.0)
        assert fault["delivery_resumed_within_s"] < bound, f"{name}: {fault}"
    redis = next(f for name, f in faults.items() if "Redis restart" in name)
    assert redis["publishes"].get("503", 0) > 0, "publishes while Redis was down must be refused with 503"
    assert report["problems"] == []
