"""Fixtures every suite may use: Redis deployments a test owns alone (it may kill or move what it likes)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_cluster import RedisCluster
from tests.support.redis_sentinel import RedisSentinel
from tests.support.requirements import require_executable


@pytest.fixture
def own_cluster() -> Iterator[RedisCluster]:
    """A 3 primaries + 3 replicas Redis Cluster of this test alone."""
    require_executable("redis-server")
    require_executable("redis-cli")
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture
def own_sentinel() -> Iterator[RedisSentinel]:
    """A primary, a replica and 3 sentinels of this test alone."""
    require_executable("redis-server")
    with RedisSentinel() as setup:
        yield setup
