"""The frame codec: RFC 6455 §5.7's examples byte for byte, round trips, and every rejection."""

from __future__ import annotations

import struct

import pytest

from labtools.handmade import codec
from labtools.handmade.codec import (
    CloseCode,
    Frame,
    FrameDecoder,
    Message,
    MessageDecoder,
    Opcode,
    ProtocolError,
)

RFC_KEY = bytes([0x37, 0xFA, 0x21, 0x3D])

# RFC 6455 §5.7, "Examples".
UNMASKED_HELLO = bytes([0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])
MASKED_HELLO = bytes([0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
FRAGMENT_HEL = bytes([0x01, 0x03, 0x48, 0x65, 0x6C])
FRAGMENT_LO = bytes([0x80, 0x02, 0x6C, 0x6F])
UNMASKED_PING = bytes([0x89, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])
MASKED_PONG = bytes([0x8A, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
BINARY_256_HEADER = bytes([0x82, 0x7E, 0x01, 0x00])
BINARY_64K_HEADER = bytes([0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00])


# --- RFC 6455 §5.7, encoding ---------------------------------------------------------------


def test_rfc_unmasked_text_encodes() -> None:
    assert codec.text("Hello") == UNMASKED_HELLO


def test_rfc_masked_text_encodes() -> None:
    assert codec.text("Hello", mask=True, mask_key=RFC_KEY) == MASKED_HELLO


def test_rfc_fragmented_text_encodes() -> None:
    assert codec.encode(Opcode.TEXT, b"Hel", fin=False) == FRAGMENT_HEL
    assert codec.encode(Opcode.CONTINUATION, b"lo") == FRAGMENT_LO


def test_rfc_ping_and_masked_pong_encode() -> None:
    assert codec.ping(b"Hello") == UNMASKED_PING
    assert codec.pong(b"Hello", mask=True, mask_key=RFC_KEY) == MASKED_PONG


def test_rfc_256_and_65536_byte_binary_headers() -> None:
    assert codec.binary(bytes(256)) == BINARY_256_HEADER + bytes(256)
    assert codec.binary(bytes(65536)) == BINARY_64K_HEADER + bytes(65536)


# --- RFC 6455 §5.7, decoding ---------------------------------------------------------------


def test_rfc_unmasked_text_decodes_on_a_client() -> None:
    assert MessageDecoder(masked=False).feed(UNMASKED_HELLO) == [Message(Opcode.TEXT, "Hello")]


def test_rfc_masked_text_decodes_on_a_server() -> None:
    frame = codec.decode(MASKED_HELLO, masked=True)
    assert frame == Frame(Opcode.TEXT, b"Hello")
    assert frame.mask_key == RFC_KEY
    assert MessageDecoder(masked=True).feed(MASKED_HELLO) == [Message(Opcode.TEXT, "Hello")]


def test_rfc_fragments_decode_into_one_message() -> None:
    frames = FrameDecoder(masked=False).feed(FRAGMENT_HEL + FRAGMENT_LO)
    assert frames == [Frame(Opcode.TEXT, b"Hel", fin=False), Frame(Opcode.CONTINUATION, b"lo")]
    decoder = MessageDecoder(masked=False)
    assert decoder.feed(FRAGMENT_HEL) == []
    assert decoder.feed(FRAGMENT_LO) == [Message(Opcode.TEXT, "Hello")]


def test_rfc_ping_and_pong_decode() -> None:
    assert MessageDecoder(masked=False).feed(UNMASKED_PING) == [Message(Opcode.PING, b"Hello")]
    assert MessageDecoder(masked=True).feed(MASKED_PONG) == [Message(Opcode.PONG, b"Hello")]


@pytest.mark.parametrize(("header", "size"), [(BINARY_256_HEADER, 256), (BINARY_64K_HEADER, 65536)])
def test_rfc_long_binary_frames_decode(header: bytes, size: int) -> None:
    payload = bytes(range(256)) * (size // 256)
    assert MessageDecoder(masked=False).feed(header + payload) == [Message(Opcode.BINARY, payload)]


def test_a_control_frame_between_fragments_comes_out_at_once() -> None:
    decoder = MessageDecoder(masked=False)
    out = decoder.feed(FRAGMENT_HEL + UNMASKED_PING + FRAGMENT_LO)
    assert out == [Message(Opcode.PING, b"Hello"), Message(Opcode.TEXT, "Hello")]


def test_a_character_split_across_fragments_is_fine() -> None:
    data = "é".encode()  # two bytes, one in each fragment
    wire = codec.encode(Opcode.TEXT, data[:1], fin=False) + codec.encode(Opcode.CONTINUATION, data[1:])
    assert MessageDecoder(masked=False).feed(wire) == [Message(Opcode.TEXT, "é")]


# --- lengths and round trips ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "header"), [(0, 2), (1, 2), (125, 2), (126, 4), (127, 4), (65535, 4), (65536, 10), (70000, 10)]
)
@pytest.mark.parametrize("mask", [False, True])
def test_round_trip_across_length_boundaries(size: int, header: int, mask: bool) -> None:
    payload = bytes(i % 251 for i in range(size))
    wire = codec.binary(payload, mask=mask)
    assert len(wire) == header + (4 if mask else 0) + size
    assert codec.header_size(size, mask) == len(wire) - size
    assert MessageDecoder(masked=mask).feed(wire) == [Message(Opcode.BINARY, payload)]


def test_header_size_is_2_to_14_bytes() -> None:
    assert codec.header_size(0, False) == 2
    assert codec.header_size(10**9, True) == 14


def test_the_decoder_works_one_byte_at_a_time() -> None:
    wire = codec.text("Hello", mask=True) + codec.binary(bytes(300), mask=True) + codec.close(1000, "bye", mask=True)
    decoder = MessageDecoder(masked=True)
    out: list[Message] = []
    for i in range(len(wire)):
        out += decoder.feed(wire[i : i + 1])
    assert out == [
        Message(Opcode.TEXT, "Hello"),
        Message(Opcode.BINARY, bytes(300)),
        Message(Opcode.CLOSE, "bye", 1000),
    ]
    assert decoder.frames.pending == 0


def test_masking_twice_gives_the_data_back() -> None:
    data = b"any bytes at all, of any length"
    assert codec.apply_mask(codec.apply_mask(data, RFC_KEY), RFC_KEY) == data
    assert codec.apply_mask(b"Hello", RFC_KEY) == bytes([0x7F, 0x9F, 0x4D, 0x51, 0x58])


def test_a_fresh_mask_key_per_frame() -> None:
    keys = {codec.text("Hello", mask=True)[2:6] for _ in range(20)}
    assert len(keys) > 1  # drawn from os.urandom: 20 equal 32-bit keys would be a broken RNG
    assert codec.decode(codec.text("Hello", mask=True), masked=True).payload == b"Hello"


def test_close_with_a_code_and_a_reason() -> None:
    wire = codec.close(1000, "bye")
    assert wire == bytes([0x88, 0x05, 0x03, 0xE8]) + b"bye"
    assert MessageDecoder(masked=False).feed(wire) == [Message(Opcode.CLOSE, "bye", 1000)]
    assert MessageDecoder(masked=False).feed(codec.close(None)) == [Message(Opcode.CLOSE, "", CloseCode.NO_STATUS)]
    assert codec.decode_close_payload(struct.pack("!H", 4000)) == (4000, "")


def test_dissect_names_every_field() -> None:
    rows = codec.dissect(MASKED_HELLO)
    fields = [field for _, field, _ in rows]
    assert fields == ["FIN", "RSV1-3", "opcode", "MASK", "payload len", "masking key", "payload"]
    assert rows[-1] == ("6-10", "payload", "b'Hello'")
    assert [f for _, f, _ in codec.dissect(BINARY_64K_HEADER + bytes(65536))][5] == "extended length (64 bit)"


# --- what must be rejected -----------------------------------------------------------------


def _error(data: bytes, masked: bool | None) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        MessageDecoder(masked=masked).feed(data)
    return info.value


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10])
def test_reserved_bits_without_an_extension(rsv: int) -> None:
    assert _error(bytes([0x81 | rsv, 0x00]), masked=False).code == 1002


def test_a_server_rejects_an_unmasked_client_frame() -> None:
    assert "masked" in str(_error(UNMASKED_HELLO, masked=True))


def test_a_client_rejects_a_masked_server_frame() -> None:
    assert "masked" in str(_error(MASKED_HELLO, masked=False))


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
def test_reserved_opcodes(opcode: int) -> None:
    assert _error(bytes([0x80 | opcode, 0x00]), masked=False).code == 1002


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_control_frames_over_125_bytes(opcode: Opcode) -> None:
    wire = bytes([0x80 | opcode, 126]) + struct.pack("!H", 126) + bytes(126)
    assert _error(wire, masked=False).code == 1002
    with pytest.raises(ProtocolError):
        codec.encode(opcode, bytes(126))


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_fragmented_control_frames(opcode: Opcode) -> None:
    assert _error(bytes([opcode, 0x00]), masked=False).code == 1002  # FIN clear
    with pytest.raises(ProtocolError):
        codec.encode(opcode, b"", fin=False)


def test_a_continuation_with_nothing_to_continue() -> None:
    assert _error(FRAGMENT_LO, masked=False).code == 1002


def test_a_new_message_inside_a_fragmented_one() -> None:
    assert _error(FRAGMENT_HEL + UNMASKED_HELLO, masked=False).code == 1002


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_invalid_close_codes(code: int) -> None:
    wire = bytes([0x88, 0x02]) + struct.pack("!H", code)
    assert _error(wire, masked=False).code == 1002
    with pytest.raises(ValueError):
        codec.close(code)


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999])
def test_valid_close_codes(code: int) -> None:
    assert MessageDecoder(masked=False).feed(codec.close(code)) == [Message(Opcode.CLOSE, "", code)]


