"""The `hub` command as an operator meets it: bad configuration stops start-up with one clear line,
HUB_* variables set flags, and PUSHER_APP_* variables define the default app (a Laravel `.env`).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pusher
import pytest

from tests.support.js_clients import JsClientError, JsClients
from tests.support.ports import LOOPBACK, free_port
from tests.support.processes import ManagedProcess, http_ready, hub_command
from tests.support.topology import APPS

# A config error must be reported well before this; a hub that starts serving would hit it instead.
EXIT_TIMEOUT = 15.0


def run_hub(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `hub ...` expecting it to exit on its own (a config error); fail if it keeps running."""
    return subprocess.run(
        hub_command(*args),
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def assert_one_line_config_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """Non-zero exit, nothing on stdout, exactly one line on stderr containing every word."""
    assert result.returncode != 0, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


def serve_args(apps_file: Path | str) -> list[str]:
    return [
        "serve",
        "--host",
        LOOPBACK,
        "--port",
        str(free_port()),
        "--metrics-port",
        "0",
        "--apps-file",
        str(apps_file),
    ]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "apps.json"
    path.write_text(text)
    return path


# --- configuration errors --------------------------------------------------------------------------


def test_serve_with_a_missing_apps_file_exits_with_one_line_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "apps.json"

    result = run_hub(*serve_args(missing))

    assert_one_line_config_error(result, str(missing), "cannot read")


def test_serve_with_an_apps_file_that_is_not_json_exits_with_one_line_saying_so(tmp_path: Path) -> None:
    path = write(tmp_path, '{"apps": [{"id": "1", "key": "k", "secret": "s",]}')

    result = run_hub(*serve_args(path))

    assert_one_line_config_error(result, str(path), "not valid JSON")


def test_serve_with_a_duplicate_app_key_exits_with_one_line_naming_the_key(tmp_path: Path) -> None:
    apps = [{"id": "1", "key": "same-key", "secret": "a"}, {"id": "2", "key": "same-key", "secret": "b"}]
    path = write(tmp_path, json.dumps({"apps": apps}))

    result = run_hub(*serve_args(path))

    assert_one_line_config_error(result, "duplicate", "same-key")


def test_serve_with_a_duplicate_app_id_exits_with_one_line_naming_the_id(tmp_path: Path) -> None:
    apps = [{"id": "7", "key": "k1", "secret": "a"}, {"id": "7", "key": "k2", "secret": "b"}]
    path = write(tmp_path, json.dumps({"apps": apps}))

    result = run_hub(*serve_args(path))

    assert_one_line_config_error(result, "duplicate", "'7'")


def test_serve_with_an_unknown_app_key_exits_with_one_line_naming_app_and_key(tmp_path: Path) -> None:
    apps = [{"id": "9", "key": "k", "secret": "s", "max_conections": 10}]
    path = write(tmp_path, json.dumps({"apps": apps}))

    result = run_hub(*serve_args(path))

    assert_one_line_config_error(result, "app 9", "max_conections")


def test_serve_with_a_wrongly_typed_app_field_exits_with_one_line_naming_it(tmp_path: Path) -> None:
    apps = [{"id": "9", "key": "k", "secret": "s", "enable_client_messages": "yes"}]
    path = write(tmp_path, json.dumps({"apps": apps}))

    result = run_hub(*serve_args(path))

    assert_one_line_config_error(result, "app 9", "enable_client_messages")


@pytest.mark.parametrize("role", ["ws", "ingest"])
def test_cluster_role_without_redis_url_exits_with_one_line_asking_for_it(role: str) -> None:
    result = run_hub(role, "--port", str(free_port()), "--metrics-port", "0", env={"HUB_REDIS_URL": ""})

    assert_one_line_config_error(result, f"hub {role}", "--redis-url")


def test_non_numeric_hub_port_exits_with_one_line_naming_the_variable() -> None:
    result = run_hub("serve", "--metrics-port", "0", env={"HUB_PORT": "sixty"})

    assert_one_line_config_error(result, "HUB_PORT", "sixty")


def test_port_already_in_use_exits_non_zero_with_one_line() -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_hub("serve", "--host", LOOPBACK, "--port", str(port), "--metrics-port", "0")

    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if "cannot start" in line]
    assert len(lines) == 1, result.stderr
    assert str(port) in lines[0] or "in use" in lines[0], lines[0]


