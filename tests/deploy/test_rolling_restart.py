"""A rolling restart of one ws node behind haproxy while events flow (issue 6, item 5).

`make cluster` (deploy/cluster.sh: redis, ws1, ws2, ingest1, haproxy) runs on free loopback ports. Forty
real pusher-js clients connect through the haproxy port (leastconn alternates them between ws1 and ws2)
and subscribe to a public and a presence channel; the real `pusher` SDK publishes sequence-numbered
events to both channels through the same port, 20 a second, for the whole run. Then ws1 gets SIGTERM
with a 4 s drain period, and cluster.sh starts it again once it has exited 0, as an orchestrator would.

The run happens once per module (`rolling_restart`); each test states one property of what the clients,
the publisher and the nodes observed. The module prints the figures issue 6 asks for: how long the moved
clients took to be back and subscribed, and how many events published meanwhile each of them missed.

Pusher keeps no history, so a client misses what is published between its close and its resubscription;
what the drain must guarantee is that the window is short, that nothing outside it is lost, and that
clients of the surviving node notice nothing but presence changes of members that really moved.

Presence as observed: a moved member's old socket usually leaves before its new one joins (pusher-js
reconnects once it has the close), so survivors see `member_removed` then `member_added` for it. Now and
then (one or two of twenty members in some runs) the new socket on the other node joins before the old
one's removal is done; the user then never drops to zero sockets and survivors see nothing for it. Either
way no survivor hears about a member that did not move, and every member list ends complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pusher
import pytest

from tests.deploy.lb_cluster import LoadBalancedCluster, alive
from tests.support.auth_server import AuthServer
from tests.support.js_clients import JsClients, JsRecord, require_js_harness
from tests.support.ports import LOOPBACK
from tests.support.processes import http_ready

pytestmark = pytest.mark.cluster

APP = {"PUSHER_APP_ID": "1", "PUSHER_APP_KEY": "app-key", "PUSHER_APP_SECRET": "app-secret"}
DRAIN_SECONDS = 4.0
CLIENTS = 40
RATE = 20.0  # publishes per second, each to both channels
PUBLIC = "ticker"
PRESENCE = "presence-room"
CHANNELS = (PUBLIC, PRESENCE)
EVENT = "tick"
WARMUP = 1.0  # seconds of publishing before the SIGTERM
TAIL = 1.5  # seconds of publishing after every client is back
BACK_WITHIN = 3.0  # seconds from a client's close until it is subscribed again to both channels
# A publish this long before a client's close may still be in flight to the closing socket; anything
# older must have been delivered.
IN_FLIGHT = 0.5


@dataclass(frozen=True)
class Publish:
    """One `trigger` of event {"seq": seq} to both channels, as the publisher saw it."""

    seq: int
    started: float  # wall clock when the request was sent (comparable with JsRecord.time)
    error: str | None = None


@dataclass(frozen=True)
class Move:
    """A client the drained node closed: when, with what, and when it was subscribed again."""

    cid: str
    closes: tuple[JsRecord, ...]  # every transport close after the SIGTERM; more than one is a bounce
    connected_at: float | None  # the `connected` state after its last close
    subscribed_at: dict[str, float]  # channel -> `pusher:subscription_succeeded` after its last close

    @property
    def closed_at(self) -> float:
        return self.closes[0].time

    @property
    def back_at(self) -> float | None:
        """When it was subscribed again to every channel, or None if it never was."""
        if set(self.subscribed_at) != set(CHANNELS):
            return None
        return max(self.subscribed_at.values())

    @property
    def away(self) -> float | None:
        back = self.back_at
        return None if back is None else back - self.closed_at


@dataclass(frozen=True, repr=False)
class RollingRestart:
    """Everything observed during one rolling restart of ws1."""

    sigterm_at: float
    connections_before: dict[str, int]  # hub_connections of ws1 and ws2 before the SIGTERM
    connections_after: dict[str, int]  # ... once ws1 is back
    publishes: list[Publish]
    records: dict[str, list[JsRecord]]  # every client's records, oldest first
    since: int  # record seq at the SIGTERM
    members: dict[str, list[str]]  # every client's presence member ids at the end
    old_pid: int
    new_pid: int | None
    restarted_ready: bool
    ws1_log: str
    moved: dict[str, Move]  # the clients the drained node closed

    def __repr__(self) -> str:
        # pytest prints the fixture value with every failure; the records would bury the assertion.
        return f"<RollingRestart: {len(self.moved)} moved, {len(self.survivors)} survivors, {len(self.publishes)} publishes>"

    @property
    def survivors(self) -> list[str]:
        return [cid for cid in self.records if cid not in self.moved]

    def received(self, cid: str, channel: str) -> list[int]:
        """Sequence numbers of the events client `cid` got on `channel`, in arrival order."""
        return [
            int(record.data["seq"])
            for record in self.records[cid]
            if record.source == "channel" and record.event == EVENT and record.channel == channel
        ]

    def delivered(self) -> list[Publish]:
        return [publish for publish in self.publishes if publish.error is None]

    def missed(self, cid: str, channel: str) -> list[Publish]:
        """Successful publishes that never reached client `cid` on `channel`."""
        got = set(self.received(cid, channel))
        return [publish for publish in self.delivered() if publish.seq not in got]


def client_id(index: int) -> str:
    return f"c{index:02d}"


def user_of(cid: str) -> str:
    return f"user-{cid}"


def connections(port: int) -> int:
    """The node's `hub_connections`, summed over apps, from its /metrics."""
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return round(
        sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("hub_connections{"))
    )


