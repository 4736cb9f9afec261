"""The benchmark scenarios. Each starts its own topology and load generator, measures, and stops both.

Every scenario takes a parameter object whose defaults are the full-scale figures of issue 5; the
profiles in ``benchmarks/profiles.py`` shrink them for ``make bench`` and for the CI smoke run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import resource
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks import redis_admin
from benchmarks.console_watch import CONSOLE_TOKEN, ConsoleWatch
from benchmarks.histogram import Histogram
from benchmarks.procstats import MachineCpu, counters_delta, load_average, tcp_counters, total_system_seconds
from benchmarks.publisher import Publisher, flood
from benchmarks.topology import APP_ID, APP_KEY, APP_SECRET, LOOPBACK, Topology, TopologyError, start_topology
from benchmarks.workers import WorkerConfig, WorkerSet
from benchmarks.wsclient import ClientSpec

P99_GATE_MS = 100.0


# -- parameters ---------------------------------------------------------------------------------


@dataclass
class Common:
    """Settings every scenario shares."""

    topology: str = "cluster"
    ws_nodes: int = 2
    workers: int = 4
    connect_concurrency: int = 50
    send_buffer_kb: int = 1024
    hub_variant: str = ""
    client_loop: str = "auto"
    deflate: bool = False  # clients offer permessage-deflate, as browsers do
    hub_env: str = ""  # NAME=VALUE,... added to every hub process's environment (HUB_* settings)
    console_streams: int = 0  # debug-console streams of the app held open on ws node 0 (0: console off)


@dataclass
class BroadcastParams(Common):
    """One channel, many subscribers, a steady event rate."""

    subscribers: int = 10_000
    rate: float = 10.0
    seconds: float = 30.0
    warmup_seconds: float = 1.0
    payload_bytes: int = 0  # pad each event's data with chat-like JSON to about this many bytes


@dataclass
class ChatParams(Common):
    """Many private channels of two members each (one per ws node), a total message rate."""

    channels: int = 5_000
    members: int = 2
    rate: float = 500.0
    seconds: float = 30.0
    warmup_seconds: float = 1.0


@dataclass
class RampParams(Common):
    """One channel; the event rate rises step by step until p99 passes the limit."""

    subscribers: int = 1_000
    start_rate: float = 20.0
    factor: float = 1.25
    max_rate: float = 2_000.0
    step_seconds: float = 5.0
    p99_limit_ms: float = P99_GATE_MS


@dataclass
class IdleParams(Common):
    """Connected, subscribed, silent clients: what each costs in memory and CPU."""

    connections: int = 10_000
    settle_seconds: float = 5.0


@dataclass
class StormParams(Common):
    """One of two ws nodes dies; its clients reconnect to the other at once."""

    clients: int = 5_000
    timeout_seconds: float = 60.0


@dataclass
class FailoverParams(Common):
    """Steady publishes on channels spread over the shards; ``kill -9`` of the primary serving the first one."""

    topology: str = "rediscluster"
    subscribers: int = 300
    channels: int = 3  # on a cluster each on another shard when possible; the first on the victim's
    rate: float = 100.0
    seconds: float = 15.0
    kill_after_seconds: float = 3.0
    settle_seconds: float = 5.0  # after the last publish, how long deliveries may still come


@dataclass
class ConsoleParams(Common):
    """One debug-console stream open while API publishes rise step by step: what the stream shows."""

    console_streams: int = 1
    start_rate: float = 50.0
    factor: float = 2.0
    max_rate: float = 3_200.0
    step_seconds: float = 3.0


@dataclass
class IngestParams(Common):
    """Signed publishes as fast as one HTTP API node answers them."""

    seconds: float = 10.0
    processes: int = 2
    concurrency: int = 16


# -- results ------------------------------------------------------------------------------------


@dataclass
class Target:
    """A figure the issue asks for, and whether this run met it."""

    name: str
    wanted: str
    value: float | None
    met: bool | None


@dataclass
class Result:
    """Everything one scenario run measured; serialised to JSON as is."""

    name: str
    scenario: str
    topology: str
    ws_nodes: int
    params: dict[str, Any]
    connections: int = 0
    connect_failures: int = 0
    latency: dict[str, float | int] | None = None
    expected: int | None = None
    received: int | None = None
    lost: int | None = None
    publish_failures: int = 0
    deliveries_per_s: float | None = None
    measure_seconds: float = 0.0
    hub_cpu_s: float = 0.0
    ws_cpu_s: float = 0.0
    ws_system_cpu_s: float = 0.0
    generator_system_cpu_s: float = 0.0
    hub_cpu_s_per_1000: float | None = None
    redis_cpu_s: float = 0.0
    generator_cpu_s: float = 0.0
    generator_cpu_s_per_1000: float | None = None
    rss_per_connection_kib: float | None = None
    rss_bytes: dict[str, int] = field(default_factory=dict)
    machine_busy: float | None = None
    outside_busy: float | None = None
    load_before: tuple[float, float, float] | None = None
    load_after: tuple[float, float, float] | None = None
    wall_seconds: float = 0.0
    targets: list[Target] = field(default_factory=list)
    gated: bool = False
    gate_failures: list[str] = field(default_factory=list)
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


# -- measuring ----------------------------------------------------------------------------------


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Meter:
    """CPU of the hub, redis and the generator, and the machine's load, over one measurement window."""

    topology: Topology
    workers: WorkerSet | None
    started: float = 0.0
    started_unix: float = 0.0
    hub0: float = 0.0
    ws0: float = 0.0
    ws_sys0: float = 0.0
    gen_sys0: float = 0.0
    redis0: float = 0.0
    redis_by0: dict[str, float] = field(default_factory=dict)
    gen0: float = 0.0
    machine0: MachineCpu | None = None
    load0: tuple[float, float, float] | None = None

    def _gen(self) -> float:
        return (self.workers.cpu_seconds() if self.workers else 0.0) + _self_cpu()

    def start(self) -> None:
        """Open the window."""
        self.started = time.perf_counter()
        self.started_unix = time.time()
        self.hub0 = self.topology.hub_cpu_seconds()
        self.ws0 = self.topology.ws_cpu_seconds()
        self.ws_sys0 = total_system_seconds(self.topology.ws_pids())
        self.gen_sys0 = total_system_seconds(self.workers.pids) if self.workers else 0.0
        self.redis_by0 = self.topology.redis_cpu_by_process()
        self.redis0 = sum(self.redis_by0.values())
        self.gen0 = self._gen()
        self.machine0 = MachineCpu.read()
        self.load0 = load_average()

    def stop(self, result: Result, units: int | None, extra_generator_cpu: float = 0.0) -> None:
        """Close the window and write CPU (per 1,000 ``units``) and load into ``result``."""
        assert self.machine0 is not None
        result.measure_seconds = round(time.perf_counter() - self.started, 3)
        result.extra["measure_window_unix"] = [round(self.started_unix, 3), round(time.time(), 3)]
        result.hub_cpu_s = round(self.topology.hub_cpu_seconds() - self.hub0, 3)
        result.ws_cpu_s = round(self.topology.ws_cpu_seconds() - self.ws0, 3)
        result.ws_system_cpu_s = round(total_system_seconds(self.topology.ws_pids()) - self.ws_sys0, 3)
        if self.workers:
            result.generator_system_cpu_s = round(total_system_seconds(self.workers.pids) - self.gen_sys0, 3)
        redis_by = self.topology.redis_cpu_by_process()
        result.redis_cpu_s = round(sum(redis_by.values()) - self.redis0, 3)
        if redis_by:
            result.extra["redis_cpu_by_process"] = {
                name: round(seconds - self.redis_by0.get(name, 0.0), 3) for name, seconds in redis_by.items()
            }
        result.generator_cpu_s = round(self._gen() - self.gen0 + extra_generator_cpu, 3)
        if units:
            result.hub_cpu_s_per_1000 = round(result.hub_cpu_s * 1000 / units, 5)
            result.generator_cpu_s_per_1000 = round(result.generator_cpu_s * 1000 / units, 5)
            if redis_by:
                result.extra["redis_cpu_s_per_1000"] = round(result.redis_cpu_s * 1000 / units, 5)
        result.machine_busy = round(MachineCpu.read().busy_fraction_since(self.machine0), 3)
        # What the rest of the machine used meanwhile (other tenants), as a share of all CPUs.
        ours = (result.hub_cpu_s + result.redis_cpu_s + result.generator_cpu_s) / (
            max(result.measure_seconds, 1e-9) * (os.cpu_count() or 1)
        )
        result.outside_busy = round(max(0.0, result.machine_busy - ours), 3)
        result.load_before = self.load0
        result.load_after = load_average()


