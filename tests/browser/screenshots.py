"""Take the README's console screenshots from a live 2-node cluster: ``python -m tests.browser.screenshots DIR``.

Starts the console cluster, puts real traffic on it (pusher-js clients on both nodes, presence members,
a cache channel, API publishes, client events, a webhook receiver that is down so dead letters pile
up) and saves one PNG per page into DIR. Run by ``make screenshots``; everything it starts is stopped.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pusher
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from tests.support.auth_server import AuthServer
from tests.support.browser import browser_problem, chromium
from tests.support.console_cluster import TOKEN, ConsoleCluster, running_console_cluster
from tests.support.js_clients import JsClients
from tests.support.ports import LOOPBACK
from tests.support.webhook_receiver import WebhookReceiver

CLICK_CHANNEL = """
const row = [...document.querySelectorAll('#channel-list tr')].find(tr => tr.dataset.channel === arguments[0]);
if (row) row.click();
return Boolean(row);
"""
PEOPLE = [("ann", "Ann"), ("bob", "Bob"), ("cy", "Cyrus")]


def _wait_for(driver: WebDriver, element_id: str) -> None:
    WebDriverWait(driver, 20).until(expected_conditions.visibility_of_element_located((By.ID, element_id)))


async def _traffic(cluster: ConsoleCluster, js: JsClients, auth: AuthServer) -> pusher.Pusher:
    for index, (user_id, name) in enumerate(PEOPLE):
        await js.connect(
            user_id,
            port=cluster.ws_port(index % 2),
            key="app-key",
            auth_url=auth.channel_auth_url,
            auth_params={"user_id": user_id, "user_info": {"name": name}},
        )
        await js.subscribe(user_id, "presence-team")
        await js.subscribe(user_id, "private-chat.1")
        await js.subscribe(user_id, "orders")
    await js.subscribe("ann", "cache-prices")
    sdk = pusher.Pusher(app_id="1", key="app-key", secret="app-secret", host=LOOPBACK, port=cluster.api_port, ssl=False)
    await asyncio.to_thread(sdk.trigger, "cache-prices", "price.updated", {"symbol": "HUB", "price": 42.5})
    return sdk


async def _publish_for(sdk: pusher.Pusher, js: JsClients, seconds: float) -> None:
    for n in range(int(seconds * 4)):
        await asyncio.to_thread(sdk.trigger, "orders", "order.created", {"id": 1000 + n, "total": 9.99 + n})
        if n % 3 == 0:
            await js.trigger("bob", "private-chat.1", "client-typing", {"user": "bob"})
        await asyncio.sleep(0.25)


def _show(driver: WebDriver, url: str, ready_id: str, pause: float = 1.0) -> None:
    driver.get("about:blank")
    driver.get(url)
    _wait_for(driver, ready_id)
    driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(pause)


async def take(directory: Path) -> None:
    """Run the cluster, make traffic, and save the screenshots."""
    with (
        WebhookReceiver({"app-key": ("1", "app-secret")}) as receiver,
        running_console_cluster(receiver.url("/hooks")) as cluster,
        chromium() as driver,
    ):
        async with JsClients() as js, AuthServer(app_id="1", key="app-key", secret="app-secret") as auth:
            driver.get(cluster.console_url(0))
            _wait_for(driver, "login-token")
            driver.find_element(By.ID, "login-token").send_keys("the admin token")
            driver.save_screenshot(str(directory / "login.png"))

            receiver.down()  # the occupied webhooks of the first channels become dead letters
            sdk = await _traffic(cluster, js, auth)
            await asyncio.sleep(6)
            receiver.up()

            driver.get("about:blank")
            driver.get(f"{cluster.console_url(0)}#token={TOKEN}")
            await asyncio.to_thread(_show, driver, cluster.console_url(0, "#/apps/1/debug"), "page-debug")
            publishing = asyncio.create_task(_publish_for(sdk, js, 14))
            await asyncio.sleep(1)
            await js.connect("dee", port=cluster.ws_port(1), key="app-key")
            await js.subscribe("dee", "orders")
            await js.unsubscribe("dee", "orders")
            await asyncio.sleep(3)
            driver.save_screenshot(str(directory / "debug.png"))

            await asyncio.to_thread(_show, driver, cluster.console_url(0, "#/cluster"), "page-cluster", 8.0)
            driver.save_screenshot(str(directory / "cluster.png"))
            await asyncio.to_thread(_show, driver, cluster.console_url(0, "#/apps"), "page-apps", 2.5)
            driver.save_screenshot(str(directory / "apps.png"))
            await publishing

            await asyncio.to_thread(_show, driver, cluster.console_url(0, "#/apps/1/channels"), "page-channels", 2.5)
            driver.execute_script(CLICK_CHANNEL, "presence-team")
            await asyncio.sleep(2.5)
            driver.save_screenshot(str(directory / "channels.png"))

            await asyncio.to_thread(_show, driver, cluster.console_url(0, "#/apps/1/webhooks"), "page-webhooks", 2.5)
            driver.save_screenshot(str(directory / "webhooks.png"))


def main() -> int:
    """Entry point: the target directory is the only argument."""
    problem = browser_problem()
    if problem:
        print(f"screenshots: {problem}", file=sys.stderr)
        return 1
    directory = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/console")
    directory.mkdir(parents=True, exist_ok=True)
    asyncio.run(take(directory))
    print(f"screenshots written to {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
