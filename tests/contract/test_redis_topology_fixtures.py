"""The Redis Cluster and Sentinel fixtures do what they say, with real processes.

Hub's cluster and failover tests build on ``tests.support.redis_cluster`` and ``redis_sentinel``; if a
fixture reported a failover that had not happened everywhere, or a migration that left keys behind,
those tests would pass or fail for the wrong reason. One cluster is shared by the tests that leave it
as they found it; the ones that kill nodes start their own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.redis_cluster import SLOTS, ClusterNode, MigrationStep, RedisCluster, slot_of
from tests.support.redis_sentinel import RedisSentinel
from tests.support.requirements import require_executable

pytestmark = pytest.mark.cluster

KEYS: list[bytes | str] = [
    "foo",
    "private-chat.1.2",
    "presence-room",
    "{user1000}.following",
    "{user1000}.followers",
    "foo{}{bar}",  # empty first tag: the whole key is hashed
    "foo{{bar}}zap",  # the tag is "{bar"
    "foo{bar}{zap}",  # only the first tag counts
    "{",
    "}{",
    "a{b",
    "",
    b"\xff\x00binary{\x80}",
    "hub:{app-1}:channels",
    "ümlaut{ß}",
]


def require_redis_tools() -> None:
    """Skip (fail in CI) without redis-server and redis-cli."""
    require_executable("redis-server")
    require_executable("redis-cli")


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    """One 3 + 3 cluster for the tests that leave it stable."""
    require_redis_tools()
    with RedisCluster() as started:
        yield started


def assert_stopped(pids: list[int], dirs: list[Path]) -> None:
    """Every pid has exited (and was reaped) and every temp dir is gone."""
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for directory in dirs:
        assert not directory.exists(), directory


def set_with_replication(node: ClusterNode, key: str, value: str) -> None:
    """SET on ``node`` and wait until its replica has it, so a later kill of ``node`` cannot lose it."""
    with node.client() as client:
        client.set(key, value)
        assert client.execute_command("WAIT", 1, 5000) == 1


def test_slot_of_hashes_like_redis_documents() -> None:
    assert slot_of("foo") == 12182
    assert slot_of(b"foo") == 12182
    assert slot_of("123456789") == 0x31C3 % SLOTS  # the CRC16-XMODEM check value
    assert slot_of("{user1000}.following") == slot_of("{user1000}.followers") == slot_of("user1000")
    assert slot_of("foo{}{bar}") != slot_of("bar")
    assert slot_of("foo{{bar}}zap") == slot_of("{bar")
    assert slot_of("foo{bar}{zap}") == slot_of("bar")


def test_slot_of_matches_cluster_keyslot(cluster: RedisCluster) -> None:
    node = cluster.nodes[0]
    for key in [*KEYS, *(f"channel-{i}" for i in range(200))]:
        assert slot_of(key) == node.command("CLUSTER", "KEYSLOT", key), key


def test_cluster_forms_three_primaries_each_with_a_synced_replica(cluster: RedisCluster) -> None:
    assert len(cluster.nodes) == 6
    assert len(set(cluster.ports)) == 6
    assert cluster.url == "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in cluster.ports[:3])
    primaries = cluster.primaries()
    assert len(primaries) == 3
    assert all(node.role == "primary" for node in primaries)
    replicas = [cluster.replica_of(primary) for primary in primaries]
    assert {node.port for node in primaries + replicas} == set(cluster.ports)
    for primary, replica in zip(primaries, replicas, strict=True):
        assert replica.role == "replica"
        link = replica.info("replication")
        assert (link["master_port"], link["master_link_status"]) == (primary.port, "up")
        assert replica.command("CLUSTER", "MYID").decode() == replica.node_id
    for node in cluster.nodes:
        assert node.cluster_info()["cluster_state"] == "ok"
        assert node.pid > 0
    assert sorted(slot for primary in primaries for slot in cluster.slots_of(primary)) == list(range(SLOTS))


def test_primary_for_slot_is_the_node_that_serves_the_key(cluster: RedisCluster) -> None:
    key = "fixture:owner"
    owner = cluster.primary_for_slot(slot_of(key))
    with owner.client() as client:
        assert client.set(key, "here")
    other = next(node for node in cluster.primaries() if node is not owner)
    with other.client() as client, pytest.raises(redis.exceptions.MovedError) as moved:
        client.get(key)
    assert str(moved.value) == f"{slot_of(key)} {owner.address}"


def migrating_flags(node: ClusterNode) -> str:
    """The ``[slot->-id]`` / ``[slot-<-id]`` markers of the node's own line in CLUSTER NODES."""
    myself = next(line for line in node.command("CLUSTER", "NODES").decode().splitlines() if "myself" in line)
    return " ".join(part for part in myself.split() if part.startswith("["))


