"""Editing an app from the console's Apps page, where the app store is writable (the Redis store)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from tests.support.browser import chromium, require_browser
from tests.support.console_cluster import TOKEN
from tests.support.ports import LOOPBACK, free_port
from tests.support.processes import ManagedProcess, http_ready, hub_command
from tests.support.redis_server import RedisServer
from tests.support.requirements import require_executable

pytestmark = pytest.mark.cluster
WAIT = 15.0
# The table is redrawn every poll, so the row's button is found and clicked in one script.
CLICK_EDIT = """
const row = [...document.querySelectorAll('#apps tr')].find(tr => tr.firstChild.textContent === arguments[0]);
const button = row && row.querySelector('button');
if (button) button.click();
return Boolean(button);
"""


def admin(port: int, path: str, body: dict[str, Any] | None = None, method: str = "GET") -> Any:
    request = urllib.request.Request(
        f"http://{LOOPBACK}:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read() or b"null")


@pytest.fixture(scope="module")
def nodes() -> Iterator[list[int]]:
    """Two `hub ws` nodes on the Redis app store, each with its admin port: their admin ports."""
    require_executable("redis-server")
    require_browser()
    redis = RedisServer().start()
    processes: list[ManagedProcess] = []
    admin_ports: list[int] = []
    try:
        for index in range(2):
            port, admin_port = free_port(), free_port()
            argv = hub_command(
                "ws",
                "--host",
                LOOPBACK,
                "--port",
                str(port),
                "--metrics-port",
                "0",
                "--redis-url",
                redis.url,
                "--app-store",
                "redis",
                "--node-id",
                f"ws-{index}",
                "--admin-port",
                str(admin_port),
                "--admin-token",
                TOKEN,
            )
            process = ManagedProcess(argv, name=f"hub-ws-apps-{index}").start()
            processes.append(process)
            process.wait_ready(http_ready(f"http://{LOOPBACK}:{port}/ready"))
            admin_ports.append(admin_port)
        yield admin_ports
    finally:
        for process in processes:
            process.close()
        redis.close()


async def test_an_app_edited_on_the_apps_page_changes_on_every_node(nodes: list[int]) -> None:
    await asyncio.to_thread(
        admin,
        nodes[0],
        "/api/apps",
        {"id": "7", "key": "edit-key", "secret": "edit-secret", "enable_client_messages": True},
        "POST",
    )

    def edit_in_browser() -> str:
        with chromium() as driver:
            driver.get(f"http://{LOOPBACK}:{nodes[0]}/console/#token={TOKEN}")
            driver.get("about:blank")
            driver.get(f"http://{LOOPBACK}:{nodes[0]}/console/#/apps")
            wait = WebDriverWait(driver, WAIT)
            wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "apps-store"), "redis"))
            wait.until(lambda d: d.execute_script(CLICK_EDIT, "7"))
            box = driver.find_element(By.ID, "edit-client-messages")
            assert box.is_selected()
            box.click()
            driver.find_element(By.CSS_SELECTOR, "#app-edit button[type=submit]").click()
            wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "edit-result"), "Saved"))
            return str(driver.find_element(By.ID, "edit-result").text)

    assert await asyncio.to_thread(edit_in_browser) == "Saved."
    deadline = time.monotonic() + 5
    while (await asyncio.to_thread(admin, nodes[1], "/api/apps/7"))["enable_client_messages"]:
        assert time.monotonic() < deadline, "the other node still serves the old app"
        await asyncio.sleep(0.1)
