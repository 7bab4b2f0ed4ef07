"""A lean HTTP/1.1 client for the polling lessons' simulated users (``sim.http_users``).

Why not aiohttp's client: a crowd of 1,000 users polling once a second, built on one
``aiohttp.ClientSession`` per user, topped out near 1,000 requests/s with a p99 above 700 ms,
in the same process as the server it measures. The lesson must show what *the server* costs,
so the clients have to be cheap: this module speaks just enough HTTP/1.1 on a bare
``asyncio.Protocol`` (one keep-alive connection, one request at a time; status line, headers,
``Content-Length`` and chunked bodies, which aiohttp uses for the SSE stream).

Every byte the client's socket sends or receives, headers included, is counted in the
client's ``Traffic`` on the request's route (``"GET /messages"``...), so client-measured bytes
can be compared with the server's ``/stats``: on loopback they must be equal.

Nothing here prints (it runs on the labtools loop thread); failures are counted in ``errors``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .. import httphead
from ..measure.metrics import Traffic

#: Seconds ``aclose`` waits for the server to finish the connection after our half-close.
CLOSE_TIMEOUT = 1.0


class HttpError(Exception):
    """A response the caller did not expect (a 4xx/5xx), with its decoded body."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200].decode(errors='replace')}")
        self.status = status
        self.body = body


@dataclass
class Response:
    """A parsed HTTP response: ``headers`` are matched case-insensitively."""

    status: int
    reason: str
    headers: httphead.Headers = field(default_factory=httphead.Headers)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


