"""The WebSocket opening handshake by hand (RFC 6455 §4): an HTTP/1.1 request, a 101 answer.

A WebSocket connection starts life as an ordinary HTTP request with three promises in it::

    GET / HTTP/1.1
    Host: 127.0.0.1:8765
    Upgrade: websocket
    Connection: Upgrade
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==
    Sec-WebSocket-Version: 13

and a server that speaks WebSocket answers ``101 Switching Protocols`` with
``Sec-WebSocket-Accept``: the SHA-1 of the key followed by a fixed GUID, in base64. That
accept value proves the server read *this* request as a WebSocket one (a plain HTTP server or
a cache could not produce it by accident); it is not security. After the blank line that ends
the 101, both sides stop speaking HTTP and send frames (``handmade.codec``).

Everything here works on bytes and strings, so the lesson can show each line; the sockets are
in ``labtools.handmade``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass

from .. import httphead
from ..httphead import Headers

# The GUID every WebSocket server appends to the key (§1.3); it is in the RFC, not a secret.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD = httphead.MAX_HEAD  # a handshake head longer than this is refused, not buffered forever


class HandshakeError(Exception):
    """The other side's request or response is not a valid WebSocket handshake."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Request:
    """A parsed upgrade request; header names are lower-cased."""

    method: str
    path: str
    headers: Headers

    @property
    def key(self) -> str:
        return self.headers["sec-websocket-key"]


@dataclass(frozen=True)
class Response:
    """A parsed handshake response; header names are lower-cased."""

    status: int
    reason: str
    headers: Headers


def make_key() -> str:
    """A fresh ``Sec-WebSocket-Key``: 16 random bytes in base64 (24 characters).

    It must be new for every connection, so that a cache that replays an old 101 is caught.
    """
    return base64.b64encode(os.urandom(16)).decode()


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for ``key``: base64(SHA-1(key + GUID)) (§4.2.2, step 5.4)."""
    digest = hashlib.sha1((key + GUID).encode()).digest()
    return base64.b64encode(digest).decode()


def is_valid_key(key: str) -> bool:
    """A key is the base64 of exactly 16 bytes."""
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def build_request(host: str, path: str = "/", *, key: str, headers: dict[str, str] | None = None) -> bytes:
    """The bytes of an upgrade request. ``host`` is ``HOST:PORT`` as the Host header wants."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def build_response(key: str, *, headers: dict[str, str] | None = None) -> bytes:
    """The bytes of the ``101 Switching Protocols`` answer to a request that sent ``key``."""
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key)}",
    ]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def build_error_response(error: HandshakeError) -> bytes:
    """A plain HTTP answer refusing the upgrade (426 also says which version we speak)."""
    body = f"{error}\n".encode()
    reasons = {400: "Bad Request", 405: "Method Not Allowed", 426: "Upgrade Required"}
    lines = [
        f"HTTP/1.1 {error.status} {reasons.get(error.status, 'Error')}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if error.status == 426:
        lines.append("Sec-WebSocket-Version: 13")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _parse_head(data: bytes) -> tuple[str, Headers]:
    """The first line and the headers of an HTTP head, as a ``HandshakeError`` when malformed."""
    try:
        head = httphead.parse_head(data, MAX_HEAD)
    except httphead.HeadError as exc:
        raise HandshakeError(f"the handshake head is malformed: {exc}") from None
    return head.start_line, head.headers


def parse_request(data: bytes) -> Request:
    """Check an upgrade request the way a server must (§4.2.1) and return it parsed."""
    first, headers = _parse_head(data)
    parts = first.split(" ")
    if len(parts) != 3 or parts[2] != "HTTP/1.1":
        raise HandshakeError(f"not an HTTP/1.1 request line: {first!r}")
    method, path, _version = parts
    if method != "GET":
        raise HandshakeError(f"a WebSocket handshake is a GET, not a {method}", 405)
    if "host" not in headers:
        raise HandshakeError("no Host header")
    if not headers.has_token("upgrade", "websocket"):
        raise HandshakeError("no 'Upgrade: websocket' header", 426)
    if not headers.has_token("connection", "upgrade"):
        raise HandshakeError("no 'Connection: Upgrade' header", 426)
    if headers.get("sec-websocket-version") != "13":
        raise HandshakeError("only Sec-WebSocket-Version 13 is spoken here", 426)
    if not is_valid_key(headers.get("sec-websocket-key", "")):
        raise HandshakeError("Sec-WebSocket-Key must be the base64 of 16 bytes")
    return Request(method, path, headers)


def parse_response(data: bytes, key: str) -> Response:
    """Check the server's answer the way a client must (§4.1) and return it parsed."""
    first, headers = _parse_head(data)
    version, _, rest = first.partition(" ")
    status_text, _, reason = rest.partition(" ")
    if version != "HTTP/1.1" or not status_text.isdigit():
        raise HandshakeError(f"not an HTTP/1.1 status line: {first!r}")
    status = int(status_text)
    if status != 101:
        raise HandshakeError(f"the server answered {status} {reason}, not 101", status)
    if not headers.has_token("upgrade", "websocket"):
        raise HandshakeError("the 101 has no 'Upgrade: websocket'")
    if not headers.has_token("connection", "upgrade"):
        raise HandshakeError("the 101 has no 'Connection: Upgrade'")
    if headers.get("sec-websocket-accept") != accept_key(key):
        raise HandshakeError("Sec-WebSocket-Accept does not match our key")
    if "sec-websocket-extensions" in headers:
        raise HandshakeError("the server accepted an extension we did not offer")
    return Response(status, reason, headers)
