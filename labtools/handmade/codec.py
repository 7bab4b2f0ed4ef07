"""WebSocket frames by hand (RFC 6455 §5): encode them, decode them, and say why one is wrong.

A frame is a 2-byte header, an optional extended length, an optional 4-byte mask key, then
the payload::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-------+-+-------------+-------------------------------+
    |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
    |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
    |N|V|V|V|       |S|             |   (if payload len==126/127)   |
    | |1|2|3|       |K|             |                               |
    +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
    |     Extended payload length continued, if payload len == 127  |
    + - - - - - - - - - - - - - - - +-------------------------------+
    |                               |Masking-key, if MASK set to 1  |
    +-------------------------------+-------------------------------+
    | Masking-key (continued)       |          Payload Data         |
    +-------------------------------- - - - - - - - - - - - - - - - +

So the framing costs 2 bytes (payload up to 125 bytes), 4 (up to 65,535) or 10 (more), plus 4
for the mask key on every frame a client sends: 2 to 14 bytes per message.

The module is meant to be read in lesson 03, so it favours plain code over speed (masking is
the one place it uses a trick, explained where it happens). What it checks, and the close code
a peer answers with when a check fails (``ProtocolError.code``):

* reserved bits set while no extension was negotiated (we never negotiate one): 1002;
* a client frame without a mask, or a server frame with one: 1002;
* a control frame (close, ping, pong) longer than 125 bytes, or fragmented: 1002;
* an unknown opcode, a continuation with nothing to continue, a new message in the middle of
  a fragmented one, a 64-bit length with its top bit set: 1002;
* a close frame with a 1-byte payload or a code nobody may send: 1002;
* text (or a close reason) that is not valid UTF-8: 1007;
* a message bigger than ``max_size``: 1009.
"""

from __future__ import annotations

import codecs
import os
import struct
from dataclasses import dataclass, field
from enum import IntEnum

MAX_CONTROL_PAYLOAD = 125  # ping, pong and close carry at most 125 bytes (§5.5)
DEFAULT_MAX_SIZE = 1 << 20  # 1 MiB, the course servers' max_size (PROTOCOL.md)


class Opcode(IntEnum):
    """The 4-bit opcode of a frame (§5.2). 0x3-0x7 and 0xB-0xF are reserved."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA

    @property
    def is_control(self) -> bool:
        """Control frames have the high bit of the opcode set: close, ping, pong."""
        return self >= 0x8


class CloseCode(IntEnum):
    """The close codes a lesson meets (§7.4.1); 3000-4999 are free for libraries and apps."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # never sent: what you report when a close frame had no code
    ABNORMAL = 1006  # never sent: what you report when the TCP connection just died
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014


# Codes that may travel in a close frame. 1005, 1006 and 1015 are reserved for reporting
# ("there was no code", "the connection dropped", "TLS failed") and must never be sent.
SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def is_valid_close_code(code: int) -> bool:
    """True for a code a peer may put in a close frame: the registered ones, or 3000-4999."""
    return code in SENDABLE_CLOSE_CODES or 3000 <= code <= 4999


