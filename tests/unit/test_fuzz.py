"""Seeded fuzzing of every parser that reads untrusted input.

For each seed in SEEDS, thousands of random and mutated inputs (random bytes, mutated valid frames, deeply
nested JSON, huge numbers, unicode and lone surrogates, a wrong type in every field) go to each parser. The
only allowed outcomes are a valid result (checked against invariants) or the parser's documented exception.
Anything else fails the test naming the seed, the case number and the input. Plain ``random.Random(seed)``
keeps every run identical; to replay one case, run its seed and look at that case number.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import random
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from hub.broker.envelope import Envelope, EnvelopeError, Kind
from hub.protocol.api import TriggerEvent, parse_batch, parse_trigger
from hub.protocol.channels import channel_name_error, user_id_error
from hub.protocol.errors import ApiError
from hub.protocol.limits import Limits
from hub.protocol.messages import InvalidMessage, parse_client_message, parse_signin, parse_subscribe
from hub.protocol.signatures import verify_api_request
from hub.protocol.socket_ids import is_socket_id
from hub.protocol.users import InvalidUserData, parse_channel_data, parse_user_data
from hub.ws.deflate import Deflater
from hub.ws.frame_parser import BINARY, CLOSE, PING, PONG, TEXT, FrameParser, ProtocolViolation, unmask

SEEDS = (1, 2, 3, 5, 8, 13, 21, 1337)
CASES = 1500  # per seed and parser

KEY = "278d425bdf160c739803"
SECRET = "7ad3773142a6692b25b8"
NOW = 1_700_000_000.0

FIELD_NAMES = (
    "event", "channel", "data", "auth", "channel_data", "user_data", "user_id", "user_info", "id", "watchlist",
    "name", "channels", "socket_id", "info", "batch",
)  # fmt: skip

# Characters chosen to break things: the channel alphabet, JSON syntax, controls, NUL, non-BMP, RTL, combining marks,
# digits of other scripts, and lone surrogates (JSON can spell them as escapes).
ODD_CHARS = "-_=@,.;#:/ \\\"'{}[]\t\n\r\x00\x7f\u0085\u00e9\u0661\u200b\u202e\u0301\ufeff\uffff\U0001f600\ud800\udfff"


class Fuzzer:
    """Random inputs from one seeded generator."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def text(self, max_len: int = 24) -> str:
        rng = self.rng
        pool = rng.choice(
            [
                "abcdefghijklmnopqrstuvwxyz0123456789",
                "abcXYZ019_-=@,.;",
                ODD_CHARS,
                "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(8)),
            ]
        )
        text = "".join(rng.choice(pool) for _ in range(rng.randrange(max_len + 1)))
        if self.chance(0.1):
            text = (
                rng.choice(["private-", "presence-", "private-encrypted-", "cache-", "#server-to-user-", "client-"])
                + text
            )
        return text

    def number(self) -> Any:
        rng = self.rng
        return rng.choice(
            [
                0,
                -1,
                rng.randrange(-(10**6), 10**6),
                2**53 + 1,
                2**64,
                -(2**63),
                10**300,
                rng.random() * 10 ** rng.randrange(-20, 300),
                1.5,
                float("nan"),
                float("inf"),
                -0.0,
            ]
        )

    def value(self, depth: int = 0) -> Any:
        """A random JSON value (NaN and infinities included: Python's json reads and writes them)."""
        rng = self.rng
        roll = rng.randrange(10 if depth < 4 else 6)
        if roll == 0:
            return None
        if roll == 1:
            return rng.choice([True, False])
        if roll in (2, 3):
            return self.number()
        if roll in (4, 5):
            return self.text()
        if roll in (6, 7):
            return [self.value(depth + 1) for _ in range(rng.randrange(5))]
        keys = [rng.choice(FIELD_NAMES) if self.chance(0.6) else self.text(8) for _ in range(rng.randrange(6))]
        return {k: self.value(depth + 1) for k in keys}

    def perturb(self, obj: dict[str, Any]) -> dict[str, Any]:
        """``obj`` with fields dropped, given a random value of any type, or added."""
        obj = dict(obj)
        for _ in range(self.rng.randrange(1, 4)):
            roll = self.rng.randrange(4)
            if roll == 0 and obj:
                del obj[self.rng.choice(list(obj))]
            elif roll in (1, 2) and obj:
                obj[self.rng.choice(list(obj))] = self.value()
            else:
                obj[self.rng.choice(FIELD_NAMES)] = self.value()
        return obj

    def dumps(self, value: Any) -> str:
        """JSON text, sometimes with raw (unescaped) unicode and lone surrogates."""
        return json.dumps(value, ensure_ascii=self.chance(0.5), separators=self.rng.choice([(",", ":"), (", ", ": ")]))

    def mutate(self, text: str) -> str:
        """``text`` with a few character-level edits."""
        rng = self.rng
        chars = list(text)
        for _ in range(rng.randrange(1, 5)):
            roll = rng.randrange(6)
            pos = rng.randrange(len(chars) + 1)
            if roll == 0 and chars:
                del chars[min(pos, len(chars) - 1)]
            elif roll == 1:
                chars.insert(pos, rng.choice(ODD_CHARS))
            elif roll == 2 and chars:
                chars[min(pos, len(chars) - 1)] = rng.choice(ODD_CHARS + "0123456789{}[]")
            elif roll == 3:
                end = rng.randrange(pos, len(chars) + 1)
                chars[pos:pos] = chars[pos:end] * rng.randrange(1, 4)
            elif roll == 4:
                chars = chars[:pos]
            else:
                chars.insert(pos, rng.choice(['"', "\\u", "\\ud800", "1e999", "-", "null", "[", "{"]))
        return "".join(chars)

    def deep(self) -> str:
        """JSON nested past the interpreter's recursion limit, closed or not."""
        depth = self.rng.randrange(900, 30_000)
        opener, closer = self.rng.choice([("[", "]"), ('{"a":', "}"), ('{"data":[', "]}")])
        tail = closer * depth if self.chance(0.5) else ""
        return opener * depth + "1" + tail

    def huge_number(self) -> str:
        digits = self.rng.choice([20, 400, 4300, 4301, 10_000])
        return self.rng.choice(["", "-"]) + "9" * digits + self.rng.choice(["", ".5", "e999", "e-999"])

    def junk_bytes(self) -> bytes:
        return bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(64)))

    def text_input(self, valid: list[str], shape: Callable[[], Any]) -> str:
        """One input for a parser of JSON text: mostly near-valid, sometimes garbage."""
        roll = self.rng.randrange(100)
        if roll < 30:
            return self.mutate(self.rng.choice(valid))
        if roll < 55:
            return self.dumps(shape())
        if roll < 65:
            return self.dumps(self.value())
        if roll < 72:
            return self.deep()
        if roll < 78:
            return self.rng.choice(valid).replace("1", self.huge_number(), 1)
        if roll < 88:
            return self.junk_bytes().decode("latin-1")
        return self.rng.choice(valid)

    def bytes_input(self, valid: list[str], shape: Callable[[], Any]) -> bytes:
        """Like text_input, encoded; sometimes raw junk or invalid UTF-8 (lone surrogates encoded as such)."""
        if self.chance(0.1):
            return self.junk_bytes()
        return self.text_input(valid, shape).encode("utf-8", "surrogatepass")


