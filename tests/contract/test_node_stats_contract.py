"""The NodeStatsBoard contract (the console's view of every node), run against memory and every Redis topology."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from hub.state.node_stats import FORGET_AFTER_SECONDS, MemoryNodeStatsBoard, NodeStatsBoard
from hub.state.redis_node_stats import RedisNodeStatsBoard
from tests.contract.conftest import Implementation

NOW = 1_700_000_000.0


@pytest.fixture
async def board(store: Implementation) -> AsyncIterator[NodeStatsBoard]:
    """An empty board of each implementation."""
    if store.kind == "memory":
        yield MemoryNodeStatsBoard()
        return
    client = store.command_client()
    try:
        yield RedisNodeStatsBoard(client, store.prefix)
    finally:
        await client.aclose()


async def test_every_nodes_latest_post_is_read_in_node_order(board: NodeStatsBoard) -> None:
    await board.post("ws-b", {"connections": 1}, NOW)
    await board.post("ws-a", {"connections": 2}, NOW)
    await board.post("ws-b", {"connections": 3}, NOW + 1)

    posts = await board.read(NOW + 2, 10)

    assert [(p["node_id"], p["connections"], p["posted_at"]) for p in posts] == [
        ("ws-a", 2, NOW),
        ("ws-b", 3, NOW + 1),
    ]


async def test_a_node_silent_for_longer_than_max_age_is_not_read(board: NodeStatsBoard) -> None:
    await board.post("old", {}, NOW)
    await board.post("new", {}, NOW + 9)

    assert [p["node_id"] for p in await board.read(NOW + 12, 5)] == ["new"]


async def test_a_long_silent_node_is_forgotten_and_a_withdrawn_one_is_gone(board: NodeStatsBoard) -> None:
    await board.post("crashed", {}, NOW)
    await board.post("leaving", {}, NOW)
    await board.withdraw("leaving")
    later = NOW + FORGET_AFTER_SECONDS + 20

    await board.read(later, 5)
    await board.post("fresh", {}, later)

    assert [p["node_id"] for p in await board.read(later, FORGET_AFTER_SECONDS + 30)] == ["fresh"]
