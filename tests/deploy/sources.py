"""Where the deployment files live, and the PromQL they contain."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = REPO / "k8s"

METRIC_NAME = re.compile(r"\bhub_[a-zA-Z0-9_]+")


def alert_exprs(alerts: dict[str, Any]) -> list[str]:
    """The PromQL of every rule in an alerts file."""
    return [rule["expr"] for group in alerts["groups"] for rule in group["rules"]]


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    """The PromQL of every panel target, rows included."""
    exprs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard.get("panels", []))
    return exprs


def hub_metric_names(exprs: list[str]) -> set[str]:
    """Every hub_* series name the expressions read."""
    return {name for expr in exprs for name in METRIC_NAME.findall(expr)}