def run(
    seed: int, make_input: Callable[[Fuzzer], Any], call: Callable[[Any], Any], allowed: type[BaseException]
) -> None:
    """Feed CASES inputs to ``call``; fail naming seed, case and input on any outcome but a result or ``allowed``."""
    fuzzer = Fuzzer(seed)
    failures: list[str] = []
    for case in range(CASES):
        value = make_input(fuzzer)
        try:
            call(value)
        except allowed:
            pass
        except Exception as exc:
            shown = repr(value)
            shown = shown if len(shown) <= 300 else shown[:300] + f"... ({len(shown)} chars)"
            failures.append(f"seed={seed} case={case} input={shown}: {type(exc).__name__}: {exc}")
    if failures:
        pytest.fail(f"{len(failures)} of {CASES} inputs failed; first ones:\n" + "\n".join(failures[:5]))


def seeds() -> list[Any]:
    return [pytest.param(seed, id=f"seed{seed}") for seed in SEEDS]


# --- client frames --------------------------------------------------------------------------------------------------

VALID_FRAMES = [
    '{"event":"pusher:subscribe","data":{"auth":"","channel":"my-channel"}}',
    '{"event":"pusher:subscribe","data":{"auth":"k:1","channel":"presence-a","channel_data":"{\\"user_id\\":1}"}}',
    '{"event":"pusher:signin","data":{"auth":"k:s","user_data":"{\\"id\\":\\"1\\"}"}}',
    '{"event":"pusher:ping","data":{}}',
    '{"event":"client-typing","channel":"private-a","data":{"typing":true}}',
    '{"event":"pusher:unsubscribe","data":"{\\"channel\\":\\"a\\"}"}',
]