# --- environment -----------------------------------------------------------------------------------


async def test_hub_port_environment_variable_sets_the_listening_port(tmp_path: Path) -> None:
    port = free_port()
    apps_file = write(tmp_path, json.dumps({"apps": APPS}))
    env = {"HUB_PORT": str(port), "HUB_HOST": LOOPBACK, "HUB_METRICS_PORT": "0", "HUB_APPS_FILE": str(apps_file)}

    async with ManagedProcess(hub_command("serve"), env=env, name="hub-env-port") as process:
        await process.wait_ready_async(http_ready(f"http://{LOOPBACK}:{port}/ready"))
        sdk = pusher.Pusher(app_id="1", key="app-key", secret="app-secret", host=LOOPBACK, port=port, ssl=False)
        assert await asyncio.to_thread(sdk.channels_info) == {"channels": {}}


async def test_flag_overrides_the_hub_port_environment_variable() -> None:
    port, ignored = free_port(), free_port()
    argv = hub_command("serve", "--port", str(port), "--host", LOOPBACK, "--metrics-port", "0")

    async with ManagedProcess(argv, env={"HUB_PORT": str(ignored)}, name="hub-flag-port") as process:
        await process.wait_ready_async(http_ready(f"http://{LOOPBACK}:{port}/"))
        assert not await asyncio.to_thread(http_ready(f"http://{LOOPBACK}:{ignored}/"))


async def test_a_misspelt_hub_variable_is_named_in_a_warning_at_start() -> None:
    port = free_port()
    argv = hub_command("serve", "--port", str(port), "--host", LOOPBACK, "--metrics-port", "0", "--log-format", "json")

    async with ManagedProcess(argv, env={"HUB_DRAIN_SECOND": "1"}, name="hub-typo") as process:
        await process.wait_ready_async(http_ready(f"http://{LOOPBACK}:{port}/ready"))
        warnings = [json.loads(line) for line in process.output().splitlines() if "unknown_variables" in line]
    [warning] = warnings
    assert "HUB_DRAIN_SECOND" in warning["variables"] and "HUB_PORT" not in warning["variables"]


async def test_pusher_app_variables_define_the_default_app(js: JsClients) -> None:
    port = free_port()
    env = {"PUSHER_APP_ID": "4242", "PUSHER_APP_KEY": "laravel-key", "PUSHER_APP_SECRET": "laravel-secret"}
    argv = hub_command("serve", "--host", LOOPBACK, "--port", str(port), "--metrics-port", "0")

    async with ManagedProcess(argv, env=env, name="hub-pusher-env") as process:
        await process.wait_ready_async(http_ready(f"http://{LOOPBACK}:{port}/ready"))
        await js.connect("laravel", port=port, key="laravel-key")
        await js.subscribe("laravel", "orders")
        sdk = pusher.Pusher(
            app_id="4242", key="laravel-key", secret="laravel-secret", host=LOOPBACK, port=port, ssl=False
        )

        assert await asyncio.to_thread(sdk.trigger, "orders", "shipped", {"id": 1}) == {}
        record = await js.wait_for("laravel", source="channel", channel="orders", event="shipped")
        assert record.data == {"id": 1}

        # The built-in defaults (app-id / app-key) are not served when the variables are set.
        with pytest.raises(JsClientError) as refused:
            await js.connect("default-key", port=port, key="app-key")
        assert refused.value.code == 4001
        wrong = pusher.Pusher(
            app_id="4242", key="laravel-key", secret="app-secret", host=LOOPBACK, port=port, ssl=False
        )
        with pytest.raises(pusher.errors.PusherBadAuth):
            await asyncio.to_thread(wrong.trigger, "orders", "shipped", {})
        await js.disconnect("laravel")  # so the SIGTERM on leaving has no sockets to drain
