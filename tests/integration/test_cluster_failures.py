"""A cluster survives a ws node's crash: survivors hear member_removed and occupancy heals in bounded time.

Each test starts its own cluster (two `hub ws` and one `hub ingest` over a real redis-server, then over a
Redis Cluster of 3 primaries + 3 replicas) because it kills one of its nodes with SIGKILL.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator

import pytest

from tests.support.auth_server import AuthServer
from tests.support.js_clients import JsClients
from tests.support.names import unique
from tests.support.topology import APP_KEY, NODE_TIMEOUT_SECONDS, Topology, running_topology

# Node timeout, plus one maintenance interval (a third of it) for a survivor to notice, plus slack
# for a loaded 2-core CI machine.
HEAL_BOUND_SECONDS = NODE_TIMEOUT_SECONDS * 2 + 3


@pytest.fixture(params=["cluster", "rediscluster"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Topology]:
    """A private cluster this test may break: over one redis-server, and over a 3+3 Redis Cluster."""
    with running_topology(request.param) as topology:
        yield topology


async def connect_as(js: JsClients, cluster: Topology, auth: AuthServer, cid: str, node: int, user_id: str) -> None:
    """Connect pusher-js client `cid` to ws node `node`; it joins presence channels as `user_id`."""
    await js.connect(
        cid, port=cluster.ws_port(node), key=APP_KEY, auth_url=auth.channel_auth_url, auth_params={"user_id": user_id}
    )


async def _occupancy(topology: Topology, channel: str) -> int:
    sdk = topology.sdk()
    info = await asyncio.to_thread(sdk.channel_info, channel, ["subscription_count"])
    return int(info.get("subscription_count", 0))


async def test_survivors_receive_member_removed_after_a_ws_node_is_killed(
    cluster: Topology, js: JsClients, auth: AuthServer
) -> None:
    channel = unique("presence-crash")
    await connect_as(js, cluster, auth, "survivor", 0, "survivor")
    await connect_as(js, cluster, auth, "victim", 1, "victim")
    await js.subscribe("survivor", channel)
    await js.subscribe("victim", channel)
    await js.wait_for("survivor", source="channel", channel=channel, event="pusher:member_added")
    assert await _occupancy(cluster, channel) == 2

    cluster.ws_processes[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()

    record = await js.wait_for(
        "survivor", source="channel", channel=channel, event="pusher:member_removed", timeout=HEAL_BOUND_SECONDS
    )
    healed_after = time.monotonic() - killed_at
    assert record.data["id"] == "victim"
    assert healed_after < HEAL_BOUND_SECONDS
    members = await js.members("survivor", channel)
    assert [m["id"] for m in members["members"]] == ["survivor"]
    assert await _occupancy(cluster, channel) == 1
    users = await asyncio.to_thread(cluster.sdk().users_info, channel)
    assert [u["id"] for u in users["users"]] == ["survivor"]
    print(f"member_removed reached the survivor {healed_after:.2f} s after kill -9")


async def test_a_user_still_connected_elsewhere_is_not_removed_when_one_of_its_nodes_dies(
    cluster: Topology, js: JsClients, auth: AuthServer
) -> None:
    channel = unique("presence-crash")
    await connect_as(js, cluster, auth, "watcher", 0, "watcher")
    await connect_as(js, cluster, auth, "tab0", 0, "multi")
    await connect_as(js, cluster, auth, "tab1", 1, "multi")
    for cid in ("watcher", "tab0", "tab1"):
        await js.subscribe(cid, channel)
    assert await _occupancy(cluster, channel) == 3

    cluster.ws_processes[1].send_signal(signal.SIGKILL)

    deadline = time.monotonic() + HEAL_BOUND_SECONDS
    while await _occupancy(cluster, channel) != 2:
        assert time.monotonic() < deadline, "the dead node's socket was never removed from occupancy"
        await asyncio.sleep(0.2)
    await js.expect_none("watcher", source="channel", channel=channel, event="pusher:member_removed", within=1.0)
    users = await asyncio.to_thread(cluster.sdk().users_info, channel)
    assert sorted(u["id"] for u in users["users"]) == ["multi", "watcher"]
