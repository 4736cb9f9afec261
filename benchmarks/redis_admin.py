"""Asking the Redis servers of a benchmark deployment about themselves: roles, slots, memory, replay streams.

Plain synchronous redis-py clients, one per call, to one server at a time: what a benchmark needs between
measurements, never on a measured path. Nothing here runs a command across a cluster: SCAN walks one
node's own keys, which is all a node holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from hub.broker.replay import stream_key, topic_name
from hub.redis_topology import SLOTS, key_slot

LOOPBACK = "127.0.0.1"
HUB_PREFIX = "hub"  # hub's default --redis-prefix, which the benchmark topologies keep
REPLAY_PATTERN = b"*:replay"
RedisError = redis.RedisError
ADMIN_ERRORS: tuple[type[Exception], ...] = (OSError, RedisError)
"""What a query of a server that is down, starting or just killed raises."""


def command(port: int, *args: str | int | bytes, timeout: float = 2.0) -> Any:
    """Run one command on the server at 127.0.0.1:``port`` and return redis-py's reply."""
    with redis.Redis(LOOPBACK, port, socket_timeout=timeout, socket_connect_timeout=timeout) as client:
        return client.execute_command(*args)


def info(port: int, section: str) -> dict[str, Any]:
    """INFO ``section`` of one server as a dict."""
    reply: dict[str, Any] = command(port, "INFO", section)
    return reply


@dataclass(frozen=True)
class ClusterNodeView:
    """One line of CLUSTER NODES: who the node is, whose replica it is, what it serves."""

    node_id: str
    port: int
    primary: bool
    primary_id: str | None
    slots: tuple[tuple[int, int], ...]
    failed: bool


def cluster_nodes(port: int) -> list[ClusterNodeView]:
    """The cluster as the node at ``port`` sees it (CLUSTER NODES)."""
    text: bytes | str = command(port, "CLUSTER", "NODES")
    if isinstance(text, bytes):
        text = text.decode()
    views = []
    for line in text.splitlines():
        parts = line.split(" ")
        if len(parts) < 8:
            continue
        node_id, address, flags, primary_id = parts[0], parts[1], parts[2].split(","), parts[3]
        slots = []
        for item in parts[8:]:
            if item.startswith("["):  # a slot being imported/migrated
                continue
            start, _, end = item.partition("-")
            slots.append((int(start), int(end or start)))
        views.append(
            ClusterNodeView(
                node_id=node_id,
                port=int(address.split("@")[0].rsplit(":", 1)[1]),
                primary="master" in flags,
                primary_id=None if primary_id == "-" else primary_id,
                slots=tuple(slots),
                failed="fail" in flags or "fail?" in flags,
            )
        )
    return views


def cluster_unstable_reason(ports: Sequence[int], expected_nodes: int) -> str | None:
    """Why the cluster on ``ports`` is not ready yet (None when it is).

    Ready: every node reports cluster_state:ok and knows every node, all 16384 slots are assigned, and every
    replica's link to its primary is up with no sync in progress.
    """
    for port in ports:
        try:
            state = dict(
                line.split(":", 1) for line in command(port, "CLUSTER", "INFO").decode().splitlines() if ":" in line
            )
            if state.get("cluster_state") != "ok":
                return f":{port} cluster_state {state.get('cluster_state')}"
            if int(state.get("cluster_known_nodes", 0)) != expected_nodes:
                return f":{port} knows {state.get('cluster_known_nodes')} nodes"
            if int(state.get("cluster_slots_assigned", 0)) != SLOTS:
                return f":{port} sees {state.get('cluster_slots_assigned')} slots assigned"
            replication = info(port, "replication")
            if replication.get("role") == "slave" and (
                replication.get("master_link_status") != "up" or replication.get("master_sync_in_progress")
            ):
                return f":{port} replica link {replication.get('master_link_status')}"
        except (redis.RedisError, OSError) as exc:
            return f":{port} does not answer: {exc}"
    return None


def wait_for(condition: Callable[[], str | None], timeout: float, what: str) -> None:
    """Poll ``condition`` (None: done, else why not) until done; raise TimeoutError naming the last reason."""
    deadline = time.monotonic() + timeout
    reason: str | None = "not checked"
    while time.monotonic() < deadline:
        reason = condition()
        if reason is None:
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}: {reason}")


def channel_slot(app_id: str, channel: str, prefix: str = HUB_PREFIX) -> int:
    """The Redis Cluster slot of a Pusher channel's topic (and of its replay stream: same hash tag)."""
    return key_slot(topic_name(prefix, app_id, channel))


def owner_port(ports: Sequence[int], slot: int) -> int:
    """The client port of the primary serving ``slot``, as the first answering node of ``ports`` sees it."""
    for port in ports:
        try:
            for view in cluster_nodes(port):
                if view.primary and not view.failed and any(a <= slot <= b for a, b in view.slots):
                    return view.port
        except (redis.RedisError, OSError):
            continue
    raise LookupError(f"no node serves slot {slot}")


def replay_stream_key(app_id: str, channel: str, prefix: str = HUB_PREFIX) -> bytes:
    """The replay stream key of a Pusher channel."""
    return stream_key(topic_name(prefix, app_id, channel))


def used_memory(ports: Sequence[int]) -> dict[int, int]:
    """INFO memory used_memory of each server, in bytes (servers that do not answer are left out)."""
    used: dict[int, int] = {}
    for port in ports:
        try:
            used[port] = int(info(port, "memory")["used_memory"])
        except (redis.RedisError, OSError):
            continue
    return used


def replay_streams(ports: Sequence[int], *, sample: int = 200) -> dict[str, Any]:
    """The replay streams held by the primaries on ``ports``: how many, and MEMORY USAGE/XLEN of a sample.

    Each primary is walked with its own SCAN (MATCH ``*:replay``): a node only ever holds its own slots'
    keys, so the union over the primaries is the whole cluster without a cluster-wide scan.
    """
    keys_by_port: dict[int, list[bytes]] = {}
    for port in ports:
        with redis.Redis(LOOPBACK, port, socket_timeout=5.0) as client:
            keys_by_port[port] = list(client.scan_iter(match=REPLAY_PATTERN, count=1000, _type="stream"))
    total = sum(len(keys) for keys in keys_by_port.values())
    sizes: list[int] = []
    lengths: list[int] = []
    per_port = max(1, sample // max(1, len(ports)))
    for port, keys in keys_by_port.items():
        with redis.Redis(LOOPBACK, port, socket_timeout=5.0) as client:
            for key in keys[:per_port]:
                size = client.memory_usage(key, samples=0)
                if size is not None:
                    sizes.append(int(size))
                    lengths.append(int(client.xlen(key)))
    return {
        "stream_keys": total,
        "stream_keys_by_port": {str(port): len(keys) for port, keys in keys_by_port.items()},
        "sampled": len(sizes),
        "mean_memory_usage_bytes": round(sum(sizes) / len(sizes), 1) if sizes else None,
        "max_memory_usage_bytes": max(sizes) if sizes else None,
        "mean_entries": round(sum(lengths) / len(lengths), 1) if lengths else None,
        "bytes_per_entry": round(sum(sizes) / sum(lengths), 1) if sum(lengths) else None,
    }