class HttpConnection(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection, parsed incrementally in ``data_received``.

    The parser is a small state machine over a ``bytearray`` so that a poll costs a handful of
    ``find`` calls, not a task and a stream reader per request like a general-purpose client.
    """

    def __init__(self, traffic: Traffic, host: str) -> None:
        self.traffic = traffic
        self.host = host
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buf = bytearray()
        self._route = "(unrouted)"
        self._state = "idle"
        self._remaining = 0
        self._parts: list[bytes] = []
        self._response: Response | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._on_chunk: Callable[[bytes], None] | None = None
        self._keep_alive = True
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        n = len(data)
        self.traffic.total.bytes_in += n
        self.traffic.route(self._route).bytes_in += n
        self._buf += data
        try:
            self._parse()
        except Exception as exc:  # a malformed response: fail the request, drop the connection
            self._fail(exc)
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self._lost.done():
            self._lost.set_result(None)
        if self._state == "until-close" and self._response is not None:
            self._finish(b"".join(self._parts) + bytes(self._buf))
        else:
            self._fail(exc or ConnectionResetError("the server closed the connection"))

    # requests ---------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._waiter is not None

    async def request(
        self,
        method: str,
        target: str,
        *,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        route: str | None = None,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> Response:
        """Send one request and wait for its whole answer.

        With ``on_chunk`` the body is streamed: each chunk goes to ``on_chunk`` as it arrives,
        and the call returns only when the stream ends (SSE).
        """
        if self.closed or self.transport is None:
            raise ConnectionResetError("the connection is closed")
        if self._waiter is not None:
            raise RuntimeError("one request at a time on an HTTP/1.1 connection")
        route = route or f"{method} {target.split('?', 1)[0]}"
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        self._route = route
        self._on_chunk = on_chunk
        self._state = "head"
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        n = len(data)
        self.traffic.total.bytes_out += n
        self.traffic.route(route).bytes_out += n
        self.traffic.request(route)  # made, whether or not it is ever answered (a held long poll)
        self.transport.write(data)
        response = await waiter
        if response.status == 200 and response.body == b"[]":
            self.traffic.total.empty += 1
            self.traffic.route(route).empty += 1
        return response

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.closed = True
        self._fail(ConnectionAbortedError("closed by the client"))

    async def shutdown(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close without losing a byte in flight: send FIN, read until the server closes.

        A plain close with an answer still unread makes the kernel reset the connection, and the
        bytes in transit are then counted by one side only. After our FIN the server reads
        everything we sent, closes, and we read everything it wrote; after ``timeout`` we abort.
        """
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            self.close()
            return
        self.closed = True  # no new request on a closing connection
        if transport.can_write_eof():
            transport.write_eof()
            try:
                await asyncio.wait_for(asyncio.shield(self._lost), timeout)
            except TimeoutError:
                transport.abort()
        self.close()

    # parsing ----------------------------------------------------------------------------
    def _parse(self) -> None:
        buf = self._buf
        while True:
            state = self._state
            if state == "head":
                end = httphead.head_end(buf)
                if end < 0:
                    return
                self._head(bytes(buf[:end]))
                del buf[:end]
            elif state == "length":
                if len(buf) < self._remaining:
                    return
                body = bytes(buf[: self._remaining])
                del buf[: self._remaining]
                self._finish(body)
            elif state == "chunk-size":
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(buf[:end]).split(b";", 1)[0].strip(), 16)
                del buf[: end + 2]
                if size == 0:
                    self._state = "trailer"
                else:
                    self._remaining = size
                    self._state = "chunk-data"
            elif state == "chunk-data":
                if len(buf) < self._remaining + 2:
                    return
                chunk = bytes(buf[: self._remaining])
                del buf[: self._remaining + 2]
                self._state = "chunk-size"
                if self._on_chunk is not None:
                    self._on_chunk(chunk)
                else:
                    self._parts.append(chunk)
            elif state == "trailer":
                if buf[:2] == b"\r\n":
                    del buf[:2]
                else:
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        return
                    del buf[: end + 4]
                self._finish(b"".join(self._parts))
            elif state == "until-close":
                if self._on_chunk is not None and buf:
                    self._on_chunk(bytes(buf))
                    buf.clear()
                return
            else:  # idle: bytes nobody asked for (none expected)
                buf.clear()
                return

    def _head(self, head: bytes) -> None:
        parsed = httphead.parse_head(head)
        status = httphead.parse_status_line(parsed.start_line)
        headers = parsed.headers
        code = status.status
        self._response = Response(code, status.reason, headers)
        self._parts = []
        self._keep_alive = not headers.has_token("connection", "close") and status.version == "HTTP/1.1"
        if headers.has_token("transfer-encoding", "chunked"):
            self._state = "chunk-size"
        elif "content-length" in headers:
            self._remaining = int(headers["content-length"])
            self._state = "length"
        elif code in (204, 304) or 100 <= code < 200:
            self._state = "length"
            self._remaining = 0
        else:
            self._state = "until-close"

    def _finish(self, body: bytes) -> None:
        response = self._response
        assert response is not None
        response.body = body
        self._state = "idle"
        self._response = None
        self._parts = []
        waiter, self._waiter = self._waiter, None
        if not self._keep_alive and self.transport is not None:
            self.transport.close()
            self.closed = True
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _fail(self, exc: BaseException) -> None:
        self._state = "idle"
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class HttpClient:
    """A keep-alive HTTP client for one base URL: reconnects when the connection was closed."""

    def __init__(self, url: str, traffic: Traffic | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected an http://HOST:PORT/ URL, not {url!r}")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 80
        self.traffic = traffic if traffic is not None else Traffic()
        self.errors = 0
        self._conn: HttpConnection | None = None
        self._lock = asyncio.Lock()

    async def connection(self) -> HttpConnection:
        if self._conn is None or self._conn.closed:
            loop = asyncio.get_running_loop()
            host = f"{self.host}:{self.port}"
            _transport, conn = await loop.create_connection(
                lambda: HttpConnection(self.traffic, host), self.host, self.port
            )
            self._conn = conn
        return self._conn

    @property
    def in_flight(self) -> bool:
        return self._conn is not None and self._conn.busy

    async def request(self, method: str, target: str, **kwargs: Any) -> Response:
        """One request; concurrent callers queue (HTTP/1.1 has one answer in flight)."""
        async with self._lock:
            conn = await self.connection()
            return await conn.request(method, target, **kwargs)

    async def get_json(self, target: str, **kwargs: Any) -> Any:
        """GET a JSON answer; anything but 200 raises ``HttpError``."""
        response = await self.request("GET", target, **kwargs)
        if response.status != 200:
            raise HttpError(response.status, response.body)
        return response.json()

    async def post_json(self, target: str, payload: Any, **kwargs: Any) -> Response:
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        return await self.request("POST", target, body=body, headers=headers, **kwargs)

    async def aclose(self) -> None:
        """Close the connection gracefully (``HttpConnection.shutdown``); idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.shutdown()


async def send(url_or_client: str | HttpClient, sender: str, to: str, text: str) -> dict:
    """``POST /messages``: store a message from ``sender`` to ``to``; returns it with its id."""
    client = url_or_client if isinstance(url_or_client, HttpClient) else HttpClient(url_or_client)
    try:
        response = await client.post_json("/messages", {"from": sender, "to": to, "text": text})
        if response.status != 201:
            raise HttpError(response.status, response.body)
        return response.json()
    finally:
        if client is not url_or_client:
            await client.aclose()