def _frame_shape(f: Fuzzer) -> Any:
    return f.perturb(json.loads(f.rng.choice(VALID_FRAMES)))


def _utf8(value: Any) -> bytes:
    """``value`` as UTF-8 JSON, as it would go out in a frame; raises for a lone surrogate anywhere in it."""
    return json.dumps(value, ensure_ascii=False).encode()


def _check_client_message(raw: Any) -> None:
    message = parse_client_message(raw)
    assert isinstance(message.event, str) and message.event
    assert message.channel is None or isinstance(message.channel, str)
    _utf8([message.event, message.channel, message.data])


def _as_received(text: str) -> str:
    """``text`` as an aiohttp text frame can deliver it: strict UTF-8, so no literal lone surrogates.

    (Escapes such as ``\\ud800`` stay: they are plain ASCII on the wire.)
    """
    return text.encode("utf-8", "replace").decode()


@pytest.mark.parametrize("seed", seeds())
def test_parse_client_message_survives_random_frames(seed: int) -> None:
    def make(f: Fuzzer) -> str | bytes:
        if f.chance(0.3):  # bytes may hold anything, invalid UTF-8 included
            return f.bytes_input(VALID_FRAMES, lambda: _frame_shape(f))
        return _as_received(f.text_input(VALID_FRAMES, lambda: _frame_shape(f)))

    run(seed, make, _check_client_message, InvalidMessage)


VALID_SUBSCRIBE_DATA = [
    '{"auth":"","channel":"my-channel"}',
    '{"auth":"k:abc","channel":"private-a"}',
    '{"auth":"k:abc","channel":"presence-a","channel_data":"{\\"user_id\\":\\"1\\",\\"user_info\\":{}}"}',
]


def _data_input(f: Fuzzer, valid: list[str]) -> Any:
    """Subscribe/signin ``data`` as parse_client_message hands it on: a decoded value or a string.

    parse_client_message lets no lone surrogate through, so neither does this (escapes in strings stay).
    """
    text = _as_received(f.text_input(valid, lambda: f.perturb(json.loads(f.rng.choice(valid)))))
    if f.chance(0.5):
        return text
    try:
        value = json.loads(text)
        _utf8(value)
    except (ValueError, RecursionError):
        value = json.loads(f.rng.choice(valid))
    return value


def _check_subscribe(data: Any) -> None:
    request = parse_subscribe(data)
    assert isinstance(request.channel, str) and request.channel
    assert request.auth is None or (isinstance(request.auth, str) and request.auth)
    assert request.channel_data is None or isinstance(request.channel_data, str)
    _utf8([request.channel, request.auth, request.channel_data])


@pytest.mark.parametrize("seed", seeds())
def test_parse_subscribe_survives_random_data(seed: int) -> None:
    run(seed, lambda f: _data_input(f, VALID_SUBSCRIBE_DATA), _check_subscribe, InvalidMessage)


