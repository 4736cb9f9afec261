"""The Coordination contract (hub/state/coordination.py), run against memory and every Redis topology."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from hub.state.coordination import Coordination, MemoryCoordination
from hub.state.redis_coordination import RedisCoordination
from tests.contract.conftest import Implementation


@pytest.fixture
async def coordination(store: Implementation) -> AsyncIterator[list[Coordination]]:
    """Two nodes' views of one coordination store."""
    if store.kind == "memory":
        shared = MemoryCoordination()
        yield [shared, shared]
        return
    clients = [store.command_client(), store.command_client()]
    try:
        yield [RedisCoordination(client, store.prefix) for client in clients]
    finally:
        for client in clients:
            await client.aclose()


async def test_take_deletes_a_put_token_once(coordination: list[Coordination]) -> None:
    a, b = coordination
    await a.put("hold:room", "t1", 30)
    assert await b.take("hold:room", "other") is False
    taken = await asyncio.gather(*(node.take("hold:room", "t1") for node in [a, b] * 5))
    assert taken.count(True) == 1
    assert await a.take("hold:room") is False


async def test_put_replaces_the_token_and_take_without_token_deletes_any(coordination: list[Coordination]) -> None:
    a, b = coordination
    await a.put("hold:x", "old", 30)
    await b.put("hold:x", "new", 30)
    assert await a.take("hold:x", "old") is False
    assert await a.take("hold:x") is True
    assert await b.take("hold:x", "new") is False


async def test_a_put_token_expires_after_its_ttl(coordination: list[Coordination]) -> None:
    a, b = coordination
    await a.put("hold:short", "t", 0.2)
    await asyncio.sleep(0.35)
    assert await b.take("hold:short", "t") is False


async def test_claim_is_won_by_exactly_one_caller_until_it_expires(coordination: list[Coordination]) -> None:
    a, b = coordination
    claims = await asyncio.gather(*(node.claim("count:room", 0.3) for node in [a, b] * 10))
    assert claims.count(True) == 1
    assert await b.claim("count:room", 0.3) is False
    await asyncio.sleep(0.45)
    assert await a.claim("count:room", 0.3) is True


async def test_count_sums_every_nodes_amounts_within_the_window_then_resets(
    coordination: list[Coordination],
) -> None:
    a, b = coordination
    totals = await asyncio.gather(*(node.count("rate:1", 2, 0.4) for node in [a, b] * 5))
    assert sorted(totals) == list(range(2, 21, 2))  # each call saw a different total: no lost update
    await asyncio.sleep(0.55)
    assert await b.count("rate:1", 1, 0.4) == 1


async def test_keys_are_independent(coordination: list[Coordination]) -> None:
    a, b = coordination
    assert await a.claim("k1", 30) is True
    assert await b.claim("k2", 30) is True
    assert await a.count("c1", 5, 30) == 5
    assert await b.count("c2", 1, 30) == 1
