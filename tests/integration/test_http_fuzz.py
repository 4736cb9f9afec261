"""Seeded fuzzing of a live `hub serve` over loopback: the HTTP API and the WebSocket endpoint.

A `random.Random(SEED)` builds a few hundred malformed or mutated requests and frames, so every run
sends the same bytes; a failure names the case number and what was sent. The server must answer each
HTTP request with a 4xx and a JSON error body (or 200 and a JSON object when the mutation happened to
be valid), answer bad frames with `pusher:error` or nothing, close sockets only with a Pusher close
code, and keep serving: health 200 and a real pusher-js delivery afterwards. Counts and time are
bounded (the whole module well under 30 s on a busy 2-core machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import socket
import string
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_from_bytes, unquote

import aiohttp
import pusher
import pytest
from pusher.http import make_query_string
from pusher.signature import sign
from yarl import URL

from tests.support.js_clients import JsClients
from tests.support.names import unique
from tests.support.ports import LOOPBACK
from tests.support.processes import ManagedProcess
from tests.support.topology import start_embedded

SEED = 20261126
HTTP_CASES = 320
WS_CASES = 240
MAX_MESSAGE_BYTES = 256 * 1024  # hub's default --max-message-kb
APPS = {
    "1": ("app-key", "app-secret"),
    "2": ("limited-key", "limited-secret"),
    "3": ("disabled-key", "disabled-secret"),
}
METHODS = ["GET", "POST", "POST", "POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
SERVER_FRAMES = {
    "pusher:error",
    "pusher:pong",
    "pusher_internal:subscription_succeeded",
    "pusher:subscription_error",
    "pusher:signin_success",
    "pusher:cache_miss",
    "pusher_internal:member_added",
    "pusher_internal:member_removed",
    "pusher_internal:subscription_count",
}


@dataclass
class Served:
    process: ManagedProcess
    port: int

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`hub serve` with the test apps, just for the fuzzer (a crash here breaks no other module)."""
    topology = start_embedded(tmp_path_factory.mktemp("fuzz"), "--drain-seconds", "0")
    try:
        yield Served(topology.processes[0], topology.api_port)
    finally:
        topology.close()


# --- generators ------------------------------------------------------------------------------------


def junk_text(rng: random.Random, limit: int = 40) -> str:
    """Random text: ASCII, punctuation, non-Latin letters, emoji, NUL, lone surrogates."""
    alphabet = string.printable + "é漢字🎉\x00\ud800\udfff" + "#-_=@,.;"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, limit)))


def pct(data: bytes) -> str:
    """Percent-encode everything but unreserved characters."""
    return quote_from_bytes(data, safe="")


def path_segment(rng: random.Random) -> str:
    """A path segment, already percent-encoded: plausible, junk, invalid UTF-8, traversal or very long."""
    choice = rng.randrange(12)
    if choice == 0:
        return rng.choice(["1", "2", "3", "999", "0", "-1", "01", "abc"])
    if choice == 1:
        return pct(rng.randbytes(rng.randint(1, 12)))  # often invalid UTF-8
    if choice == 2:
        return rng.choice(
            ["..", ".", "%2e%2e", "%2F", "%00", "%ZZ", "%", "presence-", "private-", "%23server-to-user-1"]
        )
    if choice == 3:
        return "x" * rng.choice([201, 1000, 5000])
    if choice == 4:
        return pct(junk_text(rng).encode("utf-8", "surrogatepass"))
    return rng.choice(["presence-room", "private-chat", "news", "cache-x", "u1", "a.b"]) + rng.choice(["", "-1", "@"])


# Endpoint templates with the method each expects; most cases use it, the rest a random one.
ENDPOINTS = [
    ("POST", "/apps/{a}/events"),
    ("POST", "/apps/{a}/events"),
    ("POST", "/apps/{a}/events"),
    ("POST", "/apps/{a}/events"),
    ("POST", "/apps/{a}/events"),
    ("POST", "/apps/{a}/batch_events"),
    ("POST", "/apps/{a}/batch_events"),
    ("POST", "/apps/{a}/batch_events"),
    ("GET", "/apps/{a}/channels"),
    ("GET", "/apps/{a}/channels"),
    ("GET", "/apps/{a}/channels/{s}"),
    ("GET", "/apps/{a}/channels/{s}/users"),
    ("POST", "/apps/{a}/users/{s}/terminate_connections"),
    ("POST", "/apps/{a}/users/{s}/events"),
    ("POST", "/users/{s}/terminate_connections"),
    ("GET", "/apps/{a}/{s}"),
    ("POST", "/apps/{a}/events/{s}"),
    ("GET", "/apps/"),
    ("POST", "/{s}"),
]