VALID_SIGNIN_DATA = ['{"auth":"k:abc","user_data":"{\\"id\\":\\"1\\"}"}', '{"auth":"","user_data":""}']


def _check_signin(data: Any) -> None:
    request = parse_signin(data)
    assert isinstance(request.auth, str) and isinstance(request.user_data, str)
    _utf8([request.auth, request.user_data])


@pytest.mark.parametrize("seed", seeds())
def test_parse_signin_survives_random_data(seed: int) -> None:
    run(seed, lambda f: _data_input(f, VALID_SIGNIN_DATA), _check_signin, InvalidMessage)


# --- who a socket is ----------------------------------------------------------------------------------------------

VALID_CHANNEL_DATA = [
    '{"user_id":10,"user_info":{"name":"Mr. Channels"}}',
    '{"user_id":"u-1@example.com"}',
    '{"user_id":"1","user_info":{"tags":["a","b"],"n":1.5,"ok":true,"none":null}}',
]
INFO_LIMIT = 256


def _check_channel_data(raw: str) -> None:
    member = parse_channel_data(raw, INFO_LIMIT)
    assert user_id_error(member.user_id) is None
    assert len(json.dumps(member.user_info).encode()) <= INFO_LIMIT
    _utf8(member.user_info)


@pytest.mark.parametrize("seed", seeds())
def test_parse_channel_data_survives_random_strings(seed: int) -> None:
    def make(f: Fuzzer) -> str:
        return f.text_input(VALID_CHANNEL_DATA, lambda: f.perturb(json.loads(f.rng.choice(VALID_CHANNEL_DATA))))

    run(seed, make, _check_channel_data, InvalidUserData)


VALID_USER_DATA = [
    '{"id":"12345"}',
    '{"id":"u1","user_info":{"name":"Ann"},"watchlist":["u2",3,"u4"]}',
    json.dumps({"id": "w", "watchlist": [str(i) for i in range(8)]}),
]
WATCHLIST_LIMIT = 5


def _check_user_data(raw: str) -> None:
    user, truncated = parse_user_data(raw, WATCHLIST_LIMIT)
    assert user_id_error(user.user_id) is None
    assert len(user.watchlist) <= WATCHLIST_LIMIT
    assert all(user_id_error(w) is None for w in user.watchlist)
    assert isinstance(truncated, bool)
    given = json.loads(raw)
    if isinstance(given["id"], str):
        assert user.user_data == raw
    else:  # a numeric id is handed back as its string form, everything else as signed
        assert json.loads(user.user_data) == {**given, "id": user.user_id} and user.user_id == str(given["id"])
    _utf8(user.user_info)


@pytest.mark.parametrize("seed", seeds())
def test_parse_user_data_survives_random_strings(seed: int) -> None:
    def make(f: Fuzzer) -> str:
        return f.text_input(VALID_USER_DATA, lambda: f.perturb(json.loads(f.rng.choice(VALID_USER_DATA))))

    run(seed, make, _check_user_data, InvalidUserData)


# --- HTTP API bodies ----------------------------------------------------------------------------------------------

SMALL = Limits(
    max_event_payload_in_kb=1, max_event_channels_at_once=4, max_event_batch_size=3, max_channel_name_length=40
)
VALID_TRIGGERS = [
    '{"name":"my-event","channels":["a","private-b"],"data":"{\\"x\\":1}"}',
    '{"name":"e","channel":"#server-to-user-7","data":"hi","socket_id":"1.2","info":"user_count"}',
    '{"name":"e","channels":["private-encrypted-x"],"data":"{\\"nonce\\":\\"n\\",\\"ciphertext\\":\\"c\\"}"}',
]
VALID_BATCHES = [
    '{"batch":[{"name":"e1","channel":"a","data":"1"},{"name":"e2","channel":"presence-b","data":"2","info":"user_count"}]}',
    '{"batch":[{"name":"e","channel":"c","data":"d","socket_id":"3.4"}]}',
]


