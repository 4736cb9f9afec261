"""The admin port of a real `hub serve`: on with a token, off without, and the token is required."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.ports import LOOPBACK, free_port, port_is_open
from tests.support.processes import ManagedProcess, http_ready, hub_command
from tests.support.topology import write_apps_file

TOKEN = "integration-admin-token"


def _serve(tmp_path: Path, admin_port: int, env: dict[str, str]) -> ManagedProcess:
    port = free_port()
    argv = hub_command(
        "serve",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--metrics-port",
        "0",
        "--admin-port",
        str(admin_port),
        "--apps-file",
        str(write_apps_file(tmp_path)),
    )
    process = ManagedProcess(argv, env=env, name="hub-admin").start()
    return process.wait_ready(http_ready(f"http://{LOOPBACK}:{port}/ready"))


def _get(url: str, token: str | None) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_admin_port_serves_the_apps_to_the_token_holder_only(tmp_path: Path) -> None:
    admin_port = free_port()
    with _serve(tmp_path, admin_port, {"HUB_ADMIN_TOKEN": TOKEN}):
        url = f"http://{LOOPBACK}:{admin_port}/api/apps"
        status, body = _get(url, TOKEN)
        assert status == 200
        assert "1" in [app["id"] for app in body["apps"]]  # type: ignore[attr-defined]
        assert _get(url, None)[0] == 401
        assert _get(url, TOKEN + "x")[0] == 401


def test_admin_port_stays_closed_without_a_token(tmp_path: Path) -> None:
    admin_port = free_port()
    with _serve(tmp_path, admin_port, {"HUB_ADMIN_TOKEN": ""}):
        assert not port_is_open(admin_port)