def method_and_path(rng: random.Random) -> tuple[str, str]:
    method, template = rng.choice(ENDPOINTS)
    if rng.random() < 0.2:
        method = rng.choice(METHODS)
    app = rng.choice(["1", "1", "1", "2", "2", "3"]) if rng.random() < 0.9 else path_segment(rng)
    return method, template.format(a=app, s=path_segment(rng))


def wrong_value(rng: random.Random) -> Any:
    """A value of a random (usually wrong) JSON type."""
    return rng.choice(
        [
            None,
            True,
            0,
            -1,
            2**70,
            1e308,
            -0.0,
            "",
            junk_text(rng),
            "x" * rng.choice([201, 2000, 20_000]),
            [],
            [1, "a", None],
            {},
            {"nested": {"deeper": [1, {"x": None}]}},
            ["news"] * rng.choice([1, 100, 101, 500]),
            "1.1",
            "123.456",
        ]
    )


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth if depth % 2 else '{"a":' * depth + "1" + "}" * depth


def body(rng: random.Random, path_: str) -> bytes:
    """A garbage, mutated or (sometimes) valid request body."""
    choice = rng.randrange(12)
    if choice == 0:
        return b""
    if choice == 1:
        return rng.randbytes(rng.randint(1, 300))  # random bytes, usually invalid UTF-8
    if choice == 2:
        return nested(rng.choice([50, 1000, 100_000])).encode()
    if choice == 3:
        return rng.choice([b"[]", b"null", b"42", b'"s"', b"{", b'{"name":', b"\xef\xbb\xbf{}", b"{}" * 3])
    if choice == 4 and rng.random() < 0.3:  # huge: over the 4 MB body limit (and the 8 MB read limit)
        return b'{"name":"e","data":"' + b"x" * rng.choice([5 * 1024 * 1024, 9 * 1024 * 1024]) + b'","channel":"c"}'
    event: dict[str, Any] = {"name": "fuzz", "data": '{"n":1}', "channel": f"fuzz-{rng.randrange(1000)}"}
    if rng.random() < 0.5:
        event["channels"] = [f"fuzz-{rng.randrange(1000)}"]
    for key in rng.sample(["name", "data", "channel", "channels", "socket_id", "info"], rng.randint(1, 3)):
        if rng.random() < 0.2:
            event.pop(key, None)
        else:
            event[key] = wrong_value(rng)
    document: Any = {"batch": [event] * rng.choice([1, 2, 11])} if "batch" in path_ else event
    if rng.random() < 0.15:
        document = {"batch": wrong_value(rng)} if rng.random() < 0.5 else wrong_value(rng)
    text = json.dumps(document)
    if rng.random() < 0.1:  # a valid JSON escape for a lone surrogate
        text = text.replace("fuzz", "\\ud800", 1)
    return text.encode()


def query(rng: random.Random, method: str, path_: str, payload: bytes) -> str:
    """A query string, already encoded: validly signed (over whatever body), partly broken, or junk."""
    extra: dict[str, str] = {}
    for name in rng.sample(["info", "filter_by_prefix", "with_user_info", "auth_version"], rng.randint(0, 2)):
        extra[name] = rng.choice(["user_count", "subscription_count,user_count", "presence-", "", "2.0", "x" * 300])
    app = path_.split("/")[2] if path_.startswith("/apps/") and path_.count("/") >= 2 else "1"
    key, secret = APPS.get(app, APPS["1"])
    params = {
        **extra,
        "auth_key": key,
        "auth_timestamp": f"{time.time():.0f}",
        "auth_version": extra.get("auth_version", "1.0"),
        "body_md5": hashlib.md5(payload).hexdigest(),
    }
    mode = rng.choice([0, 0, 0, 0, 0, 1, 2, 3, 4, 5])  # half validly signed
    if mode == 1:
        params[rng.choice(list(params))] = rng.choice(
            ["", "nan", "inf", "-inf", "1e400", "-1", "9" * 400, "%ZZ", "%FF%FE", junk_text(rng, 10)]
        )
    elif mode == 2:
        params.pop(rng.choice(list(params)))
    # SDKs sign the path as they wrote it, before URL-encoding; the hub checks the decoded path.
    params["auth_signature"] = sign(secret, "\n".join([method, unquote(path_), make_query_string(params)]))
    if mode == 3:
        params["auth_signature"] = rng.choice(["", "0" * 64, "zz", "x" * 5000])
    encoded = "&".join(f"{pct(k.encode())}={pct(v.encode('utf-8', 'surrogatepass'))}" for k, v in params.items())
    if mode == 4:
        encoded += "&" + rng.choice(["auth_key=other", "auth_key", "&&", "%ZZ=1", "a=%FF", "auth_timestamp=0"])
    if mode == 5:
        encoded = rng.choice(["", "?", "auth_key=app-key", pct(rng.randbytes(30)), "a=" + "b" * 6000])
    return encoded