def _check_event(event: TriggerEvent, limits: Limits) -> None:
    assert isinstance(event.name, str) and 0 < len(event.name) <= limits.max_event_name_length
    assert isinstance(event.data, str) and len(event.data.encode()) <= limits.max_payload_bytes
    assert 0 < len(event.channels) <= limits.max_event_channels_at_once
    assert len(set(event.channels)) == len(event.channels)
    for channel in event.channels:
        assert channel_name_error(channel, limits.max_channel_name_length, allow_server_channels=True) is None
    assert event.socket_id is None or is_socket_id(event.socket_id)
    assert event.info <= {"user_count", "subscription_count"}
    _utf8([event.name, event.data])


def _limits(f: Fuzzer) -> Limits:
    return SMALL if f.chance(0.3) else Limits()


@pytest.mark.parametrize("seed", seeds())
def test_parse_trigger_survives_random_bodies(seed: int) -> None:
    def make(f: Fuzzer) -> tuple[bytes, Limits]:
        shape = f.perturb(json.loads(f.rng.choice(VALID_TRIGGERS)))
        if f.chance(0.1):  # many channels, some repeated
            shape["channels"] = [f.rng.choice(["a", "b", f.text(6)]) for _ in range(f.rng.randrange(1, 120))]
        if f.chance(0.05):
            shape["data"] = "x" * f.rng.choice([1023, 1024, 1025, 102_400, 102_401])
        return f.bytes_input(VALID_TRIGGERS, lambda: shape), _limits(f)

    def call(args: tuple[bytes, Limits]) -> None:
        _check_event(parse_trigger(*args), args[1])

    run(seed, make, call, ApiError)


@pytest.mark.parametrize("seed", seeds())
def test_parse_batch_survives_random_bodies(seed: int) -> None:
    def make(f: Fuzzer) -> tuple[bytes, Limits]:
        base = json.loads(f.rng.choice(VALID_BATCHES))
        events = [f.perturb(e) if f.chance(0.5) else e for e in base["batch"]] * f.rng.randrange(1, 5)
        shape = f.perturb({"batch": events}) if f.chance(0.2) else {"batch": events}
        return f.bytes_input(VALID_BATCHES, lambda: shape), _limits(f)

    def call(args: tuple[bytes, Limits]) -> None:
        events = parse_batch(*args)
        assert 0 < len(events) <= args[1].max_event_batch_size
        for event in events:
            assert len(event.channels) == 1
            _check_event(event, args[1])

    run(seed, make, call, ApiError)


# --- HTTP API signatures --------------------------------------------------------------------------------------------
#
# Query values never hold lone surrogates: aiohttp refuses raw non-ASCII bytes in the request target and decodes
# percent-escapes as UTF-8 with replacement. So the random text for params leaves them out.

PATH = "/apps/3/events"
TIMESTAMPS = (
    "nan", "NaN", "-nan", "inf", "-Infinity", "1e999", "1.7e9", " 1700000000 ", "1700000000.9", "1_700_000_000",
    "0x10", "", "1700000601", "1699999400", "\u0661\u0667\u0660\u0660", "17e8",
)  # fmt: skip
BODY = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'


def _reference_signature(method: str, path: str, params: list[tuple[str, str]]) -> str:
    """protocol.md 2.2, written independently: lower-case keys, repeated values comma-joined, sorted, unescaped."""
    merged: dict[str, list[str]] = {}
    for key, value in params:
        if key.lower() != "auth_signature":
            merged.setdefault(key.lower(), []).append(value)
    query = "&".join(f"{key}={','.join(merged[key])}" for key in sorted(merged))
    return hmac.new(SECRET.encode(), f"{method.upper()}\n{path}\n{query}".encode(), hashlib.sha256).hexdigest()


