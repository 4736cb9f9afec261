"""The node-to-node envelope: msgpack round trip, version check, and garbage refused as EnvelopeError."""

from __future__ import annotations

import time

import msgpack
import pytest

from hub.broker.envelope import ENVELOPE_VERSION, Envelope, EnvelopeError, Kind, event_envelope

FULL = Envelope(
    kind=Kind.EVENT,
    app_id="1",
    channel="presence-room",
    event="client-typing",
    data={"typing": True, "n": [1, 2.5, None], "s": "é"},
    except_socket="123.456",
    origin_node="node-a",
    published_at=1700000000.25,
    user_id="u1",
)


def _fields(envelope: Envelope = FULL) -> list[object]:
    fields: list[object] = msgpack.unpackb(envelope.pack(), raw=False)
    return fields


def _error(raw: bytes) -> str:
    with pytest.raises(EnvelopeError) as caught:
        Envelope.unpack(raw)
    return str(caught.value)


# --- round trip -----------------------------------------------------------------------------------------------------


def test_round_trip_keeps_every_field() -> None:
    assert Envelope.unpack(FULL.pack()) == FULL


def test_round_trip_of_minimal_envelope_keeps_the_defaults() -> None:
    envelope = Envelope(Kind.EVENT, "1", "c", "e", "d")
    unpacked = Envelope.unpack(envelope.pack())
    assert unpacked == envelope
    assert (unpacked.except_socket, unpacked.origin_node, unpacked.published_at, unpacked.user_id) == (
        None,
        "",
        0.0,
        None,
    )


def test_string_data_stays_a_string_byte_for_byte() -> None:
    data = '{"message": "hi",  "n":1.50}'
    assert Envelope.unpack(Envelope(Kind.EVENT, "1", "c", "e", data).pack()).data == data


def test_unpacked_kind_is_the_enum() -> None:
    for kind in Kind:
        assert Envelope.unpack(Envelope(kind, "1", "c", "e", True).pack()).kind is kind


def test_terminate_user_round_trip() -> None:
    envelope = Envelope(Kind.TERMINATE_USER, "1", "", "", None, user_id="u9")
    assert Envelope.unpack(envelope.pack()) == envelope


def test_user_presence_round_trip_keeps_the_boolean() -> None:
    assert Envelope.unpack(Envelope(Kind.USER_PRESENCE, "1", "", "", False, user_id="u").pack()).data is False


# --- wire shape ---------------------------------------------------------------------------------------------------


def test_packed_form_is_an_array_with_the_version_first() -> None:
    assert _fields() == [
        ENVELOPE_VERSION,
        1,
        "1",
        "presence-room",
        "client-typing",
        {"typing": True, "n": [1, 2.5, None], "s": "é"},
        "123.456",
        "node-a",
        1700000000.25,
        "u1",
    ]


def test_envelope_version_is_1() -> None:
    assert ENVELOPE_VERSION == 1


def test_kind_values_are_stable_on_the_wire() -> None:
    assert {k.name: int(k) for k in Kind} == {
        "EVENT": 1,
        "TERMINATE_USER": 2,
        "USER_PRESENCE": 3,
        "CONSOLE_WATCH": 4,
        "CONSOLE_EVENTS": 5,
    }


# --- event_envelope ---------------------------------------------------------------------------------------------


def test_event_envelope_is_stamped_with_the_current_time() -> None:
    before = time.time()
    envelope = event_envelope("1", "c", "e", "d", origin_node="n1", except_socket="1.2", user_id="u")
    after = time.time()
    assert before <= envelope.published_at <= after
    assert (envelope.kind, envelope.origin_node, envelope.except_socket, envelope.user_id) == (
        Kind.EVENT,
        "n1",
        "1.2",
        "u",
    )


# --- refused input ----------------------------------------------------------------------------------------------


def test_other_version_is_refused() -> None:
    fields = _fields()
    fields[0] = 2
    assert _error(msgpack.packb(fields)) == "unknown envelope version or shape"


def test_missing_field_is_refused() -> None:
    assert _error(msgpack.packb(_fields()[:-1])) == "unknown envelope version or shape"


def test_extra_field_is_refused() -> None:
    assert _error(msgpack.packb([*_fields(), "extra"])) == "unknown envelope version or shape"


@pytest.mark.parametrize("value", [{"v": 1}, "envelope", 1, None, True])
def test_non_array_is_refused(value: object) -> None:
    assert _error(msgpack.packb(value)) == "unknown envelope version or shape"


@pytest.mark.parametrize("kind", [0, 6, -1, "EVENT", None, [1]])
def test_unknown_kind_is_refused(kind: object) -> None:
    fields = _fields()
    fields[1] = kind
    assert _error(msgpack.packb(fields)).startswith("unknown envelope kind")


@pytest.mark.parametrize("raw", [b"", b"\xc1", b"\x91", b"\xff" * 3, b'{"json": true}', b"\x92\x01"])
def test_bytes_that_are_not_msgpack_are_refused(raw: bytes) -> None:
    with pytest.raises(EnvelopeError):
        Envelope.unpack(raw)


def test_trailing_bytes_after_an_envelope_are_refused() -> None:
    assert _error(FULL.pack() + b"\x00").startswith("not msgpack")


def test_truncated_envelope_is_refused() -> None:
    assert _error(FULL.pack()[:-3]).startswith("not msgpack")


def test_envelope_error_is_a_value_error() -> None:
    assert issubclass(EnvelopeError, ValueError)


@pytest.mark.parametrize(("index", "value"), [(2, 7), (3, None), (4, ["e"]), (6, 12), (7, 0), (8, "soon"), (9, 5)])
def test_fields_of_the_wrong_type_are_refused(index: int, value: object) -> None:
    fields = _fields()
    fields[index] = value
    with pytest.raises(EnvelopeError):
        Envelope.unpack(msgpack.packb(fields))
