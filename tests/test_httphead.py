"""HTTP/1.1 heads parsed without I/O (labtools.httphead): the one parser labtools reads heads with."""

from __future__ import annotations

import pytest

from labtools import httphead
from labtools.httphead import HeadError, Headers


def test_a_response_head() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-More: 1\r\nVary: a\r\nvary: b\r\n\r\n"
    assert httphead.head_end(raw + b"[]") == len(raw)
    head = httphead.parse_head(raw)
    status = httphead.parse_status_line(head.start_line)
    assert (status.version, status.status, status.reason) == ("HTTP/1.1", 200, "OK")
    assert head.headers["content-type"] == head.headers["Content-Type"] == "application/json"
    assert "x-more" in head.headers and "X-MORE" in head.headers
    assert head.headers["vary"] == "a, b"  # a repeated header is one, values joined (RFC 9110 §5.3)
    assert list(head.headers) == ["content-type", "x-more", "vary"]


def test_a_request_head_and_tokens() -> None:
    head = httphead.parse_head(b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\n\r\n")
    assert httphead.parse_request_line(head.start_line) == ("GET", "/chat", "HTTP/1.1")
    assert head.headers.has_token("connection", "upgrade")
    assert not head.headers.has_token("connection", "close")
    assert Headers({"A": "1"}) == {"a": "1"}


def test_an_incomplete_head_waits_and_an_endless_one_is_refused() -> None:
    assert httphead.head_end(b"HTTP/1.1 200 OK\r\nContent-") == -1
    with pytest.raises(HeadError, match="longer"):
        httphead.head_end(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 100, max_size=64)
    with pytest.raises(HeadError, match="longer"):
        httphead.parse_head(b"GET / HTTP/1.1\r\nX: " + b"a" * 100 + b"\r\n\r\n", max_size=64)


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n Folded: no\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: caf\xc3\xa9\r\n\r\n",
    b"\r\n\r\n",
])
def test_malformed_heads(raw: bytes) -> None:
    with pytest.raises(HeadError):
        httphead.parse_head(raw)


@pytest.mark.parametrize("line", ["HTTP/2 200 OK", "HTTP/1.1 2OO OK", "HTTP/1.1 ²00 OK", "HTTP/1.1", "ICY 200 OK"])
def test_malformed_status_lines(line: str) -> None:
    with pytest.raises(HeadError):
        httphead.parse_status_line(line)


@pytest.mark.parametrize("line", ["GET /", "GET  / HTTP/1.1", "G(T / HTTP/1.1", "GET / FTP/1.0"])
def test_malformed_request_lines(line: str) -> None:
    with pytest.raises(HeadError):
        httphead.parse_request_line(line)
