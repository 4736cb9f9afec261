"""A real Redis Cluster for tests: 3 primaries + 3 replicas on free loopback ports, stopped by pid.

    with RedisCluster() as cluster:               # start(): nodes up, cluster created, every replica in sync
        cluster.url                               # redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3
        slot = slot_of("private-chat.1")          # CRC16 with hash tags, like CLUSTER KEYSLOT
        owner = cluster.primary_for_slot(slot)
        cluster.kill(owner)                       # SIGKILL by pid
        new_owner = cluster.wait_for_failover(owner)
        cluster.restart(owner)                    # same port and nodes.conf: rejoins as a replica
        cluster.migrate_slot(slot, cluster.primaries()[0], pause=lambda step: ...)

Each node is a ``RedisServer`` (own temp dir holding its nodes.conf, no RDB or AOF). Replication starts
without redis' default 5 s diskless-sync delay, and a replica may always fail over however long its link
was down, so failovers take about ``node_timeout_ms`` plus one election. Callers skip (or fail in CI)
when redis-server or redis-cli is missing, via ``require_executable``.
"""

# ruff: noqa: ASYNC109  -- per-call timeouts are this test-helper API's point; callers pass seconds

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import redis

from tests.support.ports import free_port
from tests.support.redis_server import RedisServer, RedisServerError

SLOTS = 16384

MigrationStep = Literal["migrating", "keys_moved"]
"""Where ``migrate_slot`` calls its pause hook: after IMPORTING/MIGRATING are set (keys not moved yet),
and after every key has moved but before the slot is assigned to the target (SETSLOT NODE)."""


class RedisClusterError(RuntimeError):
    """The cluster did not form, or did not reach the state a test waited for, in time."""


def _crc16(data: bytes) -> int:
    """CRC16-XMODEM (polynomial 0x1021, initial value 0), the checksum Redis Cluster hashes keys with."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def slot_of(key: bytes | str) -> int:
    """The hash slot of ``key`` (or of a shard channel): CRC16 of its hash tag when it has a non-empty one."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start != -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return _crc16(data) % SLOTS


@dataclass
class ClusterNode:
    """One redis-server of the cluster. Its role changes with failovers, so ``role`` asks the node."""

    server: RedisServer
    bus_port: int
    node_id: str = ""

    @property
    def port(self) -> int:
        """Client port on 127.0.0.1."""
        return self.server.port

    @property
    def address(self) -> str:
        """``127.0.0.1:port``."""
        return f"{self.server.host}:{self.port}"

    @property
    def pid(self) -> int:
        """Pid of the running process (raises when it is down)."""
        return self.server.pid

    @property
    def role(self) -> Literal["primary", "replica"]:
        """What the node says it is right now (ROLE)."""
        reply = self.command("ROLE")
        return "primary" if reply[0] == b"master" else "replica"

    def is_running(self) -> bool:
        """Whether its process is alive (False after ``kill``)."""
        return self.server.is_running()

    def client(self) -> redis.Redis:
        """A plain (non-cluster) client of this node alone; the caller closes it."""
        return self.server.client()

    def command(self, *args: str | int | bytes) -> Any:
        """Run one command on this node and return redis-py's reply."""
        with self.client() as client:
            return client.execute_command(*args)

    def info(self, section: str) -> dict[str, Any]:
        """INFO ``section`` as a dict."""
        reply: dict[str, Any] = self.command("INFO", section)
        return reply

    def cluster_info(self) -> dict[str, str]:
        """CLUSTER INFO as a dict of strings."""
        text: bytes = self.command("CLUSTER", "INFO")
        pairs = (line.split(":", 1) for line in text.decode().splitlines() if ":" in line)
        return {name: value for name, value in pairs}

    def slot_owners(self) -> dict[int, str]:
        """This node's view of slot ownership: slot -> node id of its primary (CLUSTER SLOTS)."""
        owners: dict[int, str] = {}
        for start, end, primary, *_replicas in self.command("CLUSTER", "SLOTS"):
            owner = primary[2].decode()
            for slot in range(start, end + 1):
                owners[slot] = owner
        return owners

    def log(self, limit: int = 3000) -> str:
        """The tail of the node's log."""
        return self.server.log(limit)

    def __repr__(self) -> str:
        """Short form for assertion messages."""
        return f"ClusterNode({self.address}, id={self.node_id[:8]})"


@dataclass
class _Killed:
    """What a node owned when ``kill`` stopped it, so ``wait_for_failover`` knows what to watch."""

    slots: list[int] = field(default_factory=list)


