"""HTTP/1.1 message heads, parsed without I/O: bytes in, a start line and headers out.

Shared by the hand-made WebSocket handshake (``handmade.handshake``) and the polling lessons'
client (``polling.client``) so that labtools reads a head one way: one set of rules about
line endings, header syntax, repeated headers and size, with one kind of error.

A head is the start line and the header lines, each ended by CRLF, then an empty line
(RFC 9112 §2.1). Header names are matched case-insensitively; a header sent twice counts as
one with both values, comma-separated (RFC 9110 §5.3).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

#: A head longer than this is refused rather than buffered forever.
MAX_HEAD = 16 * 1024
END = b"\r\n\r\n"
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class HeadError(ValueError):
    """The bytes are not a well-formed HTTP/1.1 head (or not one this module accepts)."""


class Headers(Mapping[str, str]):
    """Header fields by case-insensitive name; iterating gives the lower-case names."""

    def __init__(self, pairs: Mapping[str, str] | None = None) -> None:
        self._fields: dict[str, str] = {}
        for name, value in (pairs or {}).items():
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        """Add one field; a repeated name joins the values with ", " (RFC 9110 §5.3)."""
        key = name.lower()
        self._fields[key] = f"{self._fields[key]}, {value}" if key in self._fields else value

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"

    def has_token(self, name: str, token: str) -> bool:
        """``Connection: keep-alive, Upgrade`` has the token ``upgrade`` (case-insensitive)."""
        return token.lower() in (part.strip().lower() for part in self.get(name, "").split(","))


@dataclass(frozen=True)
class Head:
    """A parsed head: its first line, unsplit, and its headers."""

    start_line: str
    headers: Headers


@dataclass(frozen=True)
class StatusLine:
    """``HTTP/1.1 200 OK``, split."""

    version: str
    status: int
    reason: str


def head_end(buffer: bytes | bytearray, max_size: int = MAX_HEAD) -> int:
    """Where the head in ``buffer`` ends (just after its empty line), or -1 while incomplete.

    Raises ``HeadError`` once ``buffer`` holds more than ``max_size`` bytes without an end, so a
    reader never buffers an endless head.
    """
    end = buffer.find(END, 0, max_size + len(END))
    if end < 0:
        if len(buffer) > max_size:
            raise HeadError(f"the head is longer than {max_size} bytes")
        return -1
    return end + len(END)


def parse_head(data: bytes | bytearray, max_size: int = MAX_HEAD) -> Head:
    """Parse one complete head (with or without its final empty line)."""
    if len(data) > max_size + len(END):
        raise HeadError(f"the head is longer than {max_size} bytes")
    try:
        text = bytes(data).decode("ascii")
    except UnicodeDecodeError:
        raise HeadError("the head is not ASCII") from None
    first, *lines = text.removesuffix("\r\n\r\n").split("\r\n")
    if not first:
        raise HeadError("the head has no start line")
    headers = Headers()
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.match(name):
            raise HeadError(f"not a header line: {line!r}")
        headers.add(name, value.strip(" \t"))
    return Head(first, headers)


def parse_status_line(line: str) -> StatusLine:
    """``HTTP/1.x CODE REASON`` (the reason may be empty)."""
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isascii() or not code.isdigit():
        raise HeadError(f"not an HTTP/1.x status line: {line!r}")
    return StatusLine(version, int(code), reason)


def parse_request_line(line: str) -> tuple[str, str, str]:
    """``METHOD TARGET VERSION``, exactly three parts."""
    parts = line.split(" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not parts[1] or not parts[2].startswith("HTTP/"):
        raise HeadError(f"not an HTTP request line: {line!r}")
    return parts[0], parts[1], parts[2]