class Publisher:
    """The backend: sequence-numbered events to both channels through haproxy's /apps/, at a steady rate."""

    def __init__(self, backend: pusher.Pusher) -> None:
        self.backend = backend
        self.publishes: list[Publish] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        begun = time.monotonic()
        seq = 0
        while not self._stop.is_set():
            seq += 1
            started = time.time()
            error = None
            try:
                await asyncio.to_thread(self.backend.trigger, list(CHANNELS), EVENT, {"seq": seq})
            except Exception as exc:  # the SDK raises its own errors and requests' alike; kept for the test to report
                error = repr(exc)
            self.publishes.append(Publish(seq, started, error))
            delay = begun + seq / RATE - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)

    def stop(self) -> None:
        self._stop.set()


def move_of(cid: str, records: list[JsRecord], since: int) -> Move | None:
    """How client `cid` was moved by the restart, or None if it was never closed."""
    closes = tuple(r for r in records if r.seq > since and r.source == "transport" and r.event == "closed")
    if not closes:
        return None
    after = [r for r in records if r.seq > closes[-1].seq]
    connected = next(
        (
            r.time
            for r in after
            if r.source == "connection" and r.event == "state_change" and r.data["current"] == "connected"
        ),
        None,
    )
    subscribed: dict[str, float] = {}
    for r in after:
        if r.source == "channel" and r.event == "pusher:subscription_succeeded" and r.channel in CHANNELS:
            subscribed.setdefault(str(r.channel), r.time)
    return Move(cid, closes, connected, subscribed)


def everyone_back(js: JsClients, cids: list[str], since: int, drained_pid: int) -> bool:
    """The drained node has exited (so it closed all its clients) and each closed client is subscribed again."""
    if alive(drained_pid):
        return False
    moves = [move_of(cid, js.events(cid), since) for cid in cids]
    return all(move is None or move.back_at is not None for move in moves)


def has_last(js: JsClients, cids: list[str], last: int) -> bool:
    return all(
        any(
            r.event == EVENT and r.channel == channel and r.data["seq"] == last
            for r in js.events(cid, source="channel")
        )
        for cid in cids
        for channel in CHANNELS
    )


