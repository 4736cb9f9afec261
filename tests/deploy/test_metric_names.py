"""The alerts, the dashboard and the operations table name only metrics a live node exports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deploy.sources import DEPLOY, alert_exprs, dashboard_exprs, hub_metric_names
from tests.support.ports import LOOPBACK, free_port
from tests.support.processes import ManagedProcess, http_ready, hub_command

SERIES_SUFFIXES = ("_bucket", "_sum", "_count")


@pytest.fixture(scope="module")
def live_node() -> Iterator[tuple[int, int]]:
    """A `hub serve` on free loopback ports: (main port, metrics port)."""
    port, metrics_port = free_port(), free_port()
    argv = hub_command("serve", "--host", LOOPBACK, "--port", str(port), "--metrics-port", str(metrics_port))
    with ManagedProcess(argv, name="hub-serve-metrics") as process:
        process.wait_ready(http_ready(f"http://{LOOPBACK}:{metrics_port}/metrics"))
        yield port, metrics_port


@pytest.fixture(scope="module")
def exported(live_node: tuple[int, int]) -> set[str]:
    """Every metric family and series name on the node's /metrics. A labelled metric without samples
    yet still has its # TYPE line, so every registered metric is here."""
    with urllib.request.urlopen(f"http://{LOOPBACK}:{live_node[1]}/metrics", timeout=5) as response:
        text = response.read().decode()
    names = set(re.findall(r"^# TYPE (\S+)", text, re.M))
    names |= set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M))
    return names


def missing(referenced: set[str], exported: set[str]) -> set[str]:
    """Referenced names that the node does not export, comparing histogram series by base name."""

    def base(name: str) -> str:
        for suffix in SERIES_SUFFIXES:
            if name.endswith(suffix):
                return name.removesuffix(suffix)
        return name

    return {name for name in referenced if name not in exported and base(name) not in exported}


def families(exported: set[str]) -> set[str]:
    """The hub_* metrics a node registers, without prometheus_client's *_created companions."""
    hub = {name for name in exported if name.startswith("hub_") and not name.endswith("_created")}
    return {name for name in hub if not any(name.endswith(s) and name.removesuffix(s) in hub for s in SERIES_SUFFIXES)}


def test_alerts_use_only_exported_metrics(alerts: dict[str, Any], exported: set[str]) -> None:
    referenced = hub_metric_names(alert_exprs(alerts))
    assert referenced
    assert missing(referenced, exported) == set()


def test_dashboard_uses_only_exported_metrics(dashboard: dict[str, Any], exported: set[str]) -> None:
    referenced = hub_metric_names(dashboard_exprs(dashboard))
    assert referenced
    assert missing(referenced, exported) == set()


def test_operations_table_documents_every_exported_metric(exported: set[str]) -> None:
    readme = (DEPLOY.parent / "README.md").read_text()
    documented = set(re.findall(r"^\| `(hub_[a-z0-9_]+)`", readme, re.M))
    assert families(exported) - documented == set()
    assert missing(documented, exported) == set()


def test_node_reports_its_role_in_node_info(exported: set[str], live_node: tuple[int, int]) -> None:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{live_node[1]}/metrics", timeout=5) as response:
        text = response.read().decode()
    # The alerts and dashboard join on hub_node_info's role; "ws|serve" is what they treat as ws nodes.
    assert re.search(r'^hub_node_info\{[^}]*role="serve"', text, re.M)


def test_image_healthcheck_command_passes_against_a_live_node(live_node: tuple[int, int]) -> None:
    dockerfile = re.sub(r"\\\n\s*", "", (DEPLOY / "Dockerfile").read_text())
    (check,) = re.findall(r"^HEALTHCHECK .*?CMD (\[.*\])$", dockerfile, re.M)
    argv = json.loads(check)
    env = {"HUB_PORT": str(live_node[0]), "PATH": ""}
    result = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=10, check=False)
    assert result.returncode == 0, result.stderr
