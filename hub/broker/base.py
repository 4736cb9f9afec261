"""The Broker contract: publish to a channel, receive what is published on channels you subscribe."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from hub.broker.envelope import Envelope, Kind

MessageHandler = Callable[[Envelope], None]

CONTROL_CHANNEL = "#control"
# Tapped events for console streams travel on their own topic, subscribed only while a stream is open.
CONSOLE_CHANNEL = "#console"


class BrokerUnavailable(Exception):
    """The broker did not accept a publish; the caller must not report success."""


def topic_of(envelope: Envelope) -> tuple[str, str]:
    """The (app id, channel) topic an envelope travels on: control messages share one topic per app."""
    if envelope.kind is Kind.EVENT:
        return envelope.app_id, envelope.channel
    if envelope.kind is Kind.CONSOLE_EVENTS:
        return envelope.app_id, CONSOLE_CHANNEL
    return envelope.app_id, CONTROL_CHANNEL


class Broker(ABC):
    """Moves envelopes from publishers to every node subscribed to their topic.

    Contract:
    - Delivery is at most once, in publish order per topic and publisher; nothing is stored.
    - ``publish`` returns only once the broker accepted the message and raises BrokerUnavailable
      otherwise, so a caller never reports success for a message that went nowhere.
    - ``subscribe``/``unsubscribe`` are per topic (app id, channel); the node reference-counts its
      local sockets and calls them on the first join and last leave. ``subscribe`` returns once the
      topic is being delivered (so a client told "subscription succeeded" misses nothing published
      after), batching concurrent calls into one command. Neither raises: while the broker is down
      the wish is remembered, ``subscribe`` returns at once, and it is applied on reconnect.
    - Every node receives its apps' control topic (``#control``) without subscribing to it.
    - The handler runs on the event loop and must not block; it is called for the node's own
      publishes too.
    """

    @abstractmethod
    async def start(self, handler: MessageHandler, app_ids: list[str]) -> None:
        """Connect and start delivering to ``handler``; subscribe the control topics of ``app_ids``."""

    @abstractmethod
    async def close(self) -> None:
        """Stop delivering and release connections."""

    @abstractmethod
    async def publish(self, envelope: Envelope) -> None:
        """Publish; raise BrokerUnavailable if the broker did not accept it."""

    @abstractmethod
    async def subscribe(self, app_id: str, channel: str) -> None:
        """Start receiving the topic; return once it is delivered (or at once while disconnected)."""

    @abstractmethod
    def unsubscribe(self, app_id: str, channel: str) -> None:
        """Stop receiving the topic (applied asynchronously, batched)."""

    @property
    @abstractmethod
    def healthy(self) -> bool:
        """Whether publishes and deliveries currently work."""