def _reference_accepts(method: str, path: str, params: list[tuple[str, str]], body: bytes, now: float) -> bool:
    """Whether a request meets every rule of protocol.md 2.2 (first value of a repeated key counts)."""
    first: dict[str, str] = {}
    for key, value in params:
        first.setdefault(key.lower(), value)
    if not all(first.get(k) for k in ("auth_key", "auth_timestamp", "auth_signature")):
        return False
    if first["auth_key"] != KEY or first.get("auth_version", "1.0") != "1.0":
        return False
    try:
        timestamp = float(first["auth_timestamp"])
    except ValueError:
        return False
    if not math.isfinite(timestamp) or abs(now - timestamp) > 600:
        return False
    body_md5 = first.get("body_md5")
    if body and body_md5 != hashlib.md5(body).hexdigest():
        return False
    if not body and body_md5 not in (None, hashlib.md5(b"").hexdigest()):
        return False
    return first["auth_signature"] == _reference_signature(method, path, params)


def _signed_request(f: Fuzzer) -> tuple[str, list[tuple[str, str]], bytes]:
    if f.chance(0.5):
        method, body = "POST", BODY
        params = [("auth_key", KEY), ("auth_timestamp", f"{NOW:.0f}"), ("auth_version", "1.0")]
        params.append(("body_md5", hashlib.md5(body).hexdigest()))
    else:
        method, body = "GET", b""
        params = [("auth_key", KEY), ("auth_timestamp", f"{NOW:.0f}"), ("auth_version", "1.0"), ("info", "user_count")]
        if f.chance(0.5):
            params.append(("body_md5", hashlib.md5(b"").hexdigest()))
    params.append(("auth_signature", _reference_signature(method, PATH, params)))
    return method, params, body


def _query_text(f: Fuzzer) -> str:
    return "".join(c for c in f.text() if not 0xD800 <= ord(c) <= 0xDFFF)


def _mutate_request(f: Fuzzer) -> tuple[str, str, list[tuple[str, str]], bytes, float]:
    method, params, body = _signed_request(f)
    path, now = PATH, NOW
    for _ in range(f.rng.randrange(0, 4)):
        roll = f.rng.randrange(12)
        i = f.rng.randrange(len(params)) if params else 0
        if roll == 0 and params:
            del params[i]
        elif roll == 1 and params:
            params.insert(f.rng.randrange(len(params) + 1), params[i])  # repeated key, same value
        elif roll == 2 and params:
            params.append((params[i][0], _query_text(f)))  # repeated key, other value
        elif roll == 3 and params:
            key = params[i][0]
            params[i] = (f.rng.choice([key.upper(), key.title(), key.swapcase()]), params[i][1])
        elif roll == 4 and params:
            params[i] = (params[i][0], _query_text(f))
        elif roll == 5 and params:
            params[i] = (params[i][0], f.mutate(params[i][1]).encode("utf-8", "replace").decode())
        elif roll == 6:
            params.append((f.rng.choice((*FIELD_NAMES, "auth_signature", "body_md5")), _query_text(f)))
        elif roll == 7:
            f.rng.shuffle(params)
        elif roll == 8:
            now += f.rng.choice([-601.0, -600.0, 599.0, 600.0, 601.0, 1e12])
        elif roll == 9 and params:
            # A correctly signed request with an odd timestamp: only the window rules decide.
            odd = f.rng.choice(TIMESTAMPS)
            params = [(k, odd if k.lower() == "auth_timestamp" else v) for k, v in params if k != "auth_signature"]
            params.append(("auth_signature", _reference_signature(method, path, params)))
        elif roll == 10:
            body = f.rng.choice([b"", BODY + b" ", f.junk_bytes()])
        else:
            method, path = f.rng.choice([("GET", PATH), ("POST", PATH), ("post", PATH), (method, "/apps/4/events")])
    return method, path, params, body, now