@contextlib.asynccontextmanager
async def running(
    common: Common,
    *,
    reconnect: bool = False,
    with_ws: bool = True,
    workers: bool = True,
    track_sequences: bool = False,
) -> AsyncIterator[tuple[Topology, WorkerSet | None]]:
    """Start the topology and the subscriber processes; stop both (by pid) whatever happens.

    The topology starts on the loop's own (main) thread, on purpose: its children die with the thread that
    started them (PR_SET_PDEATHSIG), and nothing else runs on the loop yet.
    """
    hub_env = dict(item.split("=", 1) for item in common.hub_env.split(",") if item)
    topology = start_topology(
        common.topology,
        common.ws_nodes,
        send_buffer_kb=common.send_buffer_kb,
        with_ws=with_ws,
        hub_variant=common.hub_variant,
        hub_env=hub_env,
        admin_token=CONSOLE_TOKEN if common.console_streams else "",
    )
    worker_set: WorkerSet | None = None
    try:
        if workers:
            config = WorkerConfig(
                APP_KEY,
                APP_SECRET,
                reconnect=reconnect,
                concurrency=common.connect_concurrency,
                loop=common.client_loop,
                deflate=common.deflate,
                track_sequences=track_sequences,
            )
            worker_set = WorkerSet(common.workers, config)
        yield topology, worker_set
    finally:
        try:
            if worker_set is not None:
                await worker_set.shutdown()
        finally:
            topology.close()  # on this thread: see above


async def await_step(workers: WorkerSet, step: int, expected: int, *, idle: float = 3.0, limit: float = 60.0) -> int:
    """Wait until ``expected`` deliveries of ``step`` arrived, or none arrived for ``idle`` s; return the count."""
    began = last_change = time.monotonic()
    last = -1
    while True:
        got = await workers.delivered(step)
        now = time.monotonic()
        if got >= expected:
            return got
        if got != last:
            last, last_change = got, now
        elif now - last_change >= idle or now - began >= limit:
            return got
        await asyncio.sleep(0.05)