def headers(rng: random.Random) -> dict[str, str]:
    result: dict[str, str] = {}
    if rng.random() < 0.6:
        result["Content-Type"] = rng.choice(
            ["application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "a/b; c=d"]
        )
    if rng.random() < 0.1:
        result["Content-Encoding"] = rng.choice(["gzip", "deflate", "identity", "br", "nonsense"])
    if rng.random() < 0.2:
        result["X-Pusher-Library"] = "".join(rng.choice(string.ascii_letters) for _ in range(rng.choice([5, 2000])))
    if rng.random() < 0.1:
        result["Accept"] = "text/html"
    return result


@dataclass
class HttpCase:
    number: int
    method: str
    url: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False

    def refused_by_http_parser(self) -> bool:
        """aiohttp's parser answers these itself, in plain text, before any hub code runs.

        A request line over its 8190-byte limit, a Content-Encoding it cannot decode at all (brotli without
        the Brotli package) and a compressed body that does not decompress (the parser may fail it before
        the handler runs) are HTTP-level errors; every other bad request reaches the hub. A hub handler
        that reads such a body answers JSON (test_http_errors covers it).
        """
        encoding = self.headers.get("Content-Encoding")
        return len(self.url) > 8000 or encoding == "br" or (encoding in ("gzip", "deflate") and bool(self.body))

    def describe(self) -> str:
        shown = self.body[:200] + (b"..." if len(self.body) > 200 else b"")
        return f"case {self.number}: {self.method} {self.url[:300]} headers={self.headers} body={shown!r}"


def http_cases(rng: random.Random, base: str) -> list[HttpCase]:
    cases = []
    for number in range(HTTP_CASES):
        method, path_ = method_and_path(rng)
        payload = body(rng, path_) if method not in ("GET", "HEAD") or rng.random() < 0.1 else b""
        url = f"{base}{path_}?{query(rng, method, path_, payload)}"
        cases.append(HttpCase(number, method, url, payload, headers(rng), chunked=rng.random() < 0.1))
    return cases


# --- checks ----------------------------------------------------------------------------------------


async def send_case(session: aiohttp.ClientSession, case: HttpCase, statuses: Counter[int]) -> str | None:
    """Send one case and count its status; return a description of what was wrong with the answer, or None."""
    kwargs: dict[str, Any] = {"headers": case.headers, "data": case.body or None}
    if case.chunked and case.body:
        kwargs["chunked"] = True
    try:
        async with session.request(case.method, URL(case.url, encoded=True), **kwargs) as response:
            status = response.status
            statuses[status] += 1
            raw = await response.read()
            content_type = response.content_type
    except aiohttp.ClientError as exc:
        if case.refused_by_http_parser():
            return None  # e.g. the parser's plain 400 carries a body even when answering HEAD
        return f"{case.describe()}\n  -> connection failed: {exc!r}"
    if status == 400 and case.refused_by_http_parser():
        return None
    if case.method == "HEAD":
        return None if status == 200 or 400 <= status < 500 else f"{case.describe()}\n  -> HEAD answered {status}"
    try:
        document = json.loads(raw)
    except ValueError:
        return f"{case.describe()}\n  -> {status} {content_type} non-JSON body {raw[:200]!r}"
    if status == 200:
        if isinstance(document, dict):
            return None
        return f"{case.describe()}\n  -> 200 with a non-object body {raw[:200]!r}"
    if not 400 <= status < 500:
        return f"{case.describe()}\n  -> status {status} {raw[:300]!r}"
    if content_type != "application/json" or set(document) != {"error", "code"} or document["code"] != status:
        return f"{case.describe()}\n  -> {status} {content_type} body not {{error, code}}: {raw[:300]!r}"
    if not isinstance(document["error"], str) or not document["error"]:
        return f"{case.describe()}\n  -> {status} error message missing: {raw[:300]!r}"
    return None


async def assert_still_serving(served: Served, js: JsClients) -> None:
    """The process lives, health answers, and a real pusher-js client gets an SDK-triggered event."""
    assert served.process.is_running(), served.process.output()
    async with aiohttp.ClientSession() as session, session.get(served.url("/")) as response:
        assert response.status == 200
    channel = unique("after-fuzz")
    cid = unique("check")
    await js.connect(cid, port=served.port, key="app-key")
    await js.subscribe(cid, channel)
    sdk = pusher.Pusher(app_id="1", key="app-key", secret="app-secret", host=LOOPBACK, port=served.port, ssl=False)
    assert await asyncio.to_thread(sdk.trigger, channel, "alive", {"ok": True}) == {}
    record = await js.wait_for(cid, source="channel", channel=channel, event="alive")
    assert record.data == {"ok": True}


def non_json_log_lines(served: Served) -> list[str]:
    lines = []
    for line in served.process.output(limit=2_000_000).splitlines():
        try:
            json.loads(line)
        except ValueError:
            lines.append(line)
    return lines


# --- HTTP ------------------------------------------------------------------------------------------


async def test_malformed_http_api_requests_get_4xx_json_errors_and_the_server_keeps_serving(
    served: Served, js: JsClients
) -> None:
    rng = random.Random(SEED)
    cases = http_cases(rng, served.url(""))
    started = time.monotonic()
    problems: list[str] = []
    limit = asyncio.Semaphore(6)
    statuses: Counter[int] = Counter()

    async def run(session: aiohttp.ClientSession, case: HttpCase) -> None:
        async with limit:
            problem = await send_case(session, case, statuses)
        if problem:
            problems.append(problem)

    timeout = aiohttp.ClientTimeout(total=15)
    # A fresh connection per request: the server may close one whose request body it did not read.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(run(session, case) for case in cases))
    elapsed = time.monotonic() - started

    assert not problems, f"{len(problems)} of {len(cases)} answers were wrong:\n" + "\n".join(problems[:15])
    assert elapsed < 20, f"the HTTP fuzz took {elapsed:.1f} s"
    # The cases reach every layer: routing, signature, app state, validation, limits, and success.
    assert {200, 400, 401, 403, 404, 405, 413} <= set(statuses), sorted(statuses.items())
    await assert_still_serving(served, js)


async def test_logs_stay_json_lines_when_a_client_sends_a_body_that_does_not_decompress(served: Served) -> None:
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(served.url("/apps/1/events"), data=b"not deflate", headers={"Content-Encoding": "deflate"}) as r,
    ):
        assert r.status == 400

    assert not non_json_log_lines(served), non_json_log_lines(served)[:5]


