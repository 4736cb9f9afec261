"""Where every node posts a small stats heartbeat, so any node's console can show the whole cluster.

A node posts its latest figures every few seconds; readers get each node's last post and ignore (and
eventually delete) posts older than ``max_age``: a node that died simply fades out of the overview.
Memory implementation here (``hub serve`` is one node); Redis in ``redis_node_stats``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

NodePost = dict[str, Any]
"""One node's figures as JSON-ready values; ``node_id`` and ``posted_at`` (Unix seconds) always set."""

# Posts this much older than ``max_age`` are deleted by the next reader.
FORGET_AFTER_SECONDS = 300.0


class NodeStatsBoard(ABC):
    """Contract: ``read`` returns the latest post of every node that posted within ``max_age``."""

    @abstractmethod
    async def post(self, node_id: str, figures: NodePost, now: float) -> None:
        """Replace this node's post (raise StateUnavailable when the store cannot be reached)."""

    @abstractmethod
    async def read(self, now: float, max_age: float) -> list[NodePost]:
        """Every recent post, ordered by node id."""

    @abstractmethod
    async def withdraw(self, node_id: str) -> None:
        """Remove this node's post (graceful shutdown)."""


class MemoryNodeStatsBoard(NodeStatsBoard):
    """The board of one process."""

    def __init__(self) -> None:
        self._posts: dict[str, NodePost] = {}

    async def post(self, node_id: str, figures: NodePost, now: float) -> None:
        self._posts[node_id] = {**figures, "node_id": node_id, "posted_at": now}

    async def read(self, now: float, max_age: float) -> list[NodePost]:
        for node_id in [n for n, p in self._posts.items() if now - p["posted_at"] > max_age + FORGET_AFTER_SECONDS]:
            del self._posts[node_id]
        return [p for _, p in sorted(self._posts.items()) if now - p["posted_at"] <= max_age]

    async def withdraw(self, node_id: str) -> None:
        self._posts.pop(node_id, None)