class ProtocolError(Exception):
    """A frame broke RFC 6455; ``code`` is the close code to answer it with."""

    def __init__(self, message: str, code: int = CloseCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Frame:
    """One frame as it travels: ``fin`` marks the last frame of a message.

    ``mask_key`` is only informative (which key the sender used, if any); two frames with the
    same flags, opcode and payload compare equal whatever their masks.
    """

    opcode: Opcode
    payload: bytes
    fin: bool = True
    mask_key: bytes | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Message:
    """What an application receives once fragments are joined and checked.

    ``data`` is a ``str`` for TEXT and CLOSE (the reason), ``bytes`` for BINARY, PING and PONG.
    ``code`` is the close code of a CLOSE (1005 when the frame carried none), else ``None``.
    """

    opcode: Opcode
    data: str | bytes
    code: int | None = None


# --- encoding -------------------------------------------------------------------------------


def header_size(payload_length: int, masked: bool) -> int:
    """Bytes of framing for a payload: 2, 4 or 10, plus 4 when the sender is a client."""
    if payload_length <= 125:
        size = 2
    elif payload_length <= 0xFFFF:
        size = 4
    else:
        size = 10
    return size + (4 if masked else 0)


def apply_mask(data: bytes, key: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``key`` repeated: byte i is ``data[i] ^ key[i % 4]``.

    Masking twice gives the data back, so the same function masks and unmasks. The one-liner
    ``bytes(b ^ key[i % 4] for i, b in enumerate(data))`` says it all but takes milliseconds on a
    64 KiB message; XOR-ing two big integers does the same byte by byte, in C.
    """
    if len(key) != 4:
        raise ValueError("a mask key is 4 bytes")
    if not data:
        return b""
    repeated = (key * (len(data) // 4 + 1))[: len(data)]
    masked = int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")
    return masked.to_bytes(len(data), "big")


def encode(
    opcode: Opcode,
    payload: bytes,
    *,
    fin: bool = True,
    mask: bool = False,
    mask_key: bytes | None = None,
) -> bytes:
    """The bytes of one frame. Clients must pass ``mask=True`` (a fresh random key is drawn
    unless ``mask_key`` is given, which only examples and tests should do); servers never mask.
    """
    opcode = Opcode(opcode)
    if opcode.is_control and (len(payload) > MAX_CONTROL_PAYLOAD or not fin):
        raise ProtocolError(f"a {opcode.name} frame must be whole and at most 125 bytes")
    first = (0x80 if fin else 0) | opcode  # FIN bit, three zero RSV bits, the opcode
    mask_bit = 0x80 if mask else 0
    n = len(payload)
    if n <= 125:
        header = struct.pack("!BB", first, mask_bit | n)
    elif n <= 0xFFFF:
        header = struct.pack("!BBH", first, mask_bit | 126, n)  # 126: a 16-bit length follows
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)  # 127: a 64-bit length follows
    if not mask:
        return header + payload
    key = os.urandom(4) if mask_key is None else mask_key
    return header + key + apply_mask(payload, key)


def encode_close_payload(code: int | None = CloseCode.NORMAL, reason: str = "") -> bytes:
    """A close frame's payload: a 2-byte code, then a UTF-8 reason (or nothing at all)."""
    if code is None:
        if reason:
            raise ValueError("a close reason needs a close code")
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"{code} may not be sent in a close frame")
    payload = struct.pack("!H", code) + reason.encode()
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError("a close reason is at most 123 bytes of UTF-8")
    return payload


def decode_close_payload(payload: bytes) -> tuple[int, str]:
    """``(code, reason)`` from a close frame's payload; 1005 when it carried no code."""
    if not payload:
        return CloseCode.NO_STATUS, ""
    if len(payload) == 1:
        raise ProtocolError("a close payload of 1 byte is half a code")
    (code,) = struct.unpack("!H", payload[:2])
    if not is_valid_close_code(code):
        raise ProtocolError(f"close code {code} may not be sent")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise ProtocolError("the close reason is not valid UTF-8", CloseCode.INVALID_DATA) from None
    return code, reason


def text(message: str, *, mask: bool = False, mask_key: bytes | None = None) -> bytes:
    """A TEXT frame carrying ``message`` in UTF-8."""
    return encode(Opcode.TEXT, message.encode(), mask=mask, mask_key=mask_key)


def binary(data: bytes, *, mask: bool = False, mask_key: bytes | None = None) -> bytes:
    """A BINARY frame."""
    return encode(Opcode.BINARY, data, mask=mask, mask_key=mask_key)


def ping(data: bytes = b"", *, mask: bool = False, mask_key: bytes | None = None) -> bytes:
    """A PING; the peer must answer with a PONG carrying the same bytes."""
    return encode(Opcode.PING, data, mask=mask, mask_key=mask_key)


def pong(data: bytes = b"", *, mask: bool = False, mask_key: bytes | None = None) -> bytes:
    """A PONG (the answer to a ping, or an unsolicited heartbeat)."""
    return encode(Opcode.PONG, data, mask=mask, mask_key=mask_key)


def close(
    code: int | None = CloseCode.NORMAL, reason: str = "", *, mask: bool = False, mask_key: bytes | None = None
) -> bytes:
    """A CLOSE frame with a code and an optional reason."""
    return encode(Opcode.CLOSE, encode_close_payload(code, reason), mask=mask, mask_key=mask_key)


# --- decoding -------------------------------------------------------------------------------


class FrameDecoder:
    """Feed it bytes as they arrive, get back the complete frames they finish.

    TCP delivers a stream, not frames: one read may hold half a header or three frames and a
    bit. The decoder keeps what it cannot use yet in a buffer until the next ``feed``.

    ``masked`` says what the peer must do: ``True`` on a server (clients mask every frame),
    ``False`` on a client (servers never mask), ``None`` to accept both (dissecting examples).
    """

    def __init__(self, *, masked: bool | None, max_size: int | None = DEFAULT_MAX_SIZE) -> None:
        self.masked = masked
        self.max_size = max_size
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """Add ``data`` and return every frame now complete (maybe none), in order."""
        self._buffer += data
        frames = []
        while (parsed := self._parse_one()) is not None:
            frame, used = parsed
            del self._buffer[:used]
            frames.append(frame)
        return frames

    @property
    def pending(self) -> int:
        """Bytes received that do not make a whole frame yet."""
        return len(self._buffer)

    def _parse_one(self) -> tuple[Frame, int] | None:
        """The first frame in the buffer and its size in bytes, or None if it is incomplete."""
        buf = self._buffer
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        fin = bool(first & 0x80)
        if first & 0x70:  # RSV1-3: only an extension may set them, and we negotiate none
            raise ProtocolError("reserved bits set without a negotiated extension")
        try:
            opcode = Opcode(first & 0x0F)
        except ValueError:
            raise ProtocolError(f"unknown opcode {first & 0x0F:#x}") from None
        is_masked = bool(second & 0x80)
        if self.masked is True and not is_masked:
            raise ProtocolError("a client frame must be masked")
        if self.masked is False and is_masked:
            raise ProtocolError("a server frame must not be masked")

        length = second & 0x7F
        offset = 2
        if length == 126:
            if len(buf) < offset + 2:
                return None
            (length,) = struct.unpack_from("!H", buf, offset)
            offset += 2
        elif length == 127:
            if len(buf) < offset + 8:
                return None
            (length,) = struct.unpack_from("!Q", buf, offset)
            offset += 8
            if length >> 63:
                raise ProtocolError("a 64-bit length must have its top bit clear")
        if opcode.is_control and (length > MAX_CONTROL_PAYLOAD or not fin):
            raise ProtocolError(f"a {opcode.name} frame must be whole and at most 125 bytes")
        if self.max_size is not None and length > self.max_size:
            raise ProtocolError(f"a {length}-byte frame is over max_size", CloseCode.TOO_BIG)

        mask_key = None
        if is_masked:
            if len(buf) < offset + 4:
                return None
            mask_key = bytes(buf[offset : offset + 4])
            offset += 4
        if len(buf) < offset + length:
            return None
        payload = bytes(buf[offset : offset + length])
        if mask_key is not None:
            payload = apply_mask(payload, mask_key)
        return Frame(opcode, payload, fin, mask_key), offset + length


class MessageDecoder:
    """Bytes in, messages out: frames are decoded, fragments joined, text and close checked.

    A message may be split into frames: the first carries TEXT or BINARY with FIN clear, the
    next ones CONTINUATION, the last one FIN set. Control frames may arrive between fragments
    (a ping must not wait behind a large upload), so they come out at once.
    """

    def __init__(self, *, masked: bool | None, max_size: int | None = DEFAULT_MAX_SIZE) -> None:
        self.frames = FrameDecoder(masked=masked, max_size=max_size)
        self.max_size = max_size
        self._opcode: Opcode | None = None  # the opcode of the message being reassembled
        self._parts: list[bytes] = []
        self._size = 0
        # An incremental UTF-8 decoder, so a character split across fragments is fine but an
        # invalid byte is caught in the fragment that carries it (fail fast, as §8.1 asks).
        self._utf8 = codecs.getincrementaldecoder("utf-8")()

    def feed(self, data: bytes) -> list[Message]:
        """Add ``data`` and return every message now complete."""
        messages = []
        for frame in self.frames.feed(data):
            message = self.add(frame)
            if message is not None:
                messages.append(message)
        return messages

    def add(self, frame: Frame) -> Message | None:
        """Take one frame; return a message if it completes one."""
        if frame.opcode.is_control:
            return _control_message(frame)
        if frame.opcode is Opcode.CONTINUATION:
            if self._opcode is None:
                raise ProtocolError("a continuation frame with no message to continue")
        elif self._opcode is not None:
            raise ProtocolError(f"a new {frame.opcode.name} frame while a fragmented message is unfinished")
        else:
            self._opcode = frame.opcode
            self._utf8.reset()

        self._size += len(frame.payload)
        if self.max_size is not None and self._size > self.max_size:
            raise ProtocolError(f"a message over max_size ({self.max_size} bytes)", CloseCode.TOO_BIG)
        if self._opcode is Opcode.TEXT:
            try:
                self._utf8.decode(frame.payload, final=frame.fin)
            except UnicodeDecodeError:
                raise ProtocolError("a text message that is not valid UTF-8", CloseCode.INVALID_DATA) from None
        self._parts.append(frame.payload)
        if not frame.fin:
            return None

        opcode, payload = self._opcode, b"".join(self._parts)
        self._opcode, self._parts, self._size = None, [], 0
        data: str | bytes = payload.decode() if opcode is Opcode.TEXT else payload
        return Message(opcode, data)


def _control_message(frame: Frame) -> Message:
    if frame.opcode is Opcode.CLOSE:
        code, reason = decode_close_payload(frame.payload)
        return Message(Opcode.CLOSE, reason, code)
    return Message(frame.opcode, frame.payload)


def decode(data: bytes, *, masked: bool | None = None) -> Frame:
    """Exactly one frame from ``data`` (for examples and exercises; streams use a decoder)."""
    decoder = FrameDecoder(masked=masked, max_size=None)
    frames = decoder.feed(data)
    if len(frames) != 1 or decoder.pending:
        raise ValueError(f"expected exactly one frame, got {len(frames)} and {decoder.pending} bytes more")
    return frames[0]


def dissect(data: bytes) -> list[tuple[str, str, str]]:
    """The header of the frame ``data`` begins with, field by field: ``(bytes, field, value)``.

    For the lesson's byte-by-byte table; the payload is shown unmasked.
    """
    frame = decode(data, masked=None)
    first, second = data[0], data[1]
    rows = [
        ("0", "FIN", f"{first >> 7} ({'last frame' if frame.fin else 'more to come'})"),
        ("0", "RSV1-3", f"{(first >> 4) & 0x7:03b} (no extension)"),
        ("0", "opcode", f"{first & 0x0F:#x} ({frame.opcode.name})"),
        ("1", "MASK", f"{second >> 7} ({'masked: a client sent it' if second & 0x80 else 'not masked'})"),
        ("1", "payload len", f"{second & 0x7F}"),
    ]
    offset = 2
    if second & 0x7F == 126:
        rows.append(("2-3", "extended length (16 bit)", str(len(frame.payload))))
        offset = 4
    elif second & 0x7F == 127:
        rows.append(("2-9", "extended length (64 bit)", str(len(frame.payload))))
        offset = 10
    if frame.mask_key is not None:
        rows.append((f"{offset}-{offset + 3}", "masking key", frame.mask_key.hex(" ")))
        offset += 4
    shown = frame.payload if len(frame.payload) <= 32 else frame.payload[:32] + b"..."
    where = f"{offset}-{offset + len(frame.payload) - 1}" if frame.payload else "-"
    rows.append((where, "payload", repr(shown)))
    return rows