@pytest.mark.parametrize("seed", seeds())
def test_verify_api_request_agrees_with_the_reference_on_mutated_requests(seed: int) -> None:
    def call(args: tuple[str, str, list[tuple[str, str]], bytes, float]) -> None:
        method, path, params, body, now = args
        expected = _reference_accepts(method, path, params, body, now)
        try:
            verify_api_request(method=method, path=path, params=params, body=body, key=KEY, secret=SECRET, now=now)
        except ApiError as error:
            assert error.status == 401
            assert not expected, f"rejected a valid request: {error.message}"
            raise
        assert expected, "accepted a request that breaks protocol.md 2.2"

    run(seed, _mutate_request, call, ApiError)


# --- envelopes ------------------------------------------------------------------------------------------------------

VALID_ENVELOPES = [
    Envelope(Kind.EVENT, "1", "presence-a", "client-x", {"a": [1, None]}, "1.2", "node", 1.5, "u").pack(),
    Envelope(Kind.TERMINATE_USER, "1", "", "", None, user_id="u").pack(),
    Envelope(Kind.USER_PRESENCE, "1", "", "", True, origin_node="n").pack(),
]


def _packable(value: Any) -> Any:
    """``value`` with integers msgpack cannot hold (beyond 64 bits) turned into floats."""
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return float("inf") if value > 0 else float("-inf")
    if isinstance(value, list):
        return [_packable(v) for v in value]
    if isinstance(value, dict):
        return {k: _packable(v) for k, v in value.items()}
    return value


def _msgpack_value(f: Fuzzer) -> Any:
    value = _packable(f.value())
    if f.chance(0.3):
        value = f.rng.choice([b"\x00\xff", 2**64 - 1, -(2**63), [1, 1] + [_packable(f.value()) for _ in range(8)]])
    return value


def _envelope_input(f: Fuzzer) -> bytes:
    roll = f.rng.randrange(100)
    if roll < 35:
        raw = bytearray(f.rng.choice(VALID_ENVELOPES))
        for _ in range(f.rng.randrange(1, 4)):
            op = f.rng.randrange(3)
            pos = f.rng.randrange(len(raw) + 1)
            if op == 0 and raw:
                raw[min(pos, len(raw) - 1)] = f.rng.randrange(256)
            elif op == 1:
                raw.insert(pos, f.rng.randrange(256))
            else:
                del raw[pos:]
        return bytes(raw)
    if roll < 60:  # the right shape with a random value in one or more fields
        fields = msgpack.unpackb(f.rng.choice(VALID_ENVELOPES), raw=False)
        for _ in range(f.rng.randrange(1, 3)):
            fields[f.rng.randrange(len(fields))] = _msgpack_value(f)
        return bytes(msgpack.packb(fields, use_bin_type=True, unicode_errors="surrogatepass"))
    if roll < 80:
        return bytes(msgpack.packb(_msgpack_value(f), use_bin_type=f.chance(0.5), unicode_errors="surrogatepass"))
    if roll < 90:  # deep nesting: fixarray of one element, many times
        return b"\x91" * f.rng.randrange(100, 5000) + b"\x01"
    return f.junk_bytes()


def _check_envelope(raw: bytes) -> None:
    envelope = Envelope.unpack(raw)
    assert isinstance(envelope, Envelope)
    assert isinstance(envelope.kind, Kind)


@pytest.mark.parametrize("seed", seeds())
def test_envelope_unpack_survives_random_bytes(seed: int) -> None:
    run(seed, _envelope_input, _check_envelope, EnvelopeError)


# --- WebSocket client frames (hub/ws/frame_parser.py) ------------------------------------------------------------

FRAME_LIMIT = 4096
_DEFLATE = Deflater(0)