class RedisCluster:
    """3 primaries + 3 replicas (by default) formed with ``redis-cli --cluster create``."""

    def __init__(
        self,
        *,
        primaries: int = 3,
        replicas_per_primary: int = 1,
        node_timeout_ms: int = 1500,
        password: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        """Describe the cluster; nothing runs until ``start()``. ``extra_args`` go to every node's command line."""
        if primaries < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 primaries")
        self.password = password
        self.node_timeout_ms = node_timeout_ms
        self.dir = Path(tempfile.mkdtemp(prefix="redis-cluster-"))
        self.nodes: list[ClusterNode] = []
        self._killed: dict[str, _Killed] = {}
        self._primary_count = primaries
        for _ in range(primaries * (1 + replicas_per_primary)):
            port, bus_port = free_port(), free_port()
            args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(node_timeout_ms),
                # Explicit bus port: the default (port + 10000) may be taken, or above 65535.
                "--cluster-port",
                str(bus_port),
                # A replica may fail over however long its link was down (tests pause and kill nodes).
                "--cluster-replica-validity-factor",
                "0",
                # Replicas stay where create/restart put them, so tests can reason about who replicates whom.
                "--cluster-allow-replica-migration",
                "no",
                # Redis waits 5 s for more replicas before a diskless full sync by default.
                "--repl-diskless-sync-delay",
                "0",
                # Teardown must not wait for lagging replicas (the default waits up to 10 s).
                "--shutdown-timeout",
                "0",
            ]
            if password:
                args += ["--masterauth", password]
            server = RedisServer(port, password=password, extra_args=[*args, *extra_args])
            self.nodes.append(ClusterNode(server, bus_port))

    @property
    def ports(self) -> list[int]:
        """Client ports of all nodes, in creation order."""
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis+cluster://[:password@]host:port,...``: the first three nodes as seeds."""
        auth = f":{self.password}@" if self.password else ""
        seeds = ",".join(node.address for node in self.nodes[:3])
        return f"redis+cluster://{auth}{seeds}"

    def start(self, *, timeout: float = 30.0) -> Self:
        """Start every node, create the cluster, and wait until it is stable (see ``wait_until_stable``)."""
        try:
            for node in self.nodes:
                node.server.start()
                node.node_id = node.command("CLUSTER", "MYID").decode()
            self._create()
            self.wait_until_stable(timeout=timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _create(self) -> None:
        argv = [
            shutil.which("redis-cli") or "redis-cli",
            "--cluster",
            "create",
            *(node.address for node in self.nodes),
            "--cluster-replicas",
            str(len(self.nodes) // self._primary_count - 1),
            "--cluster-yes",
        ]
        env = dict(os.environ)
        if self.password:
            env["REDISCLI_AUTH"] = self.password  # not -a: redis-cli warns about it on stderr
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise RedisClusterError(f"redis-cli --cluster create failed:\n{result.stdout}\n{result.stderr}")

    def node(self, port_or_id: int | str) -> ClusterNode:
        """The node with this client port or node id."""
        for node in self.nodes:
            if port_or_id in (node.port, node.node_id):
                return node
        raise KeyError(port_or_id)

    def live_nodes(self) -> list[ClusterNode]:
        """Nodes whose process runs."""
        return [node for node in self.nodes if node.is_running()]

    def _any_live_node(self) -> ClusterNode:
        live = self.live_nodes()
        if not live:
            raise RedisClusterError("no cluster node is running")
        return live[0]

    def primaries(self) -> list[ClusterNode]:
        """Running primaries that own slots, by ascending first slot."""
        owners = self._any_live_node().slot_owners()
        ordered = sorted(set(owners.values()), key=lambda node_id: min(s for s, o in owners.items() if o == node_id))
        return [self.node(node_id) for node_id in ordered if self.node(node_id).is_running()]

    def replica_of(self, primary: ClusterNode) -> ClusterNode:
        """The (first) running replica of ``primary``, as the primary's INFO replication lists it."""
        replication = primary.info("replication")
        for name, value in replication.items():
            if name.startswith("slave") and isinstance(value, dict):
                node = self.node(int(value["port"]))
                if node.is_running():
                    return node
        raise RedisClusterError(f"{primary} has no connected replica: {replication}")

    def primary_for_slot(self, slot: int) -> ClusterNode:
        """The node owning ``slot`` according to a live node's CLUSTER SLOTS."""
        return self.node(self._any_live_node().slot_owners()[slot])

    def slots_of(self, primary: ClusterNode) -> list[int]:
        """The slots ``primary`` owns (according to a live node)."""
        return [slot for slot, owner in self._any_live_node().slot_owners().items() if owner == primary.node_id]

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL the node by its pid, like a crash; remember what it owned for ``wait_for_failover``."""
        if not node.is_running():
            raise RedisClusterError(f"{node} is not running")
        others = [other for other in self.live_nodes() if other is not node]
        owners = (others[0] if others else node).slot_owners()
        self._killed[node.node_id] = _Killed([slot for slot, owner in owners.items() if owner == node.node_id])
        node.server.kill()

    def restart(self, node: ClusterNode, *, timeout: float = 30.0) -> ClusterNode:
        """Start a killed node again on the same port and nodes.conf and wait until it is a synced replica.

        Its data is gone (no persistence); the cluster tells it that its slots have a newer owner, so it
        turns into a replica of that owner and copies the data with a full sync.
        """
        node.server.start()
        self._killed.pop(node.node_id, None)
        self._wait(
            lambda: node.role == "replica" and self._unstable_reason() is None,
            timeout,
            f"{node} to rejoin as a replica",
        )
        return node

    def wait_for_failover(self, old_primary: ClusterNode, *, timeout: float = 20.0) -> ClusterNode:
        """Wait until one replica owns every slot ``old_primary`` owned, as every live node agrees; return it.

        Agreement means each live node's CLUSTER SLOTS names the new owner for those slots and reports
        cluster_state:ok, and the new owner answers ROLE as a primary.
        """
        killed = self._killed.get(old_primary.node_id)
        slots = killed.slots if killed else self.slots_of(old_primary)
        if not slots:
            raise RedisClusterError(f"{old_primary} owned no slots: nothing to fail over")
        found: list[ClusterNode] = []

        def taken_over() -> bool:
            owner_ids = set()
            for node in self.live_nodes():
                if node.cluster_info().get("cluster_state") != "ok":
                    return False
                owners = node.slot_owners()
                owner_ids |= {owners.get(slot) for slot in slots}
            if len(owner_ids) != 1 or old_primary.node_id in owner_ids:
                return False
            (owner_id,) = owner_ids
            if owner_id is None:
                return False
            owner = self.node(owner_id)
            if not owner.is_running() or owner.role != "primary":
                return False
            found[:] = [owner]
            return True

        self._wait(taken_over, timeout, f"a replica to take over the slots of {old_primary}")
        return found[0]

    def _unstable_reason(self) -> str | None:
        """Why the cluster is not stable yet, or None when it is (see ``wait_until_stable``)."""
        live = self.live_nodes()
        views: list[dict[int, str]] = []
        for node in live:
            try:
                state = node.cluster_info()
                if state.get("cluster_state") != "ok":
                    return f"{node} reports cluster_state {state.get('cluster_state')}"
                if int(state["cluster_known_nodes"]) != len(self.nodes):
                    return f"{node} knows {state['cluster_known_nodes']} nodes"
                views.append(node.slot_owners())
                if node.role == "replica":
                    link = node.info("replication")
                    if link.get("master_link_status") != "up" or link.get("master_sync_in_progress"):
                        return f"{node} is not in sync with its primary: {link.get('master_link_status')}"
                flags = node.command("CLUSTER", "NODES").decode()
                for line in flags.splitlines():
                    node_id, _, node_flags = line.split(" ")[:3]
                    peer = self.node(node_id)
                    if peer.is_running() and ("fail" in node_flags or "handshake" in node_flags):
                        return f"{node} flags {peer} as {node_flags}"
            except (redis.RedisError, OSError) as err:
                return f"{node} does not answer: {err}"
        if any(view != views[0] for view in views):
            return "nodes disagree about slot ownership"
        if len(views[0]) != SLOTS:
            return f"only {len(views[0])} slots are assigned"
        return None

    def wait_until_stable(self, *, timeout: float = 20.0) -> None:
        """Wait until every live node reports cluster_state:ok, knows every node, flags no live node as
        failing, agrees on who owns each of the 16384 slots, and every live replica is in sync."""
        reason: list[str | None] = [None]

        def stable() -> bool:
            reason[0] = self._unstable_reason()
            return reason[0] is None

        self._wait(stable, timeout, "the cluster to be stable", lambda: reason[0] or "")

    def _wait(
        self, condition: Callable[[], bool], timeout: float, what: str, why: Callable[[], str] = lambda: ""
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if condition():
                    return
            except (redis.RedisError, OSError, RedisServerError):
                pass  # a node that is still starting, or was just killed: ask again
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {node} ---\n{node.log(1500)}" for node in self.nodes)
                raise RedisClusterError(f"timed out after {timeout} s waiting for {what} {why()}\n{logs}")
            time.sleep(0.05)

    def migrate_slot(
        self,
        slot: int,
        target: ClusterNode,
        *,
        batch: int = 100,
        pause: Callable[[MigrationStep], None] | None = None,
    ) -> None:
        """Move ``slot`` and its keys to primary ``target`` by hand, the way ``redis-cli --cluster reshard`` does.

        CLUSTER SETSLOT IMPORTING on the target, MIGRATING on the source, MIGRATE of the keys in batches
        of ``batch`` (CLUSTER GETKEYSINSLOT), then SETSLOT NODE on the target, the source and every other
        primary. ``pause(step)`` runs between the steps (see ``MigrationStep``), e.g. to publish while the
        slot is MIGRATING. Blocking: from async tests use ``migrate_slot_async``.
        """
        migration = SlotMigration(self, slot, target, batch=batch)
        migration.begin()
        if pause:
            pause("migrating")
        migration.move_keys()
        if pause:
            pause("keys_moved")
        migration.finish()

    async def migrate_slot_async(
        self,
        slot: int,
        target: ClusterNode,
        *,
        batch: int = 100,
        pause: Callable[[MigrationStep], Awaitable[None]] | None = None,
    ) -> None:
        """``migrate_slot`` with the Redis calls in a thread and an async ``pause`` run on the test's loop."""
        migration = SlotMigration(self, slot, target, batch=batch)
        await asyncio.to_thread(migration.begin)
        if pause:
            await pause("migrating")
        await asyncio.to_thread(migration.move_keys)
        if pause:
            await pause("keys_moved")
        await asyncio.to_thread(migration.finish)

    async def wait_for_failover_async(self, old_primary: ClusterNode, *, timeout: float = 20.0) -> ClusterNode:
        """``wait_for_failover`` without blocking the test's event loop."""
        return await asyncio.to_thread(self.wait_for_failover, old_primary, timeout=timeout)

    async def restart_async(self, node: ClusterNode, *, timeout: float = 30.0) -> ClusterNode:
        """``restart`` without blocking the test's event loop."""
        return await asyncio.to_thread(self.restart, node, timeout=timeout)

    def close(self) -> None:
        """Stop every node by pid and remove all temp dirs."""
        for node in self.nodes:
            node.server.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        """Start on entering a ``with`` block."""
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop and clean up on leaving the block."""
        self.close()


class SlotMigration:
    """The steps of moving one slot to another primary; ``RedisCluster.migrate_slot`` runs them in order."""

    def __init__(self, cluster: RedisCluster, slot: int, target: ClusterNode, *, batch: int = 100) -> None:
        """Plan moving ``slot`` from its current owner to ``target``."""
        self.cluster = cluster
        self.slot = slot
        self.target = target
        self.source = cluster.primary_for_slot(slot)
        self.batch = batch
        if self.source is target:
            raise RedisClusterError(f"slot {slot} is already served by {target}")

    def begin(self) -> None:
        """IMPORTING on the target first, then MIGRATING on the source (the order redis documents)."""
        self.target.command("CLUSTER", "SETSLOT", self.slot, "IMPORTING", self.source.node_id)
        self.source.command("CLUSTER", "SETSLOT", self.slot, "MIGRATING", self.target.node_id)

    def move_keys(self) -> int:
        """MIGRATE the slot's keys to the target in batches; return how many moved."""
        moved = 0
        auth: list[str] = ["AUTH", self.cluster.password] if self.cluster.password else []
        while keys := self.source.command("CLUSTER", "GETKEYSINSLOT", self.slot, self.batch):
            self.source.command("MIGRATE", self.target.server.host, self.target.port, "", 0, 5000, *auth, "KEYS", *keys)
            moved += len(keys)
        return moved

    def finish(self) -> None:
        """SETSLOT NODE on the target, then the source, then every other primary; wait until all agree."""
        others = [node for node in self.cluster.primaries() if node not in (self.target, self.source)]
        for node in (self.target, self.source, *others):
            node.command("CLUSTER", "SETSLOT", self.slot, "NODE", self.target.node_id)
        self.cluster._wait(
            lambda: all(node.slot_owners().get(self.slot) == self.target.node_id for node in self.cluster.live_nodes()),
            10.0,
            f"every node to see slot {self.slot} at {self.target}",
        )
