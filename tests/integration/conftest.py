"""Fixtures of the integration suite: each test runs against every topology (embedded and cluster)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.auth_server import AuthServer
from tests.support.js_clients import JsClients, require_js_harness
from tests.support.topology import APP_ID, APP_KEY, APP_SECRET, TOPOLOGIES, Topology, running_topology


@pytest.fixture(scope="session", params=TOPOLOGIES)
def topology(request: pytest.FixtureRequest) -> Iterator[Topology]:
    """A running deployment, shared by the tests of a session; tests use their own channel names."""
    with running_topology(request.param) as running:
        yield running


@pytest.fixture
async def auth() -> AsyncIterator[AuthServer]:
    """The app's auth endpoint, signing with the real `pusher` SDK."""
    async with AuthServer(app_id=APP_ID, key=APP_KEY, secret=APP_SECRET) as server:
        yield server


@pytest.fixture
async def js() -> AsyncIterator[JsClients]:
    """Real pusher-js / Laravel Echo clients in one Node process (a failure in CI when Node is missing)."""
    require_js_harness()
    async with JsClients() as clients:
        yield clients