async def connect_clients(result: Result, topology: Topology, workers: WorkerSet, specs: list[ClientSpec]) -> None:
    """Connect and subscribe every client; record counts and the WebSocket nodes' RSS growth per connection."""
    before = topology.ws_rss_bytes()
    tcp_before = tcp_counters()
    ws_cpu_before = topology.ws_cpu_seconds()
    started = time.perf_counter()
    failures = await workers.connect(specs)
    elapsed = time.perf_counter() - started
    result.extra["connect_seconds"] = round(elapsed, 2)
    result.extra["connects_per_s"] = round((len(specs) - failures) / max(elapsed, 1e-9), 1)
    # What a connect-and-subscribe costs the ws nodes, whatever the machine's other load did to the wall time.
    result.extra["ws_cpu_ms_per_connect"] = round(
        1000 * (topology.ws_cpu_seconds() - ws_cpu_before) / max(len(specs) - failures, 1), 3
    )
    result.extra["connect_tcp_counters"] = counters_delta(tcp_before, tcp_counters())
    result.connections = len(specs) - failures
    result.connect_failures = failures
    if failures:
        errors = [e for s in await workers.status() for e in s.errors]
        result.extra["connect_errors"] = errors[:10]
    await asyncio.sleep(0.5)
    after = topology.ws_rss_bytes()
    if result.connections:
        result.rss_per_connection_kib = round((after - before) / result.connections / 1024, 2)
    result.rss_bytes = topology.rss_by_process()


def _percentile_curve(hist: Histogram) -> dict[str, float]:
    points = (50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99)
    curve = {f"p{p:g}": hist.percentile_us(p) / 1000 for p in points}
    curve["max"] = hist.max_us / 1000
    return curve


def _record_latency(result: Result, hist: Histogram) -> None:
    result.latency = hist.summary().as_dict()
    result.extra["percentile_curve_ms"] = _percentile_curve(hist)


def _gate_deliveries(result: Result) -> None:
    """The ``make bench`` gate: p99 under 100 ms, nothing lost, nothing failed to publish or connect."""
    result.gated = True
    if result.latency is None or result.latency["count"] == 0:
        result.gate_failures.append("no deliveries measured")
    elif float(result.latency["p99_ms"]) >= P99_GATE_MS:
        outside = (
            f" (other processes used {result.outside_busy:.0%} of the machine meanwhile)" if result.outside_busy else ""
        )
        result.gate_failures.append(f"p99 {result.latency['p99_ms']} ms >= {P99_GATE_MS:g} ms{outside}")
    if result.lost:
        result.gate_failures.append(f"{result.lost} deliveries lost")
    if result.publish_failures:
        result.gate_failures.append(f"{result.publish_failures} publishes failed")
    if result.connect_failures:
        result.gate_failures.append(f"{result.connect_failures} clients failed to subscribe")


def _new_result(name: str, scenario: str, params: Common) -> Result:
    if params.topology == "embedded" and scenario != "storm":
        # Separate `hub serve` processes share nothing, so delivery scenarios run on one.
        params.ws_nodes = 1
    return Result(
        name=name, scenario=scenario, topology=params.topology, ws_nodes=params.ws_nodes, params=asdict(params)
    )


def _api_url(topology: Topology) -> str:
    return f"http://{LOOPBACK}:{topology.api_port}"


async def _steady_publish(
    result: Result,
    topology: Topology,
    workers: WorkerSet,
    *,
    rate: float,
    seconds: float,
    warmup_seconds: float,
    channel_for: Callable[[int], str],
    fanout: int,
    padding: str = "",
) -> Histogram:
    """Warm up (step 0, discarded), then publish at ``rate`` for ``seconds`` (step 1) and wait for delivery."""
    memory_before = await asyncio.to_thread(redis_admin.used_memory, topology.redis_primary_ports())
    async with Publisher(_api_url(topology), APP_ID, APP_KEY, APP_SECRET) as publisher:
        if warmup_seconds > 0:
            sent = await publisher.publish_paced(rate, warmup_seconds, channel_for, step=0)
            await await_step(workers, 0, sent * fanout, idle=2.0)
            await workers.collect()
        publisher.stats = type(publisher.stats)()
        bytes_before = sum(s.bytes_received for s in await workers.status())
        meter = Meter(topology, workers)
        meter.start()
        sent = await publisher.publish_paced(rate, seconds, channel_for, step=1, padding=padding)
        expected = publisher.stats.ok * fanout
        # The schedule's length (events / rate), not the wall time of the loop, which ends at the last send.
        publish_elapsed = sent / rate
        received = await await_step(workers, 1, expected)
        meter.stop(result, received)
        received_bytes = sum(s.bytes_received for s in await workers.status()) - bytes_before
        result.extra["bytes_per_delivery"] = round(received_bytes / max(received, 1), 1)
    hist = (await workers.collect()).get(1, Histogram())
    result.expected = sent * fanout
    result.received = hist.count
    result.lost = max(0, result.expected - hist.count)
    result.publish_failures = publisher.stats.failed
    result.deliveries_per_s = round(hist.count / max(publish_elapsed, 1e-9), 1)
    result.extra["events_published"] = sent
    _per_publish(result, sent)
    if topology.redis_nodes:
        await _redis_memory(result, topology, memory_before)
    result.extra["publish_http_latency_ms"] = publisher.stats.http_latency.summary().as_dict()
    result.extra["publish_statuses"] = publisher.stats.statuses
    statuses = await workers.status()
    result.extra["client_disconnects"] = sum(s.lost for s in statuses)
    result.extra["other_frames"] = sum(s.other_frames for s in statuses)
    topology.check_alive()
    return hist