# --- WebSocket -------------------------------------------------------------------------------------

VALID_FRAMES: list[dict[str, Any]] = [
    {"event": "pusher:ping", "data": {}},
    {"event": "pusher:subscribe", "data": {"channel": "fuzz-public"}},
    {"event": "pusher:subscribe", "data": {"channel": "private-fuzz", "auth": "app-key:" + "0" * 64}},
    {
        "event": "pusher:subscribe",
        "data": {"channel": "presence-fuzz", "auth": "app-key:" + "0" * 64, "channel_data": '{"user_id":"1"}'},
    },
    {"event": "pusher:unsubscribe", "data": {"channel": "fuzz-public"}},
    {"event": "pusher:signin", "data": {"auth": "app-key:" + "0" * 64, "user_data": '{"id":"1"}'}},
    {"event": "client-typing", "channel": "private-fuzz", "data": {"x": 1}},
    {"event": "pusher:pong", "data": {}},
]


def mutate(rng: random.Random, frame: dict[str, Any]) -> Any:
    """A valid message with one field replaced, removed, or the whole message reshaped."""
    message: dict[str, Any] = json.loads(json.dumps(frame))
    choice = rng.randrange(6)
    if choice == 0:
        message[rng.choice(["event", "data", "channel"])] = wrong_value(rng)
    elif choice == 1 and isinstance(message.get("data"), dict) and message["data"]:
        key = rng.choice(list(message["data"]))
        message["data"][key] = wrong_value(rng)
    elif choice == 2:
        message.pop(rng.choice(list(message)))
    elif choice == 3:
        message["data"] = json.dumps(message.get("data"))  # double-encoded data, as some clients send
    elif choice == 4:
        message["event"] = rng.choice(["pusher:", "pusher:unknown", "client-", "x" * 300, "", "pusher_internal:x"])
    else:
        return rng.choice([[message], message.get("data"), None, 7, "pusher:ping"])
    return message


