"""The Prometheus configuration, alerts and dashboard queries are valid and say what they claim."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tests.deploy.sources import DEPLOY, alert_exprs, dashboard_exprs, hub_metric_names

HERE = Path(__file__).parent
PROMETHEUS = DEPLOY / "prometheus"


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd=cwd)


def test_prometheus_config_passes_promtool_check_config(promtool: str) -> None:
    result = run(promtool, "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_pass_promtool_check_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_alert_fires_on_its_failure_and_not_on_a_healthy_node(promtool: str) -> None:
    result = run(promtool, "test", "rules", "alerts_test.yml", cwd=HERE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_are_valid_promql(
    promtool: str, yaml: Any, dashboard: dict[str, Any], tmp_path: Path
) -> None:
    # promtool parses PromQL only inside rule files, so each panel query becomes a recording rule;
    # Grafana's $__rate_interval becomes a fixed range first.
    exprs = [expr.replace("$__rate_interval", "1m") for expr in dashboard_exprs(dashboard)]
    rules = [{"record": f"dashboard_query_{i}", "expr": expr} for i, expr in enumerate(exprs)]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_watch_every_required_signal(alerts: dict[str, Any]) -> None:
    required = {
        "hub_ready",  # no ready ws node
        "hub_broker_publish_failures_total",  # publishes failing
        "hub_http_requests_total",  # HTTP API 5xx
        "hub_pubsub_lag_seconds_bucket",  # pub/sub lag p99
        "hub_fanout_duration_seconds_bucket",  # fan-out p99
        "hub_broker_reconnects_total",  # Redis reconnects
        "hub_broker_connected",  # Redis lost
        "hub_slow_consumer_disconnects_total",  # slow consumers
        "hub_webhook_queue_depth",  # webhook backlog
        "hub_webhook_queue_oldest_age_seconds",
    }
    assert required <= hub_metric_names(alert_exprs(alerts))


def test_dashboard_shows_every_required_panel(dashboard: dict[str, Any]) -> None:
    required = {
        "hub_connections",
        "hub_channels",
        "hub_deliveries_total",
        "hub_fanout_duration_seconds_bucket",
        "hub_pubsub_lag_seconds_bucket",
        "hub_http_requests_total",
        "hub_broker_connected",
        "hub_process_cpu_seconds_total",
        "hub_process_resident_memory_bytes",
    }
    assert required <= hub_metric_names(dashboard_exprs(dashboard))


def test_every_alert_has_a_severity_and_a_summary(alerts: dict[str, Any]) -> None:
    for group in alerts["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]


def test_prometheus_scrapes_every_hub_node_of_the_compose_file(yaml: Any, compose: dict[str, Any]) -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (hub_job,) = [job for job in config["scrape_configs"] if job["job_name"] == "hub"]
    targets = {target for static in hub_job["static_configs"] for target in static["targets"]}
    hub_services = {name for name, service in compose["services"].items() if service.get("command", [""])[0] == "hub"}
    assert targets == {f"{name}:9601" for name in hub_services}
