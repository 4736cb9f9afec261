"""In-process broker for ``hub serve`` without Redis: publish calls the handler directly."""

from __future__ import annotations

from hub.broker.base import CONTROL_CHANNEL, Broker, MessageHandler, topic_of
from hub.broker.envelope import Envelope


class MemoryBroker(Broker):
    """Delivers each publish synchronously to this process's handler when its topic is subscribed."""

    def __init__(self) -> None:
        self._handler: MessageHandler | None = None
        self._topics: set[tuple[str, str]] = set()

    async def start(self, handler: MessageHandler, app_ids: list[str]) -> None:
        self._handler = handler

    async def close(self) -> None:
        self._handler = None

    async def publish(self, envelope: Envelope) -> None:
        if self._handler is None:
            return
        topic = topic_of(envelope)
        if topic[1] == CONTROL_CHANNEL or topic in self._topics:
            self._handler(envelope)

    async def subscribe(self, app_id: str, channel: str) -> None:
        self._topics.add((app_id, channel))

    def unsubscribe(self, app_id: str, channel: str) -> None:
        self._topics.discard((app_id, channel))

    @property
    def healthy(self) -> bool:
        return self._handler is not None
