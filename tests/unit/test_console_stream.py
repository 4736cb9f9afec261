"""The console stream's filter and budget, and the node report's quantile from histogram buckets."""

from __future__ import annotations

from hub.admin.node_report import quantile_from_buckets
from hub.admin.stream import ConsoleStream, EventFilter
from hub.tap import TapEvent


def event(channel: str = "c", name: str = "e") -> TapEvent:
    return {"kind": "api_event", "channel": channel, "event": name}


def test_the_filter_matches_a_channel_prefix_and_an_event_name_or_prefix() -> None:
    assert EventFilter("private-")(event("private-chat.1"))
    assert not EventFilter("private-")(event("presence-x"))
    assert EventFilter(event="message.sent")(event(name="message.sent"))
    assert not EventFilter(event="message")(event(name="message.sent"))
    assert EventFilter(event="message*")(event(name="message.sent"))
    assert EventFilter()({"kind": "connected", "socket_id": "1.2"})


async def test_a_stream_shows_at_most_its_rate_per_second_and_counts_the_rest() -> None:
    now = [10.0]
    stream = ConsoleStream(3, EventFilter(), clock=lambda: now[0])
    stream([event() for _ in range(5)], 2)

    assert stream.not_shown == 4
    assert len(await stream.next(0.1)) == 3
    now[0] += 1.0
    stream([event()], 0)
    assert stream.not_shown == 4, "a new second has a new budget"


def test_a_browser_that_does_not_read_costs_at_most_one_seconds_worth() -> None:
    now = [10.0]
    stream = ConsoleStream(3, EventFilter(), clock=lambda: now[0])
    for _ in range(5):
        stream([event(), event(), event()], 0)
        now[0] += 1.0

    assert stream.not_shown == 12


def test_events_the_filter_rejects_cost_no_budget() -> None:
    stream = ConsoleStream(2, EventFilter("keep"))
    stream([event("drop") for _ in range(10)] + [event("keep"), event("keep")], 0)

    assert stream.not_shown == 0


async def test_queued_events_are_handed_out_once() -> None:
    stream = ConsoleStream(10, EventFilter())
    stream([event("a"), event("b")], 0)

    assert [e["channel"] for e in await stream.next(0.1)] == ["a", "b"]
    assert await stream.next(0.05) == []


def test_the_quantile_is_the_upper_bound_of_the_bucket_that_holds_it() -> None:
    buckets = [(0.001, 50.0), (0.01, 98.0), (0.1, 100.0), (float("inf"), 100.0)]

    assert quantile_from_buckets(buckets, 0.5) == 0.001
    assert quantile_from_buckets(buckets, 0.99) == 0.1
    assert quantile_from_buckets([(0.001, 0.0), (float("inf"), 0.0)], 0.99) is None
