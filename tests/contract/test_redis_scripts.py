"""The safety net under every Lua script: a Redis Cluster refuses a script that reaches a key of another slot."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ResponseError

from hub.state.redis_scripts import ScriptRunner
from tests.contract.conftest import Implementation
from tests.support.redis_cluster import RedisCluster, slot_of


@pytest.mark.parametrize("store", ["cluster"], indirect=True)
async def test_a_script_reaching_a_key_of_another_slot_is_refused_even_on_the_same_node(
    store: Implementation, redis_cluster: RedisCluster
) -> None:
    mine = f"{{{store.prefix}}}:key"
    owner = redis_cluster.primary_for_slot(slot_of(mine))
    other = next(
        key
        for key in (f"{{other-{i}}}:key" for i in range(10_000))
        if slot_of(key) != slot_of(mine) and redis_cluster.primary_for_slot(slot_of(key)).port == owner.port
    )
    client = store.command_client()
    try:
        script = ScriptRunner(client).script(f"return redis.call('GET', '{other}')")
        with pytest.raises(ResponseError, match="same slot"):
            await script([mine])
    finally:
        await client.aclose()


@pytest.mark.parametrize("store", ["redis", "cluster"], indirect=True)
async def test_a_script_on_keys_of_its_slot_runs(store: Implementation) -> None:
    client = store.command_client()
    try:
        script = ScriptRunner(client).script("redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])")
        assert await script([f"{{{store.prefix}}}:key"], ["v"]) == b"v"
        assert await script([f"{{{store.prefix}}}:key"], ["w"]) == b"w"  # loaded once, then EVALSHA
    finally:
        await client.aclose()


@pytest.mark.parametrize("store", ["redis", "cluster"], indirect=True)
async def test_batched_calls_of_one_turn_each_get_their_own_result_or_error(store: Implementation) -> None:
    client = store.command_client()
    try:
        runner = ScriptRunner(client, batch=True)
        incr = runner.script("return redis.call('INCR', KEYS[1])")
        fail = runner.script("return redis.error_reply('refused ' .. ARGV[1])")
        keys = [f"{{{store.prefix}-{i % 7}}}:n" for i in range(40)]  # spread over slots (and nodes)
        results = await asyncio.gather(*(incr([key]) for key in keys), fail([keys[0]], ["x"]), return_exceptions=True)
        *counts, error = results
        assert sorted(count for count in counts if isinstance(count, int)) == sorted(
            n for key in set(keys) for n in range(1, keys.count(key) + 1)
        )
        assert isinstance(error, ResponseError) and "refused x" in str(error)
    finally:
        await client.aclose()


@pytest.mark.parametrize("store", ["redis", "cluster"], indirect=True)
async def test_a_batch_sent_to_a_server_that_lost_its_scripts_loads_them_and_runs_every_call(
    store: Implementation,
) -> None:
    client = store.command_client()
    try:
        runner = ScriptRunner(client, batch=True)
        incr = runner.script("return redis.call('INCR', KEYS[1])")
        key = f"{{{store.prefix}}}:n"
        assert await incr([key]) == 1
        await client.script_flush()  # what a restarted or newly promoted primary looks like
        assert sorted(await asyncio.gather(*(incr([key]) for _ in range(5)))) == [2, 3, 4, 5, 6]
    finally:
        await client.aclose()