def ws_frame(rng: random.Random) -> str | bytes:
    choice = rng.randrange(7)
    if choice == 0:
        return rng.randbytes(rng.randint(0, 200))
    if choice == 1:
        return junk_text(rng, 200).encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if choice == 2:
        return nested(rng.choice([100, 999, 5000, 40_001]))
    if choice == 3:
        return rng.choice(
            ["", "{", "null", "[]", "{}", '{"event":null}', '{"event":"pusher:ping"', "x" * 70_000, "y" * 300_000]
        )
    return json.dumps(mutate(rng, rng.choice(VALID_FRAMES)))


async def open_socket(session: aiohttp.ClientSession, port: int) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(f"ws://{LOOPBACK}:{port}/app/app-key?protocol=7&client=fuzz", autoping=True)
    hello = json.loads(await ws.receive_str(timeout=5))
    assert hello["event"] == "pusher:connection_established"
    return ws


def sentinel(number: int) -> str:
    """A frame with a recognisable answer that changes nothing: a refused subscribe to a reserved name."""
    return json.dumps({"event": "pusher:subscribe", "data": {"channel": f"#fuzz-sentinel-{number}"}})


async def answers_until_sentinel(
    ws: aiohttp.ClientWebSocketResponse, number: int
) -> tuple[list[dict[str, Any]], int | None]:
    """Frames the server sent in reply, up to the answer to our sentinel; the close code if it closed."""
    replies: list[dict[str, Any]] = []
    while True:
        message = await ws.receive(timeout=5)
        if message.type == aiohttp.WSMsgType.TEXT:
            frame = json.loads(message.data)
            if frame.get("event") == "pusher:subscription_error" and frame.get("channel") == f"#fuzz-sentinel-{number}":
                return replies, None
            replies.append(frame)
        elif message.type == aiohttp.WSMsgType.CLOSE:
            return replies, int(message.data)
        elif message.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            return replies, ws.close_code
        else:
            raise AssertionError(f"unexpected {message.type} from the server")


async def test_fuzzed_websocket_frames_get_pusher_errors_or_silence_and_other_clients_keep_receiving(
    served: Served, js: JsClients
) -> None:
    rng = random.Random(SEED + 1)
    await js.connect("bystander", port=served.port, key="app-key")
    await js.subscribe("bystander", "bystander-news")
    sdk = pusher.Pusher(app_id="1", key="app-key", secret="app-secret", host=LOOPBACK, port=served.port, ssl=False)
    started = time.monotonic()
    log_start = len(served.process.output(limit=10_000_000))
    problems: list[str] = []
    closes = 0
    seen: Counter[str] = Counter()

    async with aiohttp.ClientSession() as session:
        ws = await open_socket(session, served.port)
        for number in range(WS_CASES):
            frame = ws_frame(rng)
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
            await ws.send_str(sentinel(number))
            shown = repr(frame[:160])
            try:
                replies, close_code = await answers_until_sentinel(ws, number)
            except TimeoutError:
                raise AssertionError(f"case {number} {shown}: no answer to a frame sent after it") from None
            for reply in replies:
                event = reply.get("event")
                seen[str(event)] += 1
                if event not in SERVER_FRAMES and not (isinstance(event, str) and event.startswith("client-")):
                    problems.append(f"case {number} {shown}: unexpected reply {reply}")
                if event == "pusher:error" and not isinstance((reply.get("data") or {}).get("code"), int | None):
                    problems.append(f"case {number} {shown}: pusher:error without a numeric code {reply}")
            if close_code is not None:
                closes += 1
                seen[f"close {close_code}"] += 1
                # A frame over --max-message-kb (256 KB) ends the socket (1009, or 1006 when our next frame
                # was still unread as the server closed); anything else may only close with a Pusher code.
                oversize = len(frame if isinstance(frame, bytes) else frame.encode()) > MAX_MESSAGE_BYTES
                if not (4000 <= close_code <= 4999 or oversize):
                    problems.append(f"case {number} {shown}: closed with {close_code}")
                ws = await open_socket(session, served.port)
            if number % 60 == 0:
                # Meanwhile an ordinary client on the same node still gets its events.
                await asyncio.to_thread(sdk.trigger, "bystander-news", "tick", {"n": number})
                await js.wait_for("bystander", source="channel", event="tick", data={"n": number})
        await ws.close()
    elapsed = time.monotonic() - started

    assert not problems, "\n".join(problems[:15])
    assert closes < WS_CASES // 10, f"{closes} of {WS_CASES} frames closed the socket: {seen}"
    assert seen["pusher:error"] > WS_CASES // 2, seen  # the frames reached the parser and were refused
    assert elapsed < 20, f"the WebSocket fuzz took {elapsed:.1f} s"
    assert (await js.state("bystander")).state == "connected"
    await assert_still_serving(served, js)
    logged = served.process.output(limit=10_000_000)[log_start:]
    assert "Traceback" not in logged, logged[-3000:]


