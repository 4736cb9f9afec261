"""Reading client WebSocket frames (RFC 6455 5, RFC 7692 6): pure, incremental, bounded.

``FrameParser.feed`` takes whatever bytes the transport handed over and yields each complete message
(fragments joined, payload unmasked and, when compressed, inflated) and each control frame. Anything
RFC 6455 says must fail the connection raises ``ProtocolViolation`` with the close code to send. A message
is refused as soon as its header announces more than the size limit, so nothing large is buffered first.
Seeded fuzzing in tests/unit/test_fuzz.py.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from hub.ws.deflate import InflateError, inflate

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
PROTOCOL_ERROR, INVALID_DATA, TOO_BIG = 1002, 1007, 1009
_DATA_OPCODES = (TEXT, BINARY)
_CONTROL_OPCODES = (CLOSE, PING, PONG)
# Close codes a peer may send (RFC 6455 7.4.1, 7.4.2): the defined ones and the registered/private ranges.
_PEER_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))

Message = tuple[int, bytes | str]


class ProtocolViolation(Exception):
    """The client broke RFC 6455 (or 7692): close with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` repeated (one big-integer XOR: C speed, no Python loop)."""
    n = len(payload)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def parse_close(payload: bytes) -> tuple[int, str]:
    """The code and reason of a client's close frame (1005 when it carried none)."""
    if not payload:
        return 1005, ""
    if len(payload) < 2:
        raise ProtocolViolation(PROTOCOL_ERROR, "Close frame with a one-byte payload.")
    (code,) = struct.unpack("!H", payload[:2])
    if code not in _PEER_CLOSE_CODES and not 3000 <= code <= 4999:
        raise ProtocolViolation(PROTOCOL_ERROR, f"Invalid close code {code}.")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise ProtocolViolation(INVALID_DATA, "Close reason is not UTF-8.") from None
    return code, reason


class FrameParser:
    """One socket's reading state: unread bytes and the message being reassembled."""

    __slots__ = ("_buf", "_compressed", "_fragments", "_opcode", "_size", "deflate", "max_size")

    def __init__(self, max_size: int, *, deflate: bool = False) -> None:
        self.max_size = max_size
        self.deflate = deflate
        self._buf = b""
        self._opcode = 0  # opcode of the fragmented message in progress, 0 when none
        self._compressed = False
        self._fragments: list[bytes] | None = None
        self._size = 0

    def feed(self, data: bytes) -> Iterator[Message]:
        """Yield each message and control frame completed by ``data``; text messages come as ``str``."""
        buf = self._buf + data if self._buf else data
        self._buf = b""
        n = len(buf)
        pos = 0
        while n - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            opcode = first & 0x0F
            if not second & 0x80:
                raise ProtocolViolation(PROTOCOL_ERROR, "Client frames must be masked.")
            length = second & 0x7F
            head = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                head = pos + 4
            elif length == 127:
                if n - pos < 10:
                    break
                (length,) = struct.unpack_from("!Q", buf, pos + 2)
                head = pos + 10
                if length >> 63:
                    raise ProtocolViolation(PROTOCOL_ERROR, "Frame length has its top bit set.")
            self._check_header(first, opcode, length)
            end = head + 4 + length
            if end > n:
                break
            payload = unmask(buf[head + 4 : end], buf[head : head + 4])
            pos = end
            if opcode >= CLOSE:
                yield opcode, payload
                continue
            message = self._assemble(first, opcode, payload)
            if message is not None:
                yield message
        if pos < n:
            self._buf = buf[pos:]

    def _check_header(self, first: int, opcode: int, length: int) -> None:
        """Everything that can be refused from the header alone, before the payload has arrived."""
        fin, rsv1, rsv23 = first & 0x80, first & 0x40, first & 0x30
        if rsv23:
            raise ProtocolViolation(PROTOCOL_ERROR, "Reserved bits set without an extension that defines them.")
        if opcode >= CLOSE:
            if opcode not in _CONTROL_OPCODES:
                raise ProtocolViolation(PROTOCOL_ERROR, f"Unknown opcode {opcode}.")
            if not fin or length > 125 or rsv1:
                raise ProtocolViolation(PROTOCOL_ERROR, "Control frames must be whole, unflagged and <= 125 bytes.")
            return
        if opcode == CONTINUATION:
            if not self._opcode:
                raise ProtocolViolation(PROTOCOL_ERROR, "Continuation frame without a message to continue.")
            if rsv1:
                raise ProtocolViolation(PROTOCOL_ERROR, "RSV1 set on a continuation frame.")
        elif opcode in _DATA_OPCODES:
            if self._opcode:
                raise ProtocolViolation(PROTOCOL_ERROR, "New message before the fragmented one ended.")
            if rsv1 and not self.deflate:
                raise ProtocolViolation(PROTOCOL_ERROR, "RSV1 set but permessage-deflate was not negotiated.")
        else:
            raise ProtocolViolation(PROTOCOL_ERROR, f"Unknown opcode {opcode}.")
        if self._size + length > self.max_size:
            raise ProtocolViolation(TOO_BIG, f"Message over {self.max_size} bytes.")

    def _assemble(self, first: int, opcode: int, payload: bytes) -> Message | None:
        if opcode != CONTINUATION:
            self._opcode = opcode
            self._compressed = bool(first & 0x40)
        if not first & 0x80:
            if self._fragments is None:
                self._fragments = []
            self._fragments.append(payload)
            self._size += len(payload)
            return None
        if self._fragments:
            self._fragments.append(payload)
            payload = b"".join(self._fragments)
        opcode, compressed = self._opcode, self._compressed
        self._fragments, self._size, self._opcode, self._compressed = None, 0, 0, False
        if compressed:
            try:
                payload = inflate(payload, self.max_size)
            except InflateError as exc:
                raise ProtocolViolation(exc.code, exc.reason) from None
        if opcode == TEXT:
            try:
                return TEXT, payload.decode()
            except UnicodeDecodeError:
                raise ProtocolViolation(INVALID_DATA, "Text message is not UTF-8.") from None
        return opcode, payload
