"""Lua scripts that Redis itself checks for cluster safety, on every topology.

Each script is sent with the ``#!lua`` shebang: on Redis 7 and newer that makes a cluster node refuse a
script that touches keys of two slots ("Script attempted to access keys that do not hash to the same
slot") even when it owns both, where a script without it may reach any key the node holds. So a key built
inside a script, or a call whose keys are not all in one slot, fails on a one-node test cluster instead of
only, now and then, on a real multi-shard one. (A single Redis has no slots and checks nothing.) Redis 6 does not know the shebang: the first load that fails to compile
switches the runner to the plain script text for good.

Scripts run with EVALSHA and are loaded on NOSCRIPT (a restarted or newly promoted primary has none);
on Redis Cluster both are routed by the first key, which is why every call passes its keys in KEYS.

A runner made with ``batch=True`` sends the script calls made during one event-loop turn together, as one
non-transactional pipeline (on a cluster redis-py splits it per node and sends those in parallel). Each
script stays atomic on its own; what the batch saves is a round trip and redis-py's per-command connection
handling for each call, which a reconnect storm (thousands of connects and subscribes at once) pays per
socket and per channel.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
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

    def __init__(self, client: RedisClient, *, batch: bool = False) -> None:
        self.client = client
        self.legacy = False
        self.initialized = not isinstance(client, aioredis.RedisCluster)
        self._initializing = asyncio.Lock()
        self.batch = batch
        self._queued: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()

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

    def enqueue(self, script: LuaScript, keys: Sequence[str], args: Sequence[Arg]) -> asyncio.Future[Any]:
        """Queue a call for the pipeline sent at the end of this event-loop turn; its future gets the result."""
        loop = asyncio.get_running_loop()
        call = _Call(script, keys, args, loop.create_future())
        if not self._queued:
            loop.call_soon(self._flush)
        self._queued.append(call)
        return call.future

    def _flush(self) -> None:
        calls, self._queued = self._queued, []
        task = asyncio.get_running_loop().create_task(self._send(calls))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, calls: list[_Call]) -> None:
        try:
            if not self.initialized:
                await self.ready()
            if len(calls) == 1:
                results: list[Any] = [await calls[0].run()]
            else:
                pipe = self.client.pipeline(transaction=False)
                for call in calls:
                    # Not pipe.evalsha(): redis-py blocks that name in cluster pipelines, but routes the command
                    # by its keys like any other.
                    pipe.execute_command("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args)
                results = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # every caller learns what happened to its call, then it goes on
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for call, result in zip(calls, results, strict=True):
            if isinstance(result, NoScriptError):
                # The script did not run (a restarted or promoted primary): load it and run it alone.
                try:
                    result = await call.run()
                except Exception as exc:
                    result = exc
            if call.future.done():
                continue  # the caller gave up (timeout); the script ran or not, as for any timed-out call
            if isinstance(result, BaseException):
                call.future.set_exception(result)
            else:
                call.future.set_result(result)


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
        if self._runner.batch:
            return await self._runner.enqueue(self, keys, args)
        return await self.run_now(keys, args)

    async def run_now(self, keys: Sequence[str], args: Sequence[Arg] = ()) -> Any:
        """Run the script at once, alone (``__call__`` without batching)."""
        client = self._runner.client
        if not self._runner.initialized:
            await self._runner.ready()
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.load()
            return await client.evalsha(self.sha, len(keys), *keys, *args)


@dataclass(slots=True)
class _Call:
    """One queued script call of a batch."""

    script: LuaScript
    keys: Sequence[str]
    args: Sequence[Arg]
    future: asyncio.Future[Any]

    async def run(self) -> Any:
        return await self.script.run_now(self.keys, self.args)
