"""The console in a real browser (Debian's headless Chromium) against a real 2-node cluster over Redis.

The browser talks to the admin port of ws node 0; the pusher-js clients connect to ws node 1 and the
webhooks are sent by whichever node leases them, so every check also proves the console sees the
whole cluster, not just the node serving it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from tests.browser.screenshots import CLICK_CHANNEL
from tests.support.auth_server import AuthServer
from tests.support.browser import chromium, require_browser
from tests.support.console_cluster import TOKEN, ConsoleCluster, running_console_cluster
from tests.support.js_clients import JsClients, require_js_harness
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.cluster

T = TypeVar("T")
WAIT = 15.0


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    """The app backend's webhook endpoint (down and up again in the dead-letter test)."""
    with WebhookReceiver({"app-key": ("1", "app-secret")}) as running:
        yield running


@pytest.fixture(scope="module")
def cluster(receiver: WebhookReceiver) -> Iterator[ConsoleCluster]:
    """redis-server, two `hub ws` and one `hub ingest`, each with its admin port."""
    with running_console_cluster(receiver.url("/hooks")) as running:
        yield running


@pytest.fixture(scope="module")
def browser(cluster: ConsoleCluster) -> Iterator[WebDriver]:
    """One headless Chromium for the module."""
    require_browser()
    with chromium() as driver:
        yield driver


@pytest.fixture
async def js() -> AsyncIterator[JsClients]:
    """Real pusher-js clients."""
    require_js_harness()
    async with JsClients() as clients:
        yield clients


@pytest.fixture
async def auth() -> AsyncIterator[AuthServer]:
    """The app's auth endpoint, signing with the real `pusher` SDK."""
    async with AuthServer(app_id="1", key="app-key", secret="app-secret") as server:
        yield server


async def eventually(check: Callable[[], T | None], what: str, within: float = WAIT) -> T:
    """Poll ``check`` (run in a thread: Selenium blocks) until it returns something truthy."""
    deadline = time.monotonic() + within
    while True:
        found = await asyncio.to_thread(check)
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {within} s")
        await asyncio.sleep(0.2)


def log_in(driver: WebDriver, url: str, token: str) -> None:
    """Open the console at ``url`` and log in through the form."""
    driver.get("about:blank")
    driver.get(url)
    driver.execute_script("sessionStorage.clear(); location.reload()")
    field = WebDriverWait(driver, WAIT).until(expected_conditions.visibility_of_element_located((By.ID, "login-token")))
    field.clear()
    field.send_keys(token)
    driver.find_element(By.ID, "login-submit").click()


def stream_rows(driver: WebDriver) -> list[dict[str, str]]:
    """The debug console's rows, newest first."""
    rows: list[dict[str, str]] = driver.execute_script(
        """return [...document.querySelectorAll('#stream tr')].map(tr => {
             const c = tr.children;
             return {node: c[1].textContent, kind: tr.dataset.kind, channel: c[3].textContent,
                     event: c[4].textContent, socket: c[5].textContent, details: c[6].textContent};
           });"""
    )
    return rows


def row_like(driver: WebDriver, **wanted: str) -> dict[str, str] | None:
    return next((r for r in stream_rows(driver) if all(r[k] == v for k, v in wanted.items())), None)


async def test_a_wrong_token_is_refused(cluster: ConsoleCluster, browser: WebDriver) -> None:
    await asyncio.to_thread(log_in, browser, cluster.console_url(0), "not-the-admin-token-at-all")

    error = await eventually(
        lambda: browser.find_element(By.ID, "login-error").text or None, "the login error", within=WAIT
    )
    assert "wrong" in error
    assert browser.find_element(By.ID, "top").is_displayed() is False
    assert browser.execute_script("return sessionStorage.getItem('hub-admin-token')") is None


async def test_a_pusher_js_client_on_another_node_shows_in_the_debug_console(
    cluster: ConsoleCluster, browser: WebDriver, js: JsClients
) -> None:
    await asyncio.to_thread(log_in, browser, cluster.console_url(0, "#/apps/1/debug"), TOKEN)
    await eventually(lambda: "live from node" in browser.find_element("id", "stream-state").text, "the live stream")

    socket_id = await js.connect("a", port=cluster.ws_port(1), key="app-key")
    await js.subscribe("a", "browser-public")

    connected = await eventually(lambda: row_like(browser, kind="connected", socket=socket_id), "the connection")
    subscribed = await eventually(
        lambda: row_like(browser, kind="subscribed", socket=socket_id, channel="browser-public"), "the subscription"
    )
    assert connected["node"] == subscribed["node"] == cluster.node_ids[1], "tapped on the client's node"
    assert cluster.node_ids[0] != cluster.node_ids[1]


async def test_an_event_published_from_the_form_shows_in_the_stream_and_reaches_pusher_js(
    cluster: ConsoleCluster, browser: WebDriver, js: JsClients
) -> None:
    await asyncio.to_thread(log_in, browser, cluster.console_url(0, "#/apps/1/debug"), TOKEN)
    await js.connect("b", port=cluster.ws_port(1), key="app-key")
    await js.subscribe("b", "browser-form")
    await eventually(lambda: "live from node" in browser.find_element(By.ID, "stream-state").text, "the live stream")

    def fill_and_send() -> None:
        for field, value in (
            ("publish-channel", "browser-form"),
            ("publish-event", "form-test"),
            ("publish-data", '{"from":"the console"}'),
        ):
            browser.find_element(By.ID, field).clear()
            browser.find_element(By.ID, field).send_keys(value)
        browser.find_element(By.ID, "publish-submit").click()

    await asyncio.to_thread(fill_and_send)

    row = await eventually(
        lambda: row_like(browser, kind="api_event", channel="browser-form", event="form-test"), "the published event"
    )
    assert '{"from":"the console"}' in row["details"]
    received = await js.wait_for("b", source="channel", event="form-test", channel="browser-form", timeout=WAIT)
    assert received.data == {"from": "the console"}


async def test_a_presence_member_appears_in_the_channel_view_with_its_user_info(
    cluster: ConsoleCluster, browser: WebDriver, js: JsClients, auth: AuthServer
) -> None:
    await js.connect(
        "c",
        port=cluster.ws_port(1),
        key="app-key",
        auth_url=auth.channel_auth_url,
        auth_params={"user_id": "ann", "user_info": {"name": "Ann"}},
    )
    await js.subscribe("c", "presence-browser-room")
    await asyncio.to_thread(log_in, browser, cluster.console_url(0, "#/apps/1/channels"), TOKEN)

    def open_channel() -> bool:
        # The list is redrawn every poll, so the row is found and clicked in one script.
        return bool(browser.execute_script(CLICK_CHANNEL, "presence-browser-room"))

    await eventually(open_channel, "the presence channel in the list")
    members = await eventually(
        lambda: (
            [
                [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
                for tr in browser.find_elements(By.CSS_SELECTOR, "#members tr")
            ]
            or None
        ),
        "the member list",
    )
    assert members == [["ann", json.dumps({"name": "Ann"}, separators=(",", ":"))]]


async def test_a_dead_letter_is_listed_and_replayed_to_the_receiver_once_it_is_back(
    cluster: ConsoleCluster, browser: WebDriver, js: JsClients, receiver: WebhookReceiver
) -> None:
    receiver.down()
    await js.connect("d", port=cluster.ws_port(1), key="app-key")
    await js.subscribe("d", "browser-dead-letter")
    await asyncio.to_thread(log_in, browser, cluster.console_url(0, "#/apps/1/webhooks"), TOKEN)

    def dead_row() -> Any:
        for tr in browser.find_elements(By.CSS_SELECTOR, "#dead-letters tr"):
            if "channel_occupied browser-dead-letter" in tr.text and "Replay" in tr.text:
                return tr
        return None

    row = await eventually(dead_row, "the dead letter", within=WAIT + 10)
    assert "ClientConnectorError" in row.text or "Cannot connect" in row.text, row.text
    failures = browser.find_element(By.ID, "failures").text
    assert "given up" in failures

    receiver.up()
    await asyncio.to_thread(lambda: dead_row().find_element(By.CLASS_NAME, "replay").click())

    delivered = await receiver.wait_for_events(1, path="/hooks", name="channel_occupied", channel="browser-dead-letter")
    assert delivered[0].request.valid, "signed, with a time_ms the SDK accepts"
    await eventually(lambda: "1 replayed" in browser.find_element(By.ID, "replay-result").text, "the replay result")
    await eventually(lambda: dead_row() is None, "the dead letter gone from the list")