def _client_frame(f: Fuzzer) -> bytes:
    """One client frame: mostly well formed (any opcode, flags, lengths, compressed or not), sometimes bent."""
    rng = f.rng
    opcode = rng.choice([TEXT] * 6 + [BINARY, PING, PING, PONG, CLOSE, 0x0, 0x3, 0xB])
    payload = f.text(rng.choice([0, 10, 200])).encode("utf-8", "surrogatepass")
    rsv = 0
    if opcode in (TEXT, BINARY) and f.chance(0.3):
        payload, rsv = _DEFLATE.compress(payload), 0x40
    if f.chance(0.05):
        payload = b"x" * rng.choice([126, FRAME_LIMIT + 1, 70_000])
    if f.chance(0.05):
        rsv |= rng.choice([0x10, 0x20, 0x40])
    first = (0x80 if not f.chance(0.1) else 0) | rsv | opcode
    n = len(payload)
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 65536:
        head = bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, 0x80 | 127)) + n.to_bytes(8, "big")
    if f.chance(0.05):
        return head + payload  # unmasked
    mask = bytes(rng.randrange(256) for _ in range(4))
    return head + mask + unmask(payload, mask)


def _frame_stream(f: Fuzzer) -> tuple[bytes, list[int], bool]:
    """Several frames, sometimes flipped or cut; the chunk sizes to feed them in; deflate negotiated or not."""
    data = b"".join(_client_frame(f) for _ in range(f.rng.randrange(1, 5)))
    if f.chance(0.1):
        data = f.junk_bytes() + data
    if f.chance(0.1) and data:
        pos = f.rng.randrange(len(data))
        data = data[:pos] + bytes((data[pos] ^ (1 << f.rng.randrange(8)),)) + data[pos + 1 :]
    if f.chance(0.1):
        data = data[: f.rng.randrange(len(data) + 1)]
    chunks = [f.rng.randrange(1, 200) for _ in range(len(data))]
    return data, chunks, f.chance(0.5)


def _check_frames(case: tuple[bytes, list[int], bool]) -> None:
    data, chunks, negotiated = case
    parser = FrameParser(FRAME_LIMIT, deflate=negotiated)
    pos = 0
    for size in chunks:
        if pos >= len(data):
            break
        for opcode, payload in parser.feed(data[pos : pos + size]):
            assert opcode in (TEXT, BINARY, CLOSE, PING, PONG)
            assert isinstance(payload, str if opcode == TEXT else bytes)
            assert len(payload) <= FRAME_LIMIT
            if opcode >= CLOSE:
                assert len(payload) <= 125
        pos += size


@pytest.mark.parametrize("seed", seeds())
def test_frame_parser_survives_random_and_bent_frame_streams(seed: int) -> None:
    run(seed, _frame_stream, _check_frames, ProtocolViolation)


def test_frame_fuzz_inputs_reach_the_valid_path() -> None:
    f = Fuzzer(0)
    messages = 0
    for _ in range(500):
        data, _, negotiated = _frame_stream(f)
        with contextlib.suppress(ProtocolViolation):
            messages += sum(1 for _ in FrameParser(FRAME_LIMIT, deflate=negotiated).feed(data))
    assert messages > 100


# --- the fuzzer itself ----------------------------------------------------------------------------------------------


def test_fuzzer_is_deterministic_for_a_seed() -> None:
    first, second = Fuzzer(7), Fuzzer(7)
    assert [first.text_input(VALID_FRAMES, first.value) for _ in range(200)] == [
        second.text_input(VALID_FRAMES, second.value) for _ in range(200)
    ]


def test_reference_accepts_the_unmutated_signed_request() -> None:
    f = Fuzzer(0)
    for _ in range(20):
        method, params, body = _signed_request(f)
        assert _reference_accepts(method, PATH, params, body, NOW)
        verify_api_request(method=method, path=PATH, params=params, body=body, key=KEY, secret=SECRET, now=NOW)


def test_fuzz_inputs_reach_the_valid_path() -> None:
    # Guards against a generator that only ever produces garbage: a share of inputs must parse.
    f = Fuzzer(0)
    parsed = 0
    for _ in range(500):
        try:
            parse_trigger(f.bytes_input(VALID_TRIGGERS, lambda: json.loads(f.rng.choice(VALID_TRIGGERS))), Limits())
            parsed += 1
        except ApiError:
            pass
    assert parsed > 50
