"""Fixtures for the deployment files' tests: paths, parsed files and the external tools that check them.

Each tool (promtool, haproxy, redis-server, kubernetes-validate, PyYAML) comes from `make deploy-deps`.
A missing one skips the test locally and fails it under CI, so a green CI means every check ran.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.deploy.sources import DEPLOY, K8S
from tests.support.requirements import require, require_executable


def require_module(name: str) -> ModuleType:
    """Import `name`; skip (fail under CI) when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        require(False, f"Python module {name} is not installed (make deploy-deps)")
        raise


@pytest.fixture(scope="session")
def yaml() -> ModuleType:
    """PyYAML."""
    return require_module("yaml")


@pytest.fixture(scope="session")
def kubernetes_validate() -> ModuleType:
    """kubernetes-validate, which ships the API schemas of each Kubernetes release."""
    return require_module("kubernetes_validate")


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of promtool (Debian package prometheus)."""
    return require_executable("promtool")


@pytest.fixture(scope="session")
def haproxy() -> str:
    """Path of haproxy; Debian installs it in /usr/sbin, off a normal user's PATH."""
    sbin = Path("/usr/sbin/haproxy")
    return str(sbin) if sbin.exists() else require_executable("haproxy")


@pytest.fixture(scope="session")
def redis_server() -> str:
    """Path of redis-server, which `make cluster` runs."""
    return require_executable("redis-server")


@pytest.fixture(scope="session")
def alerts(yaml: ModuleType) -> dict[str, Any]:
    """deploy/prometheus/alerts.yml, parsed."""
    parsed: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return parsed


@pytest.fixture(scope="session")
def dashboard() -> dict[str, Any]:
    """The provisioned Grafana dashboard, parsed."""
    parsed: dict[str, Any] = json.loads((DEPLOY / "grafana" / "dashboards" / "hub.json").read_text())
    return parsed


@pytest.fixture(scope="session")
def compose(yaml: ModuleType) -> dict[str, Any]:
    """deploy/docker-compose.yml, parsed (PyYAML resolves its `<<` merge keys as Compose does)."""
    parsed: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return parsed


@pytest.fixture(scope="session")
def k8s_docs(yaml: ModuleType) -> list[tuple[str, dict[str, Any]]]:
    """Every document of every manifest in k8s/ except the kustomization, with its file name."""
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend((path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs
