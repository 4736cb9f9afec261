"""Headless Chromium from Debian (``chromium`` + ``chromium-driver``), driven by Selenium, for the console tests.

Nothing is downloaded: the driver is /usr/bin/chromedriver given by path (so Selenium Manager never
runs), and the browser is /usr/bin/chromium. As root, on a machine without network, Chromium hangs
unless it runs without sandbox, GPU, QUIC and its background services, in a fresh profile directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.requirements import require

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
    "--window-size=1360,900",
)


def _first(paths: tuple[str, ...]) -> str | None:
    return next((p for p in paths if Path(p).exists()), None)


def browser_problem() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (make venv)"
    if _first(CHROMIUM_CANDIDATES) is None:
        return "chromium is not installed (apt-get install chromium)"
    if _first(DRIVER_CANDIDATES) is None:
        return "chromedriver is not installed (apt-get install chromium-driver)"
    return None


def require_browser() -> None:
    """Skip the test (fail it in CI) when Chromium, its driver or Selenium is missing."""
    problem = browser_problem()
    require(problem is None, f"headless Chromium unavailable: {problem}")


@contextmanager
def chromium() -> Iterator[WebDriver]:
    """A Selenium WebDriver on a fresh headless Chromium; quits the browser (by the driver) on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # The driver is given by path, so Selenium Manager has nothing to find; offline, it could not download anyway.
    os.environ.setdefault("SE_OFFLINE", "true")
    binary, driver_path = _first(CHROMIUM_CANDIDATES), _first(DRIVER_CANDIDATES)
    assert binary is not None and driver_path is not None
    profile = tempfile.mkdtemp(prefix="hub-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
