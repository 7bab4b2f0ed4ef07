"""Lesson 03 (the handshake and frames): an accept key, a frame's length, framing overhead.

Each checker recomputes the answer with ``labtools.handshake`` / ``labtools.codec``, so the
exercise and the lesson's code cannot drift apart.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

from ..handmade import codec, handshake
from .registry import exercise

# RFC 6455 §1.2's other example key (the lesson used §1.3's "the sample nonce").
KEY = "x3JJHMbDL1EzLkh9GBhXDw=="

# The first bytes of a frame a server sent: what is the length of its payload?
FRAME_START = bytes([0x82, 0x7E, 0x01, 0x2C])


def check_accept(answer: Any) -> None:
    assert isinstance(answer, str), "answer should be the Sec-WebSocket-Accept value, a str"
    expected = handshake.accept_key(KEY)
    assert answer.strip() == expected, (
        f"{answer!r} is not it: append the GUID {handshake.GUID} to the key, take the SHA-1 *digest* "
        "(20 bytes, not the hex string) and encode it in base64"
    )


@exercise("03.1", check_accept)
def accept_solution() -> str:
    digest = hashlib.sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    return base64.b64encode(digest).decode()


def check_length(answer: Any) -> None:
    assert isinstance(answer, int) and not isinstance(answer, bool), "answer should be an int (bytes)"
    assert answer != 126, "126 is not a length: it says 'the length is in the next 2 bytes'"
    assert answer == 300, f"{answer} is not it: read bytes 2-3 as one big-endian 16-bit number"


@exercise("03.2", check_length)
def length_solution() -> int:
    second = FRAME_START[1] & 0x7F  # 126: a 16-bit length follows
    assert second == 126
    return int.from_bytes(FRAME_START[2:4], "big")  # 0x012C


def check_overhead(answer: Any) -> None:
    assert callable(answer), "answer should be a function overhead(payload_size, from_client) -> int"
    for size in (0, 1, 125, 126, 300, 65535, 65536, 10**7):
        for from_client in (False, True):
            expected = codec.header_size(size, masked=from_client)
            got = answer(size, from_client)
            who = "a client" if from_client else "a server"
            assert got == expected, f"a {size}-byte payload sent by {who}: {expected} bytes of framing, not {got}"


@exercise("03.3", check_overhead)
def overhead_solution() -> Callable[[int, bool], int]:
    def overhead(payload_size: int, from_client: bool) -> int:
        if payload_size <= 125:
            size = 2  # the length fits in the second byte
        elif payload_size <= 65535:
            size = 2 + 2  # 126, then a 16-bit length
        else:
            size = 2 + 8  # 127, then a 64-bit length
        return size + (4 if from_client else 0)  # clients add a 4-byte mask key

    return overhead