def _per_publish(result: Result, publishes: int) -> None:
    """CPU per publish, in µs: the hub (API node and ws nodes apart) and Redis; what the replay buffer changes."""
    if not publishes:
        return
    per = 1e6 / publishes
    result.extra["per_publish_us"] = {
        "hub": round(result.hub_cpu_s * per, 1),
        "api_node": round((result.hub_cpu_s - result.ws_cpu_s) * per, 1),
        "ws_nodes": round(result.ws_cpu_s * per, 1),
        "redis": round(result.redis_cpu_s * per, 1),
    }


async def _redis_memory(result: Result, topology: Topology, before: dict[int, int]) -> None:
    """Redis memory after the run against before it (INFO used_memory of the primaries) and the replay streams
    held (count, and MEMORY USAGE of a sample), into ``extra["redis_memory"]``."""
    ports = topology.redis_primary_ports()
    try:
        after = await asyncio.to_thread(redis_admin.used_memory, ports)
        streams = await asyncio.to_thread(redis_admin.replay_streams, ports)
    except redis_admin.ADMIN_ERRORS as exc:
        result.extra["redis_memory"] = {"error": repr(exc)}
        return
    result.extra["redis_memory"] = {
        "used_memory_before": sum(before.values()),
        "used_memory_after": sum(after.values()),
        "used_memory_growth": sum(after.values()) - sum(before.values()),
        "used_memory_by_port": {str(port): after[port] for port in sorted(after)},
        **streams,
    }


# -- scenarios ----------------------------------------------------------------------------------

_WORDS = (
    "hello", "there", "how", "are", "you", "doing", "today", "the", "meeting", "moved", "to", "three", "pm",
    "see", "at", "office", "thanks", "for", "update", "I", "will", "send", "report", "tomorrow", "morning",
    "can", "we", "talk", "about", "release", "sounds", "good", "let", "me", "know",
)  # fmt: skip


def chat_padding(size: int) -> str:
    """JSON appended to an event's data so it weighs about ``size`` bytes: chat messages, as compressible as real ones."""
    if size <= 0:
        return ""
    rng = random.Random(size)
    messages: list[str] = []
    length = 30  # the stamp fields
    while length < size:
        text = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(4, 14)))
        item = f'{{"user":"user{rng.randrange(100)}","text":"{text}","at":{1_700_000_000 + rng.randrange(10**6)}}}'
        messages.append(item)
        length += len(item) + 1
    return ',"messages":[' + ",".join(messages) + "]"


async def broadcast(params: BroadcastParams, name: str = "broadcast") -> Result:
    """``subscribers`` on one public channel spread over the ws nodes; ``rate`` events/s for ``seconds``."""
    result = _new_result(name, "broadcast", params)
    async with running(params) as (topology, workers):
        assert workers is not None
        ports = topology.ws_ports
        specs = [ClientSpec(((LOOPBACK, ports[i % len(ports)]),), "bench-broadcast") for i in range(params.subscribers)]
        await connect_clients(result, topology, workers, specs)
        hist = await _steady_publish(
            result,
            topology,
            workers,
            rate=params.rate,
            seconds=params.seconds,
            warmup_seconds=params.warmup_seconds,
            channel_for=lambda i: "bench-broadcast",
            fanout=result.connections,
            padding=chat_padding(params.payload_bytes),
        )
        _record_latency(result, hist)
    _gate_deliveries(result)
    p99 = float(result.latency["p99_ms"]) if result.latency else None
    result.targets.append(
        Target(f"{name} p99", "<= 50 ms, zero loss", p99, p99 is not None and p99 <= 50 and not result.lost)
    )
    return result


async def chat(params: ChatParams, name: str = "chat") -> Result:
    """``channels`` private channels of ``members`` each, members spread over the nodes; ``rate`` messages/s."""
    result = _new_result(name, "chat", params)
    async with running(params) as (topology, workers):
        assert workers is not None
        ports = topology.ws_ports
        specs = [
            ClientSpec(((LOOPBACK, ports[m % len(ports)]),), f"private-chat-{c}")
            for c in range(params.channels)
            for m in range(params.members)
        ]
        await connect_clients(result, topology, workers, specs)
        channels = params.channels
        hist = await _steady_publish(
            result,
            topology,
            workers,
            rate=params.rate,
            seconds=params.seconds,
            warmup_seconds=params.warmup_seconds,
            channel_for=lambda i: f"private-chat-{(i * 7919) % channels}",
            fanout=params.members,
        )
        _record_latency(result, hist)
    _gate_deliveries(result)
    return result


