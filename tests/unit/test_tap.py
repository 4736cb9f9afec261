"""The event tap: nothing while nobody watches, every node told when someone does, bounded batches."""

from __future__ import annotations

import asyncio

from hub.broker.envelope import Envelope, Kind
from hub.broker.memory import MemoryBroker
from hub.tap import FLUSH_SECONDS, WATCH_TTL, Tap, TapEvent


class Sink:
    def __init__(self) -> None:
        self.events: list[TapEvent] = []
        self.not_shown = 0

    def __call__(self, events: list[TapEvent], not_shown: int) -> None:
        self.events.extend(events)
        self.not_shown += not_shown


async def started(tap: Tap) -> MemoryBroker:
    broker = MemoryBroker()
    await broker.start(tap.receive, ["1"])
    tap.attach_broker(broker)
    return broker


async def test_nobody_watches_a_fresh_tap() -> None:
    assert not Tap("n1").watching("1")


async def test_opening_a_stream_makes_the_app_watched_and_its_events_reach_the_stream() -> None:
    tap, sink = Tap("n1"), Sink()
    await started(tap)
    await tap.attach("1", sink)

    assert tap.watching("1") and not tap.watching("2")
    tap.emit("1", "api_event", channel="c", event="e", data={"n": 1})
    await asyncio.sleep(FLUSH_SECONDS * 3)

    (event,) = sink.events
    assert (event["kind"], event["channel"], event["data"], event["node"]) == ("api_event", "c", '{"n":1}', "n1")


async def test_a_watch_announcement_from_another_node_makes_the_app_watched_until_its_ttl() -> None:
    now = [100.0]
    tap = Tap("n2", clock=lambda: now[0])
    tap.receive(Envelope(Kind.CONSOLE_WATCH, "1", "", "", WATCH_TTL, origin_node="n1"))

    assert tap.watching("1")
    now[0] += WATCH_TTL + 0.1
    runner = asyncio.get_running_loop().create_task(tap.run())
    await asyncio.sleep(1.2)
    runner.cancel()
    assert not tap.watching("1")


async def test_past_the_rate_events_are_counted_as_not_shown() -> None:
    tap, sink = Tap("n1", rate=5), Sink()
    await started(tap)
    await tap.attach("1", sink)

    for n in range(12):
        tap.emit("1", "api_event", channel="c", event=f"e{n}")
    await asyncio.sleep(FLUSH_SECONDS * 3)

    assert [e["event"] for e in sink.events] == ["e0", "e1", "e2", "e3", "e4"]
    assert sink.not_shown == 7


async def test_the_last_stream_closing_unsubscribes_the_console_topic() -> None:
    tap, first, second = Tap("n1"), Sink(), Sink()
    await started(tap)
    await tap.attach("1", first)
    await tap.attach("1", second)
    tap.detach("1", first)
    tap.emit("1", "connected", socket_id="1.1")
    await asyncio.sleep(FLUSH_SECONDS * 3)
    tap.detach("1", second)
    tap.emit("1", "connected", socket_id="1.2")
    await asyncio.sleep(FLUSH_SECONDS * 3)

    assert first.events == []
    assert [e["socket_id"] for e in second.events] == ["1.1"]
    assert tap.streams("1") == 0


async def test_long_event_data_is_cut_for_the_stream() -> None:
    tap, sink = Tap("n1"), Sink()
    await started(tap)
    await tap.attach("1", sink)
    tap.emit("1", "api_event", data="x" * 10_000)
    await asyncio.sleep(FLUSH_SECONDS * 3)

    assert len(sink.events[0]["data"]) < 2100
