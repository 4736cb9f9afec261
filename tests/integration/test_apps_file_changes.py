"""A watched apps file on a running deployment: changes apply without a restart, a broken file changes nothing.

Each test starts its own deployment (its apps change), once embedded and once as a 2-node cluster.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.raw_ws import RawClient, open_established, refusal
from tests.support.request_signing import signed_params
from tests.support.topology import TOPOLOGIES, Topology, running_topology

APPS: list[dict[str, Any]] = [
    {"id": "1", "key": "app-key", "secret": "app-secret"},
    {"id": "2", "key": "other-key", "secret": "other-secret"},
]


@pytest.fixture(params=TOPOLOGIES)
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Topology]:
    """A deployment of its own, serving APPS from a file in ``tmp_path``."""
    with running_topology(request.param, APPS, tmp_path) as running:
        yield running


def _rewrite(topology: Topology, apps: list[dict[str, Any]]) -> None:
    assert topology.apps_file is not None
    staged = topology.apps_file.with_suffix(".new")
    staged.write_text(json.dumps({"apps": apps}))
    staged.rename(topology.apps_file)


def _api_status(topology: Topology, app_id: str, key: str, secret: str) -> int:
    """The HTTP status of a signed publish to app ``app_id``."""
    path = f"/apps/{app_id}/events"
    body = json.dumps({"name": "ev", "channels": ["ch"], "data": "{}"}).encode()
    query = urllib.parse.urlencode(signed_params("POST", path, body, key=key, secret=secret))
    request = urllib.request.Request(
        topology.api_url(f"{path}?{query}"), data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code


def _connects(port: int, key: str) -> bool:
    """Whether a socket to ``key`` gets connection_established (run in a thread: its own loop)."""

    async def attempt() -> bool:
        async with RawClient(port, key) as client:
            first = await client.wait_for(lambda f: True, what="a first frame")
            return first.event == "pusher:connection_established"

    return asyncio.run(attempt())


async def _wait_until(check: Any, what: str, within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await asyncio.to_thread(check):
        if loop.time() > deadline:
            pytest.fail(f"{what} not within {within} s")
        await asyncio.sleep(0.05)


async def test_disabling_an_app_in_the_file_closes_its_sockets_on_every_node(deployment: Topology) -> None:
    sockets = [await open_established(deployment.ws_port(node), "other-key") for node in range(2)]
    bystander = await open_established(deployment.ws_port(0), "app-key")
    try:
        _rewrite(deployment, [APPS[0], {**APPS[1], "enabled": False}])
        for client in sockets:
            assert await client.wait_closed(timeout=5) == 4003
            assert client.frames[-1].event == "pusher:error"
            assert client.frames[-1].decoded_data()["code"] == 4003
        assert (await refusal(deployment.ws_port(1), "other-key"))[1] == 4003
        # Each node watches its own copy of the file: the API node may see it up to one poll later.
        await _wait_until(lambda: _api_status(deployment, "2", "other-key", "other-secret") == 403, "API 403")
        assert not bystander.closed
    finally:
        for client in [*sockets, bystander]:
            await client.close()


async def test_deleting_an_app_from_the_file_closes_its_sockets_with_4001(deployment: Topology) -> None:
    client = await open_established(deployment.ws_port(1), "other-key")
    try:
        _rewrite(deployment, [APPS[0]])
        assert await client.wait_closed(timeout=5) == 4001
        assert (await refusal(deployment.ws_port(0), "other-key"))[1] == 4001
        await _wait_until(lambda: _api_status(deployment, "2", "other-key", "other-secret") == 404, "API 404")
    finally:
        await client.close()


async def test_new_app_in_the_file_is_served_without_a_restart(deployment: Topology) -> None:
    _rewrite(deployment, [*APPS, {"id": "3", "key": "new-key", "secret": "new-secret"}])
    await _wait_until(lambda: _api_status(deployment, "3", "new-key", "new-secret") == 200, "API accepts app 3")
    for node in range(2):
        await _wait_until(lambda n=node: _connects(deployment.ws_port(n), "new-key"), f"node {node} accepts app 3")


async def test_broken_apps_file_leaves_the_running_apps_untouched(deployment: Topology) -> None:
    client = await open_established(deployment.ws_port(0), "app-key")
    try:
        assert deployment.apps_file is not None
        staged = deployment.apps_file.with_suffix(".new")
        staged.write_text('{"apps": [{"id": "1", "key": "app-key"')
        staged.rename(deployment.apps_file)
        await asyncio.sleep(2.5)  # two polls of the file
        assert not client.closed
        again = await open_established(deployment.ws_port(1), "app-key", quota_wait=0)
        await again.close()
        assert _api_status(deployment, "1", "app-key", "app-secret") == 200
        for process in deployment.processes:
            failures = [line for line in process.output().splitlines() if "app_store_load_failed" in line]
            assert len(failures) == 1, process.output()
            assert "is not valid JSON" in failures[0]
    finally:
        await client.close()


async def test_sighup_rereads_the_file_even_when_it_looks_unchanged(tmp_path: Path) -> None:
    with running_topology("embedded", APPS, tmp_path) as deployment:
        assert deployment.apps_file is not None
        path = deployment.apps_file
        before = os.stat(path)
        rotated = json.dumps({"apps": [APPS[0], {**APPS[1], "secret": "rotated-secr"}]})
        assert len(rotated) == before.st_size  # same size and mtime: only SIGHUP can tell
        with path.open("r+") as f:
            f.write(rotated)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        await asyncio.sleep(1.5)
        assert _api_status(deployment, "2", "other-key", "rotated-secr") == 401
        deployment.processes[0].send_signal(signal.SIGHUP)
        await _wait_until(lambda: _api_status(deployment, "2", "other-key", "rotated-secr") == 200, "new secret")
        assert _api_status(deployment, "2", "other-key", "other-secret") == 401
