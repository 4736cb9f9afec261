"""The benchmark code runs end to end at a tiny scale (no timing assertions: CI machines are noisy).

Each scenario starts its own topology and load generator, so this also proves the suite stops every
process it started. The full-size runs are ``make bench`` and ``make bench-full``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pusher.pusher_client import PusherClient

from benchmarks.histogram import Histogram
from benchmarks.profiles import smoke, smoke_redis
from benchmarks.publisher import signed_query
from benchmarks.runner import execute, gate_failures
from benchmarks.topology import cluster_available
from benchmarks.wsclient import STAMP_RE, masked_frame, split_frames, stamp_data
from hub.protocol.messages import event_frame
from hub.ws.frames import text_frame
from tests.support.requirements import require

pytestmark = pytest.mark.timeout(180)

RESULT_FIELDS = {
    "name",
    "latency",
    "expected",
    "received",
    "lost",
    "deliveries_per_s",
    "hub_cpu_s_per_1000",
    "rss_per_connection_kib",
    "connections",
}


def test_histogram_percentiles_are_exact_to_ten_microseconds() -> None:
    hist = Histogram()
    for latency_us in range(1, 1001):
        hist.record(latency_us * 100)  # 0.1 ms .. 100 ms
    summary = hist.summary()
    assert summary.count == 1000
    assert abs(summary.p50_ms - 50.0) <= 0.011
    assert abs(summary.p99_ms - 99.0) <= 0.011
    assert summary.max_ms == 100.0


def test_histograms_merge_across_processes_through_their_sparse_form() -> None:
    a, b = Histogram(), Histogram()
    a.record(1_000)
    b.record(2_000_000)  # 2 s: the coarse range
    merged = Histogram.from_sparse(a.to_sparse())
    merged.merge(Histogram.from_sparse(b.to_sparse()))
    assert merged.count == 2
    assert merged.max_us == 2_000_000
    assert merged.percentile_us(100) == 2_000_000


def test_subscriber_finds_the_publish_stamp_in_a_hub_event_frame() -> None:
    frame = text_frame(event_frame("bench", "bench-broadcast", stamp_data(3, 1234567890)).encode())
    frames, used = split_frames(frame + frame[:5])
    assert used == len(frame)
    assert len(frames) == 1
    assert STAMP_RE.findall(frame) == [(b"1234567890", b"3")]


def test_client_frames_are_masked() -> None:
    frame = masked_frame(0x1, b'{"event":"pusher:ping","data":{}}')
    assert frame[0] == 0x81
    assert frame[1] & 0x80


def test_publisher_signs_requests_like_the_pusher_sdk() -> None:
    client = PusherClient(app_id="1", key="bench-key", secret="bench-secret", host="127.0.0.1", port=1)
    request = client.trigger.make_request(["c"], "bench", "{}")
    sdk = dict(request.query_params)
    query = signed_query("POST", "/apps/1/events", request.body, "bench-key", "bench-secret", sdk["auth_timestamp"])
    ours = dict(pair.split("=", 1) for pair in query.split("&"))
    assert ours["body_md5"] == sdk["body_md5"]
    assert ours["auth_signature"] == sdk["auth_signature"]


@pytest.mark.parametrize("topology", ["embedded", "cluster"])
def test_every_scenario_completes_at_tiny_scale_and_reports_its_fields(topology: str, tmp_path: Path) -> None:
    if topology == "cluster":
        require(cluster_available(), "redis-server or the Redis backends are not available")
    runs = smoke(topology)
    results, directory = execute(runs, f"smoke-{topology}", tmp_path, plots=False, log=False)
    assert [r.name for r in results] == [r.name for r in runs]
    assert [r.error for r in results] == [None] * len(runs)
    document = json.loads((directory / "results.json").read_text())
    for entry in document["results"]:
        assert set(entry) >= RESULT_FIELDS, entry["name"]
    by_name = {r.name: r for r in results}
    assert by_name["broadcast"].received and by_name["broadcast"].latency
    assert by_name["ramp"].extra["steps"]
    assert by_name["storm"].extra["clients_back"] == by_name["storm"].connections
    assert by_name["ingest"].received
    assert [s["shown_per_s"] > 0 for s in by_name["console"].extra["console_steps"]] == [True, True]
    assert "| broadcast |" in (directory / "results.md").read_text()
    assert isinstance(gate_failures(results), list)


def test_redis_cluster_topology_reports_each_shard_and_a_primary_kill_loses_no_accepted_event(tmp_path: Path) -> None:
    require(cluster_available(), "redis-server or the Redis backends are not available")
    require(shutil.which("redis-cli") is not None, "redis-cli is not installed")
    runs = smoke_redis("rediscluster")
    results, directory = execute(runs, "smoke-redis", tmp_path, plots=False, log=False)
    assert [r.error for r in results] == [None] * len(runs)
    (failover,) = results
    shards = {f"shard{i}-{role}" for i in (1, 2, 3) for role in ("primary", "replica")}
    assert set(failover.extra["redis_cpu_by_process"]) == shards
    # One replay stream per channel, each found on the primary serving it now (the victim's replica too).
    assert failover.extra["redis_memory"]["stream_keys"] == 3
    channels = failover.extra["failover_channels"]
    assert len(channels) == 3
    assert failover.extra["subscribers_dropped"] == 0
    assert failover.lost == 0, channels
    assert failover.extra["duplicates"] == 0
    assert failover.extra["out_of_order"] == 0
    # The other shards' channels kept working while the victim's failed over.
    assert [c["refused_503"] for c in list(channels.values())[1:]] == [0, 0]
    text = (directory / "results.md").read_text()
    assert "## Redis CPU by process" in text
    assert "## Failover" in text
