"""Lua scripts that Redis itself checks for cluster safety, on every topology.

Each script is sent with the ``#!lua`` shebang: on Redis 7 and newer that makes a cluster node refuse a
script that touches keys of two slots ("Script attempted to access keys that do not hash to the same
slot") even when it owns both, where a script without it may reach any key the node holds. So a key built
inside a script, or a call whose keys are not all in one slot, fails on a one-node test cluster instead of
only, now and then, on a real multi-shard one. (A single Redis has no slots and checks nothing.) Redis 6 does not know the shebang: the first load that fails to compile
switches the runner to the plain script text for good.

Scripts run with EVALSHA and are loaded on NOSCRIPT (a restarted or newly promoted primary has none);
on Redis Cluster both are routed by the first key, which is why every call passes its keys in KEYS.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

RedisClient = aioredis.Redis | aioredis.RedisCluster

SHEBANG = "#!lua\n"

Arg = str | int | float | bytes


class ScriptRunner:
    """Loads and runs the scripts of one client; remembers whether the server understands the shebang.

    Callers also ``await ready()`` before their first plain command (``initialized`` says when they need not).
    """

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self.legacy = False
        self.initialized = not isinstance(client, aioredis.RedisCluster)
        self._initializing = asyncio.Lock()

    async def ready(self) -> None:
        """Discover a cluster's nodes once, before any command is sent.

        redis-py's RedisCluster initializes itself on its first command, and commands that arrive
        concurrently meanwhile can fail on connections it replaces (measured with redis-py 8.1: 252 of 600
        concurrent first commands failed, some with AttributeError). One initialization under a lock, then
        the commands, avoids that.
        """
        if self.initialized:
            return
        async with self._initializing:
            if not self.initialized:
                await self.client.initialize()
                self.initialized = True

    def script(self, body: str) -> LuaScript:
        """A script of this runner; ``body`` is plain Lua without a shebang."""
        return LuaScript(self, body)


class LuaScript:
    """One script: ``await script(keys, args)`` runs it atomically on the keys' slot."""

    def __init__(self, runner: ScriptRunner, body: str) -> None:
        self._runner = runner
        self.body = body
        self.flagged = SHEBANG + body
        self._sha = {text: hashlib.sha1(text.encode()).hexdigest() for text in (self.body, self.flagged)}

    @property
    def text(self) -> str:
        """The text the server runs: with the shebang unless the server is older than Redis 7."""
        return self.body if self._runner.legacy else self.flagged

    @property
    def sha(self) -> str:
        """SHA1 of ``text``, as EVALSHA wants it."""
        return self._sha[self.text]

    async def load(self) -> None:
        """SCRIPT LOAD (on every primary of a cluster); falls back to the plain text on a pre-7 server."""
        client = self._runner.client
        try:
            await client.script_load(self.text)
        except ResponseError as exc:
            if self._runner.legacy or "compil" not in str(exc).lower():
                raise
            self._runner.legacy = True
            await client.script_load(self.text)

    async def __call__(self, keys: Sequence[str], args: Sequence[Arg] = ()) -> Any:
        """Run the script on ``keys`` (all in one slot) with ``args``; load it first if the server lacks it."""
        client = self._runner.client
        if not self._runner.initialized:
            await self._runner.ready()
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.load()
            return await client.evalsha(self.sha, len(keys), *keys, *args)
