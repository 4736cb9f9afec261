"""docker-compose.yml and the Dockerfile, checked without Docker: they parse, and name only what exists."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.sources import DEPLOY, REPO

# Continuation lines joined, so each instruction is one line.
DOCKERFILE = re.sub(r"\\\n\s*", "", (DEPLOY / "Dockerfile").read_text())


def hub_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if s.get("command", [""])[0] == "hub"}


def bind_sources(compose: dict[str, Any]) -> list[Path]:
    """Host paths of every bind mount, relative to the compose file as Compose resolves them."""
    sources = []
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith((".", "/")):
                sources.append((DEPLOY / source).resolve())
    return sources


def test_compose_runs_redis_two_ws_one_ingest_haproxy_prometheus_grafana(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"redis", "ws1", "ws2", "ingest1", "haproxy", "prometheus", "grafana"}
    roles = {name: s["command"][1] for name, s in hub_services(compose).items()}
    assert roles == {"ws1": "ws", "ws2": "ws", "ingest1": "ingest"}


def test_every_file_compose_mounts_exists(compose: dict[str, Any]) -> None:
    sources = bind_sources(compose)
    assert sources
    for source in sources:
        assert source.exists(), source


def test_compose_builds_from_the_repo_with_the_deploy_dockerfile(compose: dict[str, Any]) -> None:
    for name, service in hub_services(compose).items():
        build = service["build"]
        context = (DEPLOY / build["context"]).resolve()
        assert context == REPO, name
        assert (context / build["dockerfile"]).is_file(), name


def test_hub_nodes_reach_redis_and_outlive_their_drain(compose: dict[str, Any]) -> None:
    for name, service in hub_services(compose).items():
        env = service["environment"]
        assert env["HUB_REDIS_URL"].startswith("redis://redis:"), name
        assert env["HUB_NODE_ID"] == name
        grace = int(service["stop_grace_period"].removesuffix("s"))
        assert grace > float(env["HUB_DRAIN_SECONDS"]), name


def test_haproxy_backends_are_compose_services_on_the_hub_port(compose: dict[str, Any]) -> None:
    env = compose["services"]["haproxy"]["environment"]
    addresses = {key: value for key, value in env.items() if key.endswith("_ADDR")}
    assert addresses == {"WS1_ADDR": "ws1:6001", "WS2_ADDR": "ws2:6001", "INGEST1_ADDR": "ingest1:6001"}
    assert compose["services"]["haproxy"]["ports"] == ["6001:6001"]


def test_grafana_provisions_the_dashboard_directory_compose_mounts(yaml: Any, compose: dict[str, Any]) -> None:
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "hub.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    mounts = dict(v.split(":")[:2][::-1] for v in compose["services"]["grafana"]["volumes"])
    assert (DEPLOY / mounts[path] / "hub.json").is_file()
    home = compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{path}/hub.json"


def test_dashboard_reads_the_provisioned_data_source(yaml: Any, dashboard: dict[str, Any]) -> None:
    datasources = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (prometheus,) = datasources["datasources"]
    (variable,) = dashboard["templating"]["list"]
    assert variable["type"] == "datasource"
    assert variable["current"]["value"] == prometheus["uid"]
    assert json.dumps(dashboard).count('"uid": "${datasource}"') > 10


def test_dockerfile_builds_one_small_image_for_every_role() -> None:
    # Every stage starts from the BASE build argument, whose default is the official slim image.
    assert re.search(r"^ARG BASE=python:3\.12-slim$", DOCKERFILE, re.M)
    stages = re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert stages and all(image == "${BASE}" for image in stages)
    assert re.search(r'^CMD \["hub", "serve"\]$', DOCKERFILE, re.M)
    assert "ENTRYPOINT" not in DOCKERFILE, "compose and k8s replace the whole command to pick a role"
    assert re.search(r"^EXPOSE 6001 9601$", DOCKERFILE, re.M)


def test_dockerfile_runs_as_a_numeric_non_root_user() -> None:
    user = re.findall(r"^USER (\d+)(?::(\d+))?$", DOCKERFILE, re.M)
    assert user and user[-1][0] != "0"


def test_dockerfile_healthcheck_probes_liveness_with_python() -> None:
    (check,) = re.findall(r"^HEALTHCHECK .*?CMD (\[.*\])$", DOCKERFILE, re.M)
    argv = json.loads(check)
    assert argv[0] == "python3"  # Debian-built bases have no plain `python`
    assert "/' %" in argv[2] and "urllib" in argv[2]


@pytest.mark.parametrize("needed", ["pyproject.toml", "hub/"])
def test_build_context_lets_the_package_through(needed: str) -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert "*" in ignore and f"!{needed}" in ignore
    assert (REPO / needed).exists()
