"""Fixtures of the contract suites: every behaviour runs against the memory and the Redis implementation.

Redis runs as a real `redis-server` shared by the session; each test gets its own key prefix, so tests
never see each other's keys or channels. Outage tests start their own server (see test_redis_failures).
The state, coordination and webhook-queue contracts also run on a Redis Cluster (3 primaries + 3 replicas)
and under Sentinel (``store`` fixture), each started once per session: the prefix keeps tests apart there too.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis

from hub.broker.base import Broker, MessageHandler
from hub.broker.envelope import Envelope
from hub.broker.memory import MemoryBroker
from hub.broker.redis import RedisBroker
from hub.metrics import Metrics
from hub.redis_topology import parse_topology
from hub.state.base import ClusterState
from hub.state.memory import MemoryClusterState, MemoryStore
from hub.state.redis import RedisClusterState
from hub.state.redis_scripts import RedisClient
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_sentinel import RedisSentinel
from tests.support.redis_server import RedisServer
from tests.support.requirements import require_executable

# Short enough to keep the suite fast, long enough for a loaded CI machine.
UNSUBSCRIBE_DELAY = 0.1
TIMEOUT = 1.0


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session's contract tests."""
    require_executable("redis-server")
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """One Redis Cluster (3 primaries + 3 replicas) for the session's contract tests."""
    require_executable("redis-server")
    require_executable("redis-cli")
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinel]:
    """One Sentinel setup (primary, replica, 3 sentinels) for the session's contract tests."""
    require_executable("redis-server")
    with RedisSentinel() as setup:
        yield setup


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test alone."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A plain client of the session's server, for looking behind an implementation's back."""
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def eventually(condition: Callable[[], bool], within: float = 3.0, what: str = "condition") -> None:
    """Wait until ``condition()`` holds; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not met within {within} s")
        await asyncio.sleep(0.005)


async def command_calls(client: aioredis.Redis) -> dict[str, int]:
    """Calls per command so far (INFO commandstats), e.g. {"publish": 3}."""
    stats = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def calls_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Commands run between two ``command_calls`` readings (the reading's own INFO excluded)."""
    delta = {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}
    delta.pop("info", None)
    return delta


@dataclass(frozen=True)
class Implementation:
    """Which implementation a contract test runs against: ``memory``, or ``redis`` at a URL under a key prefix."""

    kind: str
    redis_url: str = ""
    prefix: str = ""

    def command_client(self) -> RedisClient:
        """A redis-py client of this implementation's Redis (single, Sentinel or Cluster)."""
        return parse_topology(self.redis_url).command_client(timeout=TIMEOUT)


@pytest.fixture(params=["memory", "redis", "cluster", "sentinel"])
def store(request: pytest.FixtureRequest, prefix: str) -> Implementation:
    """Where shared state lives, for the state, coordination and webhook-queue contracts: memory, a single
    Redis, a Redis Cluster or Sentinel (each test runs once per kind; each Redis starts once per session)."""
    if request.param == "memory":
        return Implementation("memory")
    if request.param == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return Implementation("cluster", cluster.url, prefix)
    if request.param == "sentinel":
        sentinel: RedisSentinel = request.getfixturevalue("redis_sentinel")
        return Implementation("sentinel", sentinel.url, prefix)
    server: RedisServer = request.getfixturevalue("redis_server")
    return Implementation("redis", server.url, prefix)


# ClusterState


@dataclass
class StateCluster:
    """Makes nodes that share one store: a MemoryStore, or one redis-server under one prefix."""

    kind: str
    redis_url: str = ""
    prefix: str = ""
    store: MemoryStore = field(default_factory=MemoryStore)
    started: list[ClusterState] = field(default_factory=list)

    async def node(self, node_id: str) -> ClusterState:
        """A started node with id ``node_id``."""
        state: ClusterState
        if self.kind == "memory":
            state = MemoryClusterState(node_id, self.store)
        else:
            state = RedisClusterState(self.redis_url, self.prefix, node_id, timeout=TIMEOUT)
        await state.start()
        self.started.append(state)
        return state

    async def nodes(self, *node_ids: str) -> list[ClusterState]:
        """Several started nodes."""
        return [await self.node(node_id) for node_id in node_ids]

    async def close(self) -> None:
        """Close every node made."""
        for state in self.started:
            await state.close()


@pytest.fixture
async def cluster(store: Implementation) -> AsyncIterator[StateCluster]:
    """Nodes over the memory store or over Redis (each test runs once per store)."""
    made = StateCluster(store.kind, store.redis_url, store.prefix)
    yield made
    await made.close()


# Broker


@dataclass
class Inbox:
    """A message handler that records what a node received."""

    received: list[Envelope] = field(default_factory=list)

    def __call__(self, envelope: Envelope) -> None:
        self.received.append(envelope)

    def events(self) -> list[str]:
        """Event names received, in order."""
        return [e.event for e in self.received]


@dataclass
class BrokerCluster:
    """Makes started brokers: memory (one process, so one node) or Redis (any number of nodes)."""

    kind: str
    redis_url: str = ""
    prefix: str = ""
    started: list[Broker] = field(default_factory=list)

    async def node(
        self, node_id: str, handler: MessageHandler, app_ids: list[str], metrics: Metrics | None = None
    ) -> Broker:
        """A started broker for node ``node_id``."""
        broker: Broker
        if self.kind == "memory":
            broker = MemoryBroker()
        else:
            broker = RedisBroker(
                self.redis_url,
                self.prefix,
                node_id,
                metrics,
                timeout=TIMEOUT,
                unsubscribe_delay=UNSUBSCRIBE_DELAY,
                probe_interval=60.0,  # keeps Redis command counts exact; probing is tested in test_redis_failures
            )
        await broker.start(handler, app_ids)
        self.started.append(broker)
        return broker

    async def close(self) -> None:
        """Close every broker made."""
        for broker in self.started:
            await broker.close()


async def settle_unsubscribes(broker: Broker) -> None:
    """Wait until unsubscribes requested so far are in effect (Redis delays them on purpose)."""
    if isinstance(broker, RedisBroker):
        await asyncio.sleep(UNSUBSCRIBE_DELAY * 2)
        await broker.sync()


@pytest.fixture
async def brokers(store: Implementation) -> AsyncIterator[BrokerCluster]:
    """Brokers over memory, a single Redis, a Redis Cluster (sharded pub/sub) and Sentinel."""
    made = BrokerCluster(store.kind, store.redis_url, store.prefix)
    yield made
    await made.close()


@pytest.fixture
async def redis_brokers(redis_server: RedisServer, prefix: str) -> AsyncIterator[BrokerCluster]:
    """Redis brokers only: for behaviour across nodes, which one in-process memory broker cannot show."""
    made = BrokerCluster("redis", redis_server.url, prefix)
    yield made
    await made.close()