async def ramp(params: RampParams, name: str = "ramp") -> Result:
    """Raise the event rate on one channel until p99 passes the limit; report every step."""
    result = _new_result(name, "ramp", params)
    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    best_hist: Histogram | None = None
    async with running(params) as (topology, workers):
        assert workers is not None
        ports = topology.ws_ports
        specs = [ClientSpec(((LOOPBACK, ports[i % len(ports)]),), "bench-ramp") for i in range(params.subscribers)]
        await connect_clients(result, topology, workers, specs)
        fanout = result.connections
        rate = params.start_rate
        step = 0
        console: ConsoleWatch | None = None
        if params.console_streams:
            console = ConsoleWatch(LOOPBACK, topology.ws_nodes[0].admin_port, APP_ID, params.console_streams)
            await console.start()
        async with contextlib.AsyncExitStack() as stack:
            if console is not None:
                stack.push_async_callback(console.stop)
            publisher = await stack.enter_async_context(Publisher(_api_url(topology), APP_ID, APP_KEY, APP_SECRET))
            while rate <= params.max_rate:
                step += 1
                publisher.stats = type(publisher.stats)()
                meter = Meter(topology, workers)
                meter.start()
                if console is not None:
                    console.take()
                sent = await publisher.publish_paced(rate, params.step_seconds, lambda i: "bench-ramp", step=step)
                elapsed = sent / rate  # the schedule's length
                expected = publisher.stats.ok * fanout
                received = await await_step(workers, step, expected, idle=2.0)
                probe = _new_result(name, "ramp", params)
                meter.stop(probe, received)
                hist = (await workers.collect()).get(step, Histogram())
                summary = hist.summary()
                lost = max(0, sent * fanout - received)
                row = {
                    "step": step,
                    "events_per_s": round(rate, 1),
                    "offered_deliveries_per_s": round(rate * fanout, 1),
                    "deliveries_per_s": round(received / max(elapsed, 1e-9), 1),
                    "expected": sent * fanout,
                    "received": received,
                    "lost": lost,
                    "publish_failures": publisher.stats.failed,
                    "hub_cpu_s_per_1000": probe.hub_cpu_s_per_1000,
                    "generator_cpu_s_per_1000": probe.generator_cpu_s_per_1000,
                    "hub_cpu_s": probe.hub_cpu_s,
                    "redis_cpu_s": probe.redis_cpu_s,
                    "redis_cpu_s_per_1000": probe.extra.get("redis_cpu_s_per_1000"),
                    "redis_cpu_by_process": probe.extra.get("redis_cpu_by_process"),
                    "machine_busy": probe.machine_busy,
                    "outside_busy": probe.outside_busy,
                    **summary.as_dict(),
                }
                if console is not None:
                    shown = console.take()
                    row["console_shown_per_s"] = round(shown.shown / max(elapsed, 1e-9), 1)
                    row["console_not_shown_per_s"] = round(shown.not_shown / max(elapsed, 1e-9), 1)
                steps.append(row)
                passed = summary.p99_ms < params.p99_limit_ms and lost == 0 and publisher.stats.failed == 0
                row["passed"] = passed
                if not passed or not topology.ws_pids() or len(topology.ws_pids()) < len(topology.ws_nodes):
                    break
                best, best_hist = row, hist
                rate *= params.factor
        with contextlib.suppress(TopologyError):
            topology.check_alive()
    result.extra["steps"] = steps
    if best is not None and best_hist is not None:
        _record_latency(result, best_hist)
        result.expected = best["expected"]
        result.received = best["received"]
        result.lost = best["lost"]
        result.deliveries_per_s = best["deliveries_per_s"]
        result.hub_cpu_s = best["hub_cpu_s"]
        result.hub_cpu_s_per_1000 = best["hub_cpu_s_per_1000"]
        result.generator_cpu_s_per_1000 = best["generator_cpu_s_per_1000"]
        result.machine_busy = best["machine_busy"]
        result.outside_busy = best["outside_busy"]
        result.extra["best_step"] = best["step"]
        result.redis_cpu_s = best["redis_cpu_s"]
        if best["redis_cpu_by_process"]:
            result.extra["redis_cpu_by_process"] = best["redis_cpu_by_process"]
            result.extra["redis_cpu_s_per_1000"] = best["redis_cpu_s_per_1000"]
    result.extra["stopped_by"] = steps[-1] if steps and not steps[-1]["passed"] else "max_rate"
    if params.ws_nodes >= 2:
        value = result.deliveries_per_s
        result.targets.append(
            Target(f"{name} sustained deliveries/s", ">= 150,000 at p99 < 100 ms", value, (value or 0) >= 150_000)
        )
    return result


async def _snapshot_allocations(topology: Topology) -> None:
    """Ask every ws node running the ``tracemalloc`` variant for a snapshot (it takes a few seconds)."""
    for pid in topology.ws_pids():
        os.kill(pid, signal.SIGUSR2)
    await asyncio.sleep(5.0)


async def idle(params: IdleParams, name: str = "idle") -> Result:
    """``connections`` subscribed clients that receive nothing: RSS per connection and idle CPU."""
    result = _new_result(name, "idle", params)
    async with running(params) as (topology, workers):
        assert workers is not None
        ports = topology.ws_ports
        specs = [ClientSpec(((LOOPBACK, ports[i % len(ports)]),), f"idle-{i % 100}") for i in range(params.connections)]
        tracing = "tracemalloc=" in params.hub_variant
        if tracing:
            await _snapshot_allocations(topology)
        await connect_clients(result, topology, workers, specs)
        meter = Meter(topology, workers)
        meter.start()
        await asyncio.sleep(params.settle_seconds)
        meter.stop(result, None)
        if tracing:
            await _snapshot_allocations(topology)
        before = sum(result.rss_bytes.values())
        result.rss_bytes = topology.rss_by_process()
        result.extra["rss_after_settle_bytes"] = sum(result.rss_bytes.values())
        result.extra["rss_after_connect_bytes"] = before
        result.extra["idle_hub_cpu_percent"] = round(100 * result.hub_cpu_s / max(result.measure_seconds, 1e-9), 2)
        topology.check_alive()
    value = result.rss_per_connection_kib
    result.targets.append(Target("idle RSS per connection", "<= 20 KiB", value, value is not None and value <= 20))
    return result


