"""The short soak CI runs: the same cluster, load and checks as `make soak`, for 90 seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.stress.soak import SoakConfig, run_soak, summary
from tests.support.requirements import require_executable

MINUTES = float(os.environ.get("HUB_SOAK_MINUTES", "1.5"))


@pytest.mark.cluster
@pytest.mark.timeout(int(MINUTES * 60) + 180)
async def test_short_soak_leaves_no_leak_no_ghost_and_loses_no_event(tmp_path: Path) -> None:
    require_executable("redis-server")

    report = await run_soak(SoakConfig(MINUTES, sample_seconds=10), tmp_path)

    print("\n[soak] " + summary(report).replace("\n", "\n[soak] "))
    assert report["problems"] == []
    assert report["lost"] == {}, "an event answered 200 did not reach a stable subscriber"
    assert report["duplicates"] == 0 and report["out_of_order"] == 0
    assert set(report["published"]) == {"200"}, f"publishes not answered 200: {report['published']}"
    assert report["churn"]["joins"] > 500 and all(report["churn"]["exits"].get(k) for k in ("close", "reset"))
    for node, rss in report["rss"].items():
        assert rss["end_mb"] - rss["start_mb"] < 30, f"{node} grew from {rss['start_mb']} to {rss['end_mb']} MB"