async def poll(condition: Callable[[], bool], within: float) -> bool:
    """Check `condition` every 50 ms for up to `within` seconds; whether it came true."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def roll(cluster: LoadBalancedCluster) -> RollingRestart:
    """Connect, subscribe, publish, SIGTERM ws1, wait until everyone is back and ws1 is restarted."""
    key, port = APP["PUSHER_APP_KEY"], cluster.ports["LB_PORT"]
    backend = pusher.Pusher(
        app_id=APP["PUSHER_APP_ID"], key=key, secret=APP["PUSHER_APP_SECRET"], host=LOOPBACK, port=port, ssl=False
    )
    metrics = {"ws1": cluster.ports["WS1_METRICS_PORT"], "ws2": cluster.ports["WS2_METRICS_PORT"]}
    cids = [client_id(i) for i in range(CLIENTS)]
    auth_server = AuthServer(app_id=APP["PUSHER_APP_ID"], key=key, secret=APP["PUSHER_APP_SECRET"])
    async with auth_server as auth, JsClients(default_timeout=10) as js:
        # One at a time, so leastconn alternates them between the two nodes.
        for cid in cids:
            params = {"user_id": user_of(cid), "user_info": {"cid": cid}}
            await js.connect(cid, host=LOOPBACK, port=port, key=key, auth_url=auth.channel_auth_url, auth_params=params)
        await asyncio.gather(*(js.subscribe(cid, channel) for cid in cids for channel in CHANNELS))
        before = {name: await asyncio.to_thread(connections, p) for name, p in metrics.items()}

        publisher = Publisher(backend)
        publishing = asyncio.create_task(publisher.run())
        await asyncio.sleep(WARMUP)

        since = js.mark()
        old_pid = cluster.pid("ws1")
        sigterm_at = time.time()
        os.kill(old_pid, signal.SIGTERM)
        await poll(lambda: everyone_back(js, cids, since, old_pid), DRAIN_SECONDS + BACK_WITHIN + 5)
        await asyncio.sleep(TAIL)
        publisher.stop()
        await publishing
        last = max((p.seq for p in publisher.publishes if p.error is None), default=0)
        await poll(lambda: has_last(js, cids, last), 5)

        try:
            new_pid: int | None = await asyncio.to_thread(cluster.wait_for_new_pid, "ws1", old_pid, DRAIN_SECONDS + 15)
        except TimeoutError:
            new_pid = None
        ready = http_ready(f"http://{LOOPBACK}:{cluster.ports['WS1_PORT']}/ready")
        restarted_ready = new_pid is not None and await poll(ready, 15)
        after = (
            {name: await asyncio.to_thread(connections, p) for name, p in metrics.items()} if restarted_ready else {}
        )
        members = {cid: sorted(m["id"] for m in (await js.members(cid, PRESENCE))["members"]) for cid in cids}
        records = {cid: js.events(cid) for cid in cids}

    moves = {cid: move_of(cid, recs, since) for cid, recs in records.items()}
    return RollingRestart(
        sigterm_at=sigterm_at,
        connections_before=before,
        connections_after=after,
        publishes=publisher.publishes,
        records=records,
        since=since,
        members=members,
        old_pid=old_pid,
        new_pid=new_pid,
        restarted_ready=restarted_ready,
        ws1_log=cluster.log("ws1"),
        moved={cid: move for cid, move in moves.items() if move is not None},
    )


def report(run: RollingRestart) -> str:
    """The figures issue 6 asks for, one line each."""
    away = sorted(move.away for move in run.moved.values() if move.away is not None)
    reconnect = sorted(m.connected_at - m.closed_at for m in run.moved.values() if m.connected_at is not None)
    closes = sorted(move.closed_at for move in run.moved.values())
    during = [p for p in run.delivered() if p.started >= run.sigterm_at]
    lines = [
        f"rolling restart: {len(run.moved)} clients moved from ws1, {len(run.survivors)} stayed on ws2; "
        f"drain {DRAIN_SECONDS:g} s; {len(run.publishes)} publishes at {RATE:g}/s, {len(during)} after the SIGTERM",
        f"  closes: first {closes[0] - run.sigterm_at:.2f} s after SIGTERM, span {closes[-1] - closes[0]:.2f} s;"
        f" clients closed more than once: {sum(len(m.closes) > 1 for m in run.moved.values())}"
        if closes
        else "  closes: none",
    ]
    if away:
        lines.append(
            f"  back connected: median {statistics.median(reconnect) * 1000:.0f} ms, max {max(reconnect) * 1000:.0f} ms;"
            f" back and subscribed to both channels: median {statistics.median(away) * 1000:.0f} ms,"
            f" max {max(away) * 1000:.0f} ms"
        )
    for channel in CHANNELS:
        missed = [len(run.missed(cid, channel)) for cid in run.moved]
        lines.append(
            f"  missed on {channel}: {sum(missed)} in total, max {max(missed, default=0)} per moved client"
            f" (of {len(during)} published after the SIGTERM); survivors missed"
            f" {sum(len(run.missed(cid, channel)) for cid in run.survivors)}"
        )
    pairs = presence_changes(run)
    lines.append(
        "  presence seen by survivors: "
        + ", ".join(f"{count} moved members as {kind}" for kind, count in sorted(pairs.items()))
    )
    return "\n".join(lines)


def member_changes(run: RollingRestart, cid: str) -> list[tuple[str, str]]:
    """(`member_added`/`member_removed`, user id) frames client `cid` got on the presence channel since the SIGTERM."""
    return [
        (r.event.removeprefix("pusher_internal:"), str(r.data["user_id"]))
        for r in run.records[cid]
        if r.seq > run.since
        and r.source == "message"
        and r.channel == PRESENCE
        and r.event in ("pusher_internal:member_added", "pusher_internal:member_removed")
    ]


def presence_changes(run: RollingRestart) -> dict[str, int]:
    """How survivors saw each moved member, e.g. {"member_removed+member_added": 760}: one per (survivor, member)."""
    counts: dict[str, int] = {}
    for survivor in run.survivors:
        changes = member_changes(run, survivor)
        for moved in run.moved:
            kinds = "+".join(kind for kind, user in changes if user == user_of(moved)) or "nothing"
            counts[kinds] = counts.get(kinds, 0) + 1
    return counts


@pytest.fixture(scope="module")
def rolling_restart(
    tmp_path_factory: pytest.TempPathFactory, haproxy: str, redis_server: str
) -> Iterator[RollingRestart]:
    require_js_harness()
    directory: Path = tmp_path_factory.mktemp("rolling")
    cluster = LoadBalancedCluster(
        directory, haproxy=haproxy, redis_server=redis_server, app=APP, drain_seconds=DRAIN_SECONDS
    )
    begun = time.monotonic()
    try:
        cluster.start()
        run = asyncio.run(roll(cluster))
    finally:
        cluster.stop()
    print(f"\n{report(run)}\n  run time {time.monotonic() - begun:.1f} s (cluster start to stop)")
    yield run


# --- the drained node -------------------------------------------------------------------------------


def test_leastconn_spreads_the_clients_over_both_nodes(rolling_restart: RollingRestart) -> None:
    assert rolling_restart.connections_before == {"ws1": CLIENTS // 2, "ws2": CLIENTS // 2}


def test_only_the_drained_nodes_clients_are_closed(rolling_restart: RollingRestart) -> None:
    assert len(rolling_restart.moved) == rolling_restart.connections_before["ws1"]
    assert len(rolling_restart.survivors) == rolling_restart.connections_before["ws2"]


def test_drained_node_closes_each_client_with_a_4200_range_code(rolling_restart: RollingRestart) -> None:
    codes = {cid: [close.data["code"] for close in move.closes] for cid, move in rolling_restart.moved.items()}
    assert {cid: c for cid, c in codes.items() if not all(4200 <= code <= 4299 for code in c)} == {}


def test_drained_node_spreads_its_closes_over_the_drain_period(rolling_restart: RollingRestart) -> None:
    closes = sorted(move.closed_at for move in rolling_restart.moved.values())
    assert closes[0] - rolling_restart.sigterm_at < 1.0, "the drain starts at once"
    assert closes[-1] - closes[0] >= DRAIN_SECONDS / 2, "not all at once"
    assert closes[-1] - rolling_restart.sigterm_at <= DRAIN_SECONDS + 1.0, "within the drain period"
    # Evenly: no second of the drain closes more than twice its share.
    share = len(closes) / DRAIN_SECONDS
    busiest = max(sum(1 for t in closes if start <= t < start + 1.0) for start in closes)
    assert busiest <= 2 * share + 1


def test_drained_node_exits_0_and_is_started_again_empty(rolling_restart: RollingRestart) -> None:
    # cluster.sh starts a node again only after it exited 0; any other exit stops the whole cluster.
    assert rolling_restart.new_pid is not None, rolling_restart.ws1_log[-3000:]
    assert rolling_restart.new_pid != rolling_restart.old_pid
    assert not alive(rolling_restart.old_pid)
    assert rolling_restart.restarted_ready, rolling_restart.ws1_log[-3000:]
    assert "drain_finished" in rolling_restart.ws1_log
    assert rolling_restart.connections_after["ws1"] == 0


# --- the moved clients ------------------------------------------------------------------------------


def test_moved_clients_are_back_and_subscribed_within_the_bound(rolling_restart: RollingRestart) -> None:
    late = {
        cid: move.away for cid, move in rolling_restart.moved.items() if move.away is None or move.away > BACK_WITHIN
    }
    assert late == {}


def test_moved_clients_land_on_the_surviving_node(rolling_restart: RollingRestart) -> None:
    assert rolling_restart.connections_after == {"ws1": 0, "ws2": CLIENTS}


def test_moved_clients_get_every_event_published_after_they_resubscribed(rolling_restart: RollingRestart) -> None:
    gaps = {
        (cid, channel): [p.seq for p in rolling_restart.missed(cid, channel) if p.started > subscribed + 0.002]
        for cid, move in rolling_restart.moved.items()
        for channel, subscribed in move.subscribed_at.items()
    }
    assert {key: seqs for key, seqs in gaps.items() if seqs} == {}


def test_moved_clients_miss_only_events_published_while_they_were_away(rolling_restart: RollingRestart) -> None:
    outside = {
        (cid, channel): [
            p.seq
            for p in rolling_restart.missed(cid, channel)
            if p.started < move.closed_at - IN_FLIGHT or p.started > move.subscribed_at.get(channel, float("inf"))
        ]
        for cid, move in rolling_restart.moved.items()
        for channel in CHANNELS
    }
    assert {key: seqs for key, seqs in outside.items() if seqs} == {}


def test_moved_clients_get_no_event_twice_or_out_of_order(rolling_restart: RollingRestart) -> None:
    disordered = {
        (cid, channel): seqs
        for cid in rolling_restart.moved
        for channel in CHANNELS
        if (seqs := rolling_restart.received(cid, channel)) != sorted(set(seqs))
    }
    assert disordered == {}


# --- the clients of the surviving node -------------------------------------------------------------


def test_survivors_get_every_event_once_and_in_order(rolling_restart: RollingRestart) -> None:
    expected = [p.seq for p in rolling_restart.delivered()]
    wrong = {
        (cid, channel): seqs
        for cid in rolling_restart.survivors
        for channel in CHANNELS
        if (seqs := rolling_restart.received(cid, channel)) != expected
    }
    assert wrong == {}


def test_survivors_see_presence_changes_only_for_members_that_moved(rolling_restart: RollingRestart) -> None:
    moved_users = {user_of(cid) for cid in rolling_restart.moved}
    stray = {
        cid: [(kind, user) for kind, user in member_changes(rolling_restart, cid) if user not in moved_users]
        for cid in rolling_restart.survivors
    }
    assert {cid: changes for cid, changes in stray.items() if changes} == {}


def test_survivors_see_each_moved_member_leave_and_come_back_at_most_once(rolling_restart: RollingRestart) -> None:
    assert set(presence_changes(rolling_restart)) <= {"member_removed+member_added", "nothing"}


def test_every_client_ends_with_every_member(rolling_restart: RollingRestart) -> None:
    everyone = sorted(user_of(client_id(i)) for i in range(CLIENTS))
    assert {cid: ids for cid, ids in rolling_restart.members.items() if ids != everyone} == {}


# --- the publisher ----------------------------------------------------------------------------------


def test_every_publish_through_the_balancer_succeeds_during_the_restart(rolling_restart: RollingRestart) -> None:
    assert [p for p in rolling_restart.publishes if p.error is not None] == []


def test_publisher_runs_from_before_the_sigterm_until_after_everyone_is_back(rolling_restart: RollingRestart) -> None:
    started = [p.started for p in rolling_restart.publishes]
    back = [move.back_at for move in rolling_restart.moved.values() if move.back_at is not None]
    assert started[0] < rolling_restart.sigterm_at - WARMUP / 2
    assert started[-1] > max(back, default=rolling_restart.sigterm_at) + TAIL / 2
