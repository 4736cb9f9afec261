"""The safety net under every Lua script: a Redis Cluster refuses a script that reaches a key of another slot."""

from __future__ import annotations

import pytest
from redis.exceptions import ResponseError

from hub.state.redis_scripts import ScriptRunner
from tests.contract.conftest import Implementation


@pytest.mark.parametrize("store", ["cluster"], indirect=True)
async def test_a_script_reaching_a_key_outside_its_callers_slot_is_refused(store: Implementation) -> None:
    client = store.command_client()
    try:
        script = ScriptRunner(client).script("return redis.call('GET', '{other}:key')")
        with pytest.raises(ResponseError, match="same slot"):
            await script([f"{{{store.prefix}}}:key"])
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