async def storm(params: StormParams, name: str = "storm") -> Result:
    """Kill -9 the ws node holding ``clients``; time until all are subscribed again on the other node."""
    result = _new_result(name, "storm", params)
    params.ws_nodes = max(2, params.ws_nodes)
    result.ws_nodes = params.ws_nodes
    async with running(params, reconnect=True) as (topology, workers):
        assert workers is not None
        victim, survivor = topology.ws_nodes[0], topology.ws_nodes[1]
        urls = ((LOOPBACK, victim.port), (LOOPBACK, survivor.port))
        specs = [ClientSpec(urls, "bench-storm") for _ in range(params.clients)]
        await connect_clients(result, topology, workers, specs)
        topology.ws_nodes.remove(victim)  # from here on, hub CPU and RSS are the survivors'
        if topology.api_node is victim:
            topology.api_node = survivor
        meter = Meter(topology, workers)
        meter.start()
        tcp_before = tcp_counters()
        killed_ns = time.time_ns()
        await asyncio.to_thread(victim.kill)
        topology.children.remove(victim)
        deadline = time.monotonic() + params.timeout_seconds
        while time.monotonic() < deadline:
            statuses = await workers.status(since_ns=killed_ns)
            if sum(s.resubscribed_since for s in statuses) >= result.connections:
                break
            await asyncio.sleep(0.05)
        statuses = await workers.status(since_ns=killed_ns, with_times=True)
        meter.stop(result, result.connections)
        # Machine-wide, so other processes' connects count too; on an otherwise quiet loopback they are ours.
        result.extra["storm_tcp_counters"] = counters_delta(tcp_before, tcp_counters())
        back = sorted(t for s in statuses for t in s.resubscribe_times_ns)
        delays = Histogram()
        for t in back:
            delays.record((t - killed_ns) // 1000)
        result.latency = delays.summary().as_dict()
        result.extra["percentile_curve_ms"] = _percentile_curve(delays)
        result.extra["clients_back"] = len(back)
        result.extra["clients_lost_connection"] = sum(s.lost for s in statuses)
        storm_seconds = (back[-1] - killed_ns) / 1e9 if len(back) >= result.connections else None
        result.extra["storm_seconds"] = round(storm_seconds, 3) if storm_seconds is not None else None
        # Everyone back should also receive: one event, one delivery per client.
        async with Publisher(_api_url(topology), APP_ID, APP_KEY, APP_SECRET) as publisher:
            await publisher.publish_paced(1.0, 1.0, lambda i: "bench-storm", step=7)
        result.expected = result.connections
        result.received = await await_step(workers, 7, result.connections, idle=2.0, limit=15.0)
        result.lost = result.expected - result.received
        result.publish_failures = publisher.stats.failed
        result.rss_bytes = topology.rss_by_process()
    value = result.extra.get("storm_seconds")
    result.targets.append(
        Target(f"storm: {params.clients} clients back", "<= 10 s", value, value is not None and value <= 10)
    )
    return result


async def console(params: ConsoleParams, name: str = "console") -> Result:
    """API publishes at rising rates (nobody subscribed) with console streams open on ws node 0.

    Each step reports the publishes the API answered per second and what the streams showed and were
    told they did not show, per second: with the default ``--console-max-events`` the stream shows up to
    that rate; with it raised (``hub_env=HUB_CONSOLE_MAX_EVENTS=...``) the step where "not shown" first
    appears is what the stream itself carries.
    """
    result = _new_result(name, "console", params)
    steps: list[dict[str, Any]] = []
    async with running(params, workers=False) as (topology, _):
        watch = ConsoleWatch(LOOPBACK, topology.ws_nodes[0].admin_port, APP_ID, max(1, params.console_streams))
        await watch.start()
        try:
            async with Publisher(_api_url(topology), APP_ID, APP_KEY, APP_SECRET) as publisher:
                rate, step = params.start_rate, 0
                while rate <= params.max_rate:
                    step += 1
                    publisher.stats = type(publisher.stats)()
                    watch.take()
                    started = time.monotonic()
                    await publisher.publish_paced(rate, params.step_seconds, lambda i: "bench-console", step=step)
                    await asyncio.sleep(1.5)  # the last batches and the last "not shown" count
                    elapsed = time.monotonic() - started - 1.5
                    counts = watch.take()
                    steps.append(
                        {
                            "step": step,
                            "offered_per_s": round(rate, 1),
                            "published_per_s": round(publisher.stats.ok / max(elapsed, 1e-9), 1),
                            "shown_per_s": round(counts.shown / max(elapsed, 1e-9), 1),
                            "not_shown_per_s": round(counts.not_shown / max(elapsed, 1e-9), 1),
                        }
                    )
                    rate *= params.factor
        finally:
            await watch.stop()
        topology.check_alive()
    result.extra["console_steps"] = steps
    dropping = [s for s in steps if s["not_shown_per_s"] > 0]
    shown_before = [s["shown_per_s"] for s in steps if s["not_shown_per_s"] == 0]
    result.extra["shown_per_s_before_dropping"] = max(shown_before) if shown_before else 0.0
    result.extra["first_dropping_step"] = dropping[0]["step"] if dropping else None
    result.deliveries_per_s = max((s["shown_per_s"] for s in steps), default=0.0)
    return result


async def ingest(params: IngestParams, name: str = "ingest") -> Result:
    """Signed ``POST /events`` as fast as one API node answers, from several publisher processes."""
    result = _new_result(name, "ingest", params)
    async with running(params, with_ws=False, workers=False) as (topology, _):
        memory_before = await asyncio.to_thread(redis_admin.used_memory, topology.redis_primary_ports())
        meter = Meter(topology, None)
        meter.start()
        stats = await flood(
            _api_url(topology),
            APP_ID,
            APP_KEY,
            APP_SECRET,
            duration=params.seconds,
            processes=params.processes,
            concurrency=params.concurrency,
        )
        meter.stop(result, stats.ok, extra_generator_cpu=stats.cpu_s)
        result.rss_bytes = topology.rss_by_process()
        _per_publish(result, stats.ok)
        if topology.redis_nodes:
            await _redis_memory(result, topology, memory_before)
        topology.check_alive()
    result.latency = stats.http_latency.summary().as_dict()
    result.extra["percentile_curve_ms"] = _percentile_curve(stats.http_latency)
    result.expected = stats.attempted
    result.received = stats.ok
    result.publish_failures = stats.failed
    result.deliveries_per_s = round(stats.ok / max(stats.elapsed_s, 1e-9), 1)
    result.extra["publishes_per_s"] = result.deliveries_per_s
    result.extra["statuses"] = stats.statuses
    return result


def _failover_channels(topology: Topology, count: int) -> tuple[list[str], int]:
    """``count`` channel names and the port of the primary to kill, which serves the first of them.

    On a Redis Cluster the channels are picked so that each is served by another primary (as far as there
    are primaries); elsewhere every channel is on the one primary.
    """
    primaries = topology.redis_primary_ports()
    if topology.kind != "rediscluster":
        return [f"failover-{i}" for i in range(count)], primaries[0]
    chosen: list[str] = []
    owners: list[int] = []
    for i in range(10_000):
        channel = f"failover-{i}"
        owner = redis_admin.owner_port(primaries, redis_admin.channel_slot(APP_ID, channel))
        if owner not in owners or len(set(owners)) == len(primaries):
            chosen.append(channel)
            owners.append(owner)
        if len(chosen) == count:
            break
    return chosen, owners[0]


async def _wait_for_new_primary(topology: Topology, victim_port: int, probe_channel: str, limit: float) -> float | None:
    """Seconds (monotonic clock) at which Redis had promoted a replica in the victim's place; None if not in time."""

    def promoted() -> str | None:
        try:
            if topology.kind == "rediscluster":
                live = [c.port for c in topology.redis_nodes if c.running()]
                owner = redis_admin.owner_port(live, redis_admin.channel_slot(APP_ID, probe_channel))
                return None if owner != victim_port else "not yet"
            for sentinel in topology.sentinels:
                address = redis_admin.command(
                    sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "hubmaster", timeout=0.5
                )
                if address and int(address[1]) != victim_port:
                    return None
        except (LookupError, OSError, redis_admin.RedisError) as exc:
            return repr(exc)
        return "not yet"

    try:
        await asyncio.to_thread(redis_admin.wait_for, promoted, limit, "a new primary")
    except TimeoutError:
        return None
    return time.monotonic()


def _analyse_failover(
    result: Result,
    channels: list[str],
    answers: dict[int, tuple[int, int]],
    scheduled_ns: Callable[[int], int],
    subscribers: list[tuple[str, list[int], bool]],
    first_seen: dict[int, int],
    killed_ns: int,
) -> None:
    """Per channel: publishes accepted/refused, deliveries lost/doubled/out of order, and when delivery resumed."""
    per_channel: dict[str, dict[str, Any]] = {}
    total_lost = total_dupes = total_disorder = dropped = 0
    for index, channel in enumerate(channels):
        mine = [n for n in answers if n % len(channels) == index]
        accepted = {n for n in mine if answers[n][0] == 200}
        refused = [n for n in mine if answers[n][0] == 503]
        failed = [n for n in mine if answers[n][0] not in (200, 503)]
        lost = dupes = disorder = 0
        members = 0
        delivered_refused: set[int] = set()
        for sub_channel, numbers, was_dropped in subscribers:
            if sub_channel != channel:
                continue
            if was_dropped:
                dropped += 1
                continue
            members += 1
            got = set(numbers)
            lost += len(accepted - got)
            dupes += len(numbers) - len(got)
            disorder += sum(1 for a, b in itertools.pairwise(numbers) if b < a)
            delivered_refused |= got - accepted
        after_kill = sorted(n for n in mine if scheduled_ns(n) >= killed_ns and n in first_seen)
        resume_s = (first_seen[after_kill[0]] - killed_ns) / 1e9 if after_kill else None
        # The longest time without any new event on the channel around the kill, as subscribers saw it.
        seen = sorted(first_seen[n] for n in mine if n in first_seen)
        gap_s = max(((b - a) / 1e9 for a, b in itertools.pairwise(seen)), default=None)
        refused_window = (
            [
                round((scheduled_ns(refused[0]) - killed_ns) / 1e9, 3),
                round((scheduled_ns(refused[-1]) - killed_ns) / 1e9, 3),
            ]
            if refused
            else None
        )
        per_channel[channel] = {
            "subscribers": members,
            "published": len(mine),
            "accepted": len(accepted),
            "refused_503": len(refused),
            "failed_other": len(failed),
            "refused_window_s": refused_window,
            "lost": lost,
            "duplicates": dupes,
            "out_of_order": disorder,
            "refused_but_delivered": len(delivered_refused),
            "resume_seconds": round(resume_s, 3) if resume_s is not None else None,
            "longest_gap_seconds": round(gap_s, 3) if gap_s is not None else None,
        }
        total_lost += lost
        total_dupes += dupes
        total_disorder += disorder
    victim = per_channel[channels[0]]
    result.extra["failover_channels"] = per_channel
    result.extra["resume_seconds"] = victim["resume_seconds"]
    result.extra["longest_gap_seconds"] = victim["longest_gap_seconds"]
    result.extra["refused_503"] = sum(c["refused_503"] for c in per_channel.values())
    result.extra["failed_other"] = sum(c["failed_other"] for c in per_channel.values())
    result.extra["duplicates"] = total_dupes
    result.extra["out_of_order"] = total_disorder
    result.extra["subscribers_dropped"] = dropped
    result.lost = total_lost
    result.expected = sum(c["accepted"] * c["subscribers"] for c in per_channel.values())
    result.received = result.expected - total_lost
    result.publish_failures = result.extra["refused_503"] + result.extra["failed_other"]


async def failover(params: FailoverParams, name: str = "failover") -> Result:
    """``kill -9`` the Redis primary serving a subscribed channel while events flow through the HTTP API.

    Every subscriber checks the sequence numbers it gets; the result has, per channel, the publishes refused
    (503), the ones answered 200 that a subscriber who stayed connected never got (lost: must be 0),
    duplicates, and the time from the kill to the first delivery of an event published after it.
    """
    result = _new_result(name, "failover", params)
    if params.topology not in ("rediscluster", "sentinel"):
        raise ValueError("the failover scenario runs on the rediscluster or sentinel topology")
    async with running(params, track_sequences=True) as (topology, workers):
        assert workers is not None
        channels, victim_port = await asyncio.to_thread(_failover_channels, topology, params.channels)
        victim = topology.redis_child(victim_port)
        result.extra["victim"] = f"{victim.name} (:{victim_port})"
        result.extra["channels"] = channels
        ports = topology.ws_ports
        specs = [
            ClientSpec(((LOOPBACK, ports[i % len(ports)]),), channels[(i // len(ports)) % len(channels)])
            for i in range(params.subscribers)
        ]
        await connect_clients(result, topology, workers, specs)
        memory_before = await asyncio.to_thread(redis_admin.used_memory, topology.redis_primary_ports())
        answers: dict[int, tuple[int, int]] = {}
        killed_ns = 0
        promoted_at: float | None = None
        async with Publisher(_api_url(topology), APP_ID, APP_KEY, APP_SECRET, connections=512) as publisher:
            await publisher.publish_paced(params.rate, 1.0, lambda i: channels[i % len(channels)], step=0)
            publisher.stats = type(publisher.stats)()
            meter = Meter(topology, workers)
            meter.start()
            start_ns = time.time_ns()
            interval_ns = 1e9 / params.rate

            def on_answer(n: int, status: int) -> None:
                answers[n] = (status, time.time_ns())

            publishing = asyncio.create_task(
                publisher.publish_paced(
                    params.rate, params.seconds, lambda i: channels[i % len(channels)], step=1, on_answer=on_answer
                )
            )
            await asyncio.sleep(params.kill_after_seconds)
            killed_ns = time.time_ns()
            killed_at = time.monotonic()
            await asyncio.to_thread(victim.kill)
            promotion = asyncio.create_task(
                _wait_for_new_primary(topology, victim_port, channels[0], params.seconds + 30)
            )
            sent = await publishing
            await asyncio.sleep(params.settle_seconds)
            promoted_at = await promotion
            meter.stop(result, None)
        topology.children.remove(victim)
        await _redis_memory(result, topology, memory_before)
        subscribers, first_seen = await workers.sequences()
        hist = (await workers.collect()).get(1, Histogram())
        _record_latency(result, hist)
        result.extra["events_published"] = sent
        result.extra["publish_statuses"] = publisher.stats.statuses
        result.extra["publish_http_latency_ms"] = publisher.stats.http_latency.summary().as_dict()
        result.extra["promoted_seconds"] = round(promoted_at - killed_at, 3) if promoted_at is not None else None
        result.extra["kill_at_seconds"] = round((killed_ns - start_ns) / 1e9, 3)
        _analyse_failover(
            result,
            channels,
            answers,
            lambda n: start_ns + int(n * interval_ns),
            subscribers,
            first_seen,
            killed_ns,
        )
        topology.check_alive()
    return result


Runner = Callable[[Any, str], Any]
SCENARIOS: dict[str, tuple[type[Common], Runner]] = {
    "broadcast": (BroadcastParams, broadcast),
    "chat": (ChatParams, chat),
    "ramp": (RampParams, ramp),
    "idle": (IdleParams, idle),
    "storm": (StormParams, storm),
    "ingest": (IngestParams, ingest),
    "console": (ConsoleParams, console),
    "failover": (FailoverParams, failover),
}