def test_migrate_slot_moves_the_slot_and_all_its_keys(cluster: RedisCluster) -> None:
    keys = [f"{{fixture-migrate}}:{i}" for i in range(250)]  # more than one MIGRATE batch
    slot = slot_of(keys[0])
    source = cluster.primary_for_slot(slot)
    target = next(node for node in cluster.primaries() if node is not source)
    channel = "{fixture-migrate}:channel"
    source.command("MSET", *(part for key in keys for part in (key, key)))
    subscribed = source.client()
    subscriber = subscribed.pubsub()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    subscriber.ssubscribe(channel)
    assert subscriber.get_message(timeout=2)["type"] == "ssubscribe"
    steps: list[MigrationStep] = []

    def pause(step: MigrationStep) -> None:
        steps.append(step)
        if step == "migrating":
            assert migrating_flags(source) == f"[{slot}->-{target.node_id}]"
            assert migrating_flags(target) == f"[{slot}-<-{source.node_id}]"
            # A shard channel is served by the source until SETSLOT NODE, whatever happened to the keys.
            assert source.command("SPUBLISH", channel, "during") == 1
        else:
            assert source.command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
            assert target.command("CLUSTER", "COUNTKEYSINSLOT", slot) == len(keys)

    try:
        cluster.migrate_slot(slot, target, batch=100, pause=pause)
        assert steps == ["migrating", "keys_moved"]
        assert subscriber.get_message(timeout=2)["data"] == b"during"
        # The source drops its subscribers of the slot: they must resubscribe at the new owner.
        assert subscriber.get_message(timeout=2)["type"] == "sunsubscribe"
    finally:
        subscriber.close()
        subscribed.close()
    for node in cluster.live_nodes():
        assert node.slot_owners()[slot] == target.node_id
    assert cluster.primary_for_slot(slot) is target
    with target.client() as client:
        assert client.mget(keys) == [key.encode() for key in keys]
    assert migrating_flags(source) == migrating_flags(target) == ""
    cluster.wait_until_stable(timeout=10)


async def test_migrate_slot_async_awaits_the_pause_hook(cluster: RedisCluster) -> None:
    slot = slot_of("fixture-async")
    source = cluster.primary_for_slot(slot)
    target = next(node for node in cluster.primaries() if node is not source)
    steps: list[MigrationStep] = []

    async def pause(step: MigrationStep) -> None:
        steps.append(step)

    await cluster.migrate_slot_async(slot, target, pause=pause)
    assert steps == ["migrating", "keys_moved"]
    assert all(node.slot_owners()[slot] == target.node_id for node in cluster.live_nodes())


def test_kill_then_failover_moves_ownership_and_restart_rejoins_as_replica() -> None:
    require_redis_tools()
    with RedisCluster() as cluster:
        pids = [node.pid for node in cluster.nodes]
        dirs = [cluster.dir, *(node.server.dir for node in cluster.nodes)]
        key = "fixture:failover"
        old = cluster.primary_for_slot(slot_of(key))
        replica = cluster.replica_of(old)
        owned = cluster.slots_of(old)
        set_with_replication(old, key, "kept")

        killed_at = time.monotonic()
        cluster.kill(old)
        assert not old.is_running()
        new = cluster.wait_for_failover(old, timeout=20)
        took = time.monotonic() - killed_at

        assert new is replica, f"failover picked {new}, not {old}'s replica {replica}"
        assert took >= cluster.node_timeout_ms / 1000, "a failover faster than the node timeout did not wait for one"
        for node in cluster.live_nodes():
            assert node.cluster_info()["cluster_state"] == "ok"
            views = node.slot_owners()
            assert {views[slot] for slot in owned} == {new.node_id}
        assert new.role == "primary"
        assert cluster.primary_for_slot(slot_of(key)) is new
        with new.client() as client:
            assert client.get(key) == b"kept"

        cluster.restart(old)
        assert old.role == "replica"
        assert cluster.replica_of(new) is old
        assert len(cluster.primaries()) == 3
        cluster.wait_until_stable(timeout=10)
    assert_stopped(pids, dirs)


def test_cluster_with_password_requires_it_and_still_migrates() -> None:
    require_redis_tools()
    with RedisCluster(password="s3cret") as cluster:
        assert cluster.url.startswith("redis+cluster://:s3cret@127.0.0.1:")
        node = cluster.nodes[0]
        with (
            redis.Redis(port=node.port, protocol=2, retry=Retry(NoBackoff(), 0)) as anonymous,
            pytest.raises(redis.AuthenticationError),
        ):
            anonymous.ping()
        key = "{fixture-auth}:1"
        source = cluster.primary_for_slot(slot_of(key))
        target = next(other for other in cluster.primaries() if other is not source)
        source.command("SET", key, "v")
        cluster.migrate_slot(slot_of(key), target)
        assert target.command("GET", key) == b"v"


def test_sentinel_failover_elects_the_replica_and_restart_rejoins_as_replica() -> None:
    require_executable("redis-server")
    with RedisSentinel(password="s3cret") as setup:
        pids = [process.pid for process in [*setup.servers, *setup.sentinels]]
        dirs = [setup.dir, *(server.dir for server in setup.servers)]
        ports = ",".join(f"127.0.0.1:{port}" for port in setup.sentinel_ports)
        assert setup.url == f"redis+sentinel://:s3cret@{ports}/hubmaster"
        old = setup.primary()
        (replica,) = setup.replicas()
        with old.client() as client:
            assert client.execute_command("ROLE")[0] == b"master"
            client.set("fixture:sentinel", "kept")
            assert client.execute_command("WAIT", 1, 5000) == 1

        killed = setup.kill_primary()
        assert killed is old and not old.is_running()
        new_port = setup.wait_for_failover(timeout=30)

        assert new_port == replica.port
        assert {sentinel.primary_port() for sentinel in setup.sentinels} == {new_port}
        with setup.server(new_port).client() as client:
            assert client.execute_command("ROLE")[0] == b"master"
            assert client.get("fixture:sentinel") == b"kept"

        setup.restart(old)
        with old.client() as client:
            role = client.execute_command("ROLE")
        assert (role[0], role[2], role[3]) == (b"slave", new_port, b"connected")
        assert setup.primary_port() == new_port
        assert [server.port for server in setup.replicas()] == [old.port]
    assert_stopped(pids, dirs)
