"""Lesson 03 (the handshake and frames): an accept key, a frame's length, framing overhead.

Each checker recomputes the answer with ``labtools.handmade.handshake`` / ``labtools.handmade.codec``, so the
exercise and the lesson's code cannot drift apart.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from ..handmade import codec, handshake
from .registry import call, exercise, not_a_function

# RFC 6455 §1.2's other example key (the lesson used §1.3's "the sample nonce").
KEY = "x3JJHMbDL1EzLkh9GBhXDw=="

def check_accept(answer: Any) -> None:
    if isinstance(answer, bytes):
        raise AssertionError("answer should be a str: .decode() the bytes that base64.b64encode returns")
    assert isinstance(answer, str), f"answer should be the Sec-WebSocket-Accept value, a str, not {answer!r}"
    expected = handshake.accept_key(KEY)
    assert answer.strip() == expected, (
        f"{answer!r} is not it: append the GUID {handshake.GUID} to the key, take the SHA-1 *digest* "
        "(20 bytes, not the hex string) and encode it in base64"
    )


@exercise("03.1", check_accept, value=True, imports="import base64\nimport hashlib")
def accept() -> str:
    key = "x3JJHMbDL1EzLkh9GBhXDw=="
    guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455's fixed GUID
    digest = hashlib.sha1((key + guid).encode()).digest()  # the 20 raw bytes, not .hexdigest()
    return base64.b64encode(digest).decode()


def check_length(answer: Any) -> None:
    assert isinstance(answer, int) and not isinstance(answer, bool), f"answer should be an int (bytes), not {answer!r}"
    assert answer != 126, "126 is not a length: it says 'the length is in the next 2 bytes'"
    assert answer != 11265, "the 16-bit length is big-endian (network order): 0x01 0x2c is 0x012c"
    assert answer == 300, f"{answer} is not it: read bytes 2-3 as one big-endian 16-bit number"


@exercise("03.2", check_length, value=True)
def length() -> int:
    frame = bytes.fromhex("82 7e 01 2c")
    # The second byte is MASK (0) and a 7-bit length: 0x7e = 126 means "a 16-bit length follows".
    return int.from_bytes(frame[2:4], "big")  # 0x012C


def check_overhead(answer: Any) -> None:
    assert callable(answer), not_a_function(answer, "overhead(payload_size, from_client)")
    for size in (0, 1, 125, 126, 300, 65535, 65536, 10**7):
        for from_client in (False, True):
            expected = codec.header_size(size, masked=from_client)
            got = call(answer, size, from_client)
            who = "a client" if from_client else "a server"
            assert got == expected, f"a {size}-byte payload sent by {who}: {expected} bytes of framing, not {got}"


@exercise("03.3", check_overhead)
def overhead(payload_size: int, from_client: bool) -> int:
    if payload_size <= 125:
        size = 2  # the length fits in the second byte
    elif payload_size <= 65535:
        size = 2 + 2  # 126, then a 16-bit length
    else:
        size = 2 + 8  # 127, then a 64-bit length
    return size + (4 if from_client else 0)  # clients add a 4-byte mask key