def test_a_one_byte_close_payload() -> None:
    assert _error(bytes([0x88, 0x01, 0x03]), masked=False).code == 1002


def test_a_close_reason_that_is_not_utf8() -> None:
    assert _error(bytes([0x88, 0x03, 0x03, 0xE8, 0xFF]), masked=False).code == 1007


def test_text_that_is_not_utf8() -> None:
    assert _error(bytes([0x81, 0x02, 0xC3, 0x28]), masked=False).code == 1007


def test_invalid_utf8_is_caught_in_the_first_fragment() -> None:
    decoder = MessageDecoder(masked=False)
    with pytest.raises(ProtocolError) as info:
        decoder.feed(codec.encode(Opcode.TEXT, b"\xff", fin=False))
    assert info.value.code == 1007


def test_binary_may_hold_any_bytes() -> None:
    assert MessageDecoder(masked=False).feed(codec.binary(b"\xff\xfe")) == [Message(Opcode.BINARY, b"\xff\xfe")]


def test_a_64_bit_length_with_its_top_bit_set() -> None:
    wire = bytes([0x82, 0x7F]) + struct.pack("!Q", 1 << 63)
    assert _error(wire, masked=False).code == 1002
    assert _error(wire, masked=False).code == 1002  # before any payload byte arrives


def test_a_frame_over_max_size_is_refused_from_its_header() -> None:
    decoder = MessageDecoder(masked=False, max_size=1000)
    with pytest.raises(ProtocolError) as info:
        decoder.feed(codec.binary(bytes(1001))[:4])  # only the header has arrived
    assert info.value.code == CloseCode.TOO_BIG


def test_a_fragmented_message_over_max_size() -> None:
    decoder = MessageDecoder(masked=False, max_size=1000)
    decoder.feed(codec.encode(Opcode.BINARY, bytes(600), fin=False))
    with pytest.raises(ProtocolError) as info:
        decoder.feed(codec.encode(Opcode.CONTINUATION, bytes(600)))
    assert info.value.code == CloseCode.TOO_BIG


def test_decode_wants_exactly_one_frame() -> None:
    with pytest.raises(ValueError):
        codec.decode(UNMASKED_HELLO + UNMASKED_HELLO)
    with pytest.raises(ValueError):
        codec.decode(UNMASKED_HELLO[:-1])