# --- the WebSocket framing itself (hub/ws/frame_parser.py behind a live node) -----------------------------------

FRAME_CASES = 80
FAIL_CODES = {1002, 1007, 1009}  # what failing the WebSocket connection may send (RFC 6455 7.4.1)


def bent_frames(rng: random.Random) -> bytes:
    """A few client frames with random opcodes, flags, masks and lengths, sometimes cut or flipped."""
    out = b""
    for _ in range(rng.randrange(1, 4)):
        opcode = rng.choice([0x0, 0x1, 0x1, 0x2, 0x3, 0x8, 0x9, 0xA, 0xB])
        payload = rng.choice([b"", b'{"event":"pusher:ping","data":{}}', bytes(rng.randrange(256) for _ in range(40))])
        flags = rng.choice([0x80, 0x80, 0x80, 0x00, 0xC0, 0xA0, 0x90])
        n = len(payload)
        mask_bit = 0x00 if rng.random() < 0.1 else 0x80
        if rng.random() < 0.1:
            head = bytes((flags | opcode, mask_bit | 127)) + rng.choice([2**63, 2**40, 300_000]).to_bytes(8, "big")
        else:
            head = bytes((flags | opcode, mask_bit | n))
        mask = bytes(rng.randrange(256) for _ in range(4)) if mask_bit else b""
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if mask else payload
        out += head + mask + body
    if rng.random() < 0.2:
        pos = rng.randrange(len(out))
        out = out[:pos] + bytes((out[pos] ^ (1 << rng.randrange(8)),)) + out[pos + 1 :]
    return out


def send_bent(port: int, frames: bytes, deflate: bool) -> tuple[int | None, bytes]:
    """Handshake on a raw socket, send ``frames``; the close code the server sent (None: still open) and its bytes."""
    with socket.create_connection((LOOPBACK, port), timeout=3) as sock:
        offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else ""
        sock.sendall(
            f"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n".encode()
        )
        received = b""
        while b"connection_established" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        sock.sendall(frames)
        sock.settimeout(0.3)
        tail = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                tail += chunk
    close_at = tail.find(b"\x88")
    if close_at < 0 or len(tail) < close_at + 4:
        return None, tail
    return int.from_bytes(tail[close_at + 2 : close_at + 4], "big"), tail


async def test_bent_websocket_frames_fail_the_socket_with_an_rfc_code_and_the_node_keeps_serving(
    served: Served, js: JsClients
) -> None:
    rng = random.Random(SEED + 2)
    log_start = len(served.process.output(limit=10_000_000))
    problems: list[str] = []
    codes: Counter[int | None] = Counter()
    for number in range(FRAME_CASES):
        frames = bent_frames(rng)
        code, tail = await asyncio.to_thread(send_bent, served.port, frames, rng.random() < 0.5)
        codes[code] += 1
        # Besides failing, the server echoes a close frame the client sent (1000 for one without a code).
        if code is not None and not (1000 <= code <= 1014 or 3000 <= code <= 4999):
            problems.append(f"case {number} {frames[:60]!r}: closed with {code} ({tail[-80:]!r})")
    assert not problems, "\n".join(problems[:10])
    assert sum(n for code, n in codes.items() if code in FAIL_CODES) > FRAME_CASES // 4, codes
    await assert_still_serving(served, js)
    logged = served.process.output(limit=10_000_000)[log_start:]
    assert "Traceback" not in logged, logged[-3000:]
