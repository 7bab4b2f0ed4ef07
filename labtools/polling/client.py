"""Lean simulated HTTP clients for the polling lessons: Pedro's ``setInterval``, long polling, SSE.

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
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from ..metrics import Trace, Traffic

#: ``on_message(message, received_at)``: ``received_at`` is ``time.perf_counter()`` at receipt.
OnMessage = Callable[[dict, float], None]
#: ``on_answer(started_at, n_messages, seconds)``: one call per answer (per SSE chunk).
OnAnswer = Callable[[float, int, float], None]


class HttpError(Exception):
    """A response the caller did not expect (a 4xx/5xx), with its decoded body."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200].decode(errors='replace')}")
        self.status = status
        self.body = body


@dataclass
class Response:
    """A parsed HTTP response: ``headers`` has lower-case names."""

    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
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

    # parsing ----------------------------------------------------------------------------
    def _parse(self) -> None:
        buf = self._buf
        while True:
            state = self._state
            if state == "head":
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                self._head(bytes(buf[:end]))
                del buf[: end + 4]
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
        lines = head.decode("latin-1").split("\r\n")
        version, status, *reason = lines[0].split(" ", 2)
        if not version.startswith("HTTP/1."):
            raise ValueError(f"not an HTTP/1.x response: {lines[0]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        code = int(status)
        self._response = Response(code, reason[0] if reason else "", headers)
        self._parts = []
        self._keep_alive = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
        if "chunked" in headers.get("transfer-encoding", "").lower():
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
        if self._conn is not None:
            self._conn.close()
            self._conn = None


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


def _ignore_message(message: dict, received_at: float) -> None:
    pass


class _Receiver:
    """What the three ways of hearing about messages share: a user, a ``since``, a task."""

    route = "GET /messages"

    def __init__(
        self,
        url: str,
        user: str,
        *,
        on_message: OnMessage | None = None,
        on_answer: OnAnswer | None = None,
        traffic: Traffic | None = None,
        trace: Trace | None = None,
        since: int = 0,
    ) -> None:
        self.user = user
        self.http = HttpClient(url, traffic)
        self.traffic = self.http.traffic
        self.on_message = on_message or _ignore_message
        self.on_answer = on_answer
        self.trace = trace
        self.since = since
        self.received: list[dict] = []
        self.keep = on_message is None  # no callback: keep the messages in ``received``
        self.ready = asyncio.Event()  # set once the first request is on the wire
        self._task: asyncio.Task | None = None

    @property
    def errors(self) -> int:
        return self.http.errors

    @property
    def in_flight(self) -> int:
        """1 while a request (or stream) of ours is open at the server."""
        return 1 if self.http.in_flight else 0

    async def start(self) -> None:
        """Start receiving in the background (on the running loop)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        raise NotImplementedError

    def _deliver(self, messages: list[dict], started: float, seconds: float) -> None:
        now = time.perf_counter()
        for message in messages:
            if message["id"] > self.since:
                self.since = message["id"]
            if self.keep:
                self.received.append(message)
            self.on_message(message, now)
        if self.on_answer is not None:
            self.on_answer(started, len(messages), seconds)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self.http.aclose()


class Poller(_Receiver):
    """Pedro's ``setInterval``: ``GET /messages?user=&since=`` every ``interval`` seconds.

    Ticks are on a fixed schedule (``phase``, ``phase + interval``...), like ``setInterval``; a
    tick that finds the previous poll still running is skipped rather than piling up requests.
    """

    def __init__(self, url: str, user: str, *, interval: float = 1.0, phase: float = 0.0, **kwargs: Any) -> None:
        super().__init__(url, user, **kwargs)
        self.interval = interval
        self.phase = phase
        self._target_prefix = f"/messages?user={quote(user)}&since="

    async def poll_once(self) -> list[dict]:
        """One poll: the messages that arrived since the last one (usually none)."""
        if self.trace is not None:
            self.trace.record(self.user, "server", f"GET /messages?since={self.since}")
        started = time.perf_counter()
        response = await self.http.request("GET", self._target_prefix + str(self.since), route=self.route)
        if response.status != 200:
            raise HttpError(response.status, response.body)
        messages = json.loads(response.body)
        if self.trace is not None:
            label = "[] no new messages" if not messages else ", ".join(f"{m['from']}: {m['text']}" for m in messages)
            self.trace.record("server", self.user, label)
        self._deliver(messages, started, time.perf_counter() - started)
        return messages

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        tick = loop.time() + self.phase
        while True:
            delay = tick - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self.poll_once()
            except (OSError, HttpError, ValueError):
                self.http.errors += 1
            tick += self.interval
            now = loop.time()
            if tick < now:  # we fell behind: skip the missed ticks, as a busy browser would
                tick += ((now - tick) // self.interval + 1) * self.interval


class LongPoller(_Receiver):
    """Long polling: ``GET /messages?...&wait=SECONDS``; the server holds it until a message
    arrives or the wait runs out, and the client asks again at once."""

    def __init__(self, url: str, user: str, *, wait: float = 20.0, retry: float = 0.5, **kwargs: Any) -> None:
        super().__init__(url, user, **kwargs)
        self.wait = wait
        self.retry = retry
        self._target_prefix = f"/messages?user={quote(user)}&wait={wait:g}&since="

    async def poll_once(self) -> list[dict]:
        started = time.perf_counter()
        response = await self.http.request("GET", self._target_prefix + str(self.since), route=self.route)
        if response.status != 200:
            raise HttpError(response.status, response.body)
        messages = json.loads(response.body)
        self._deliver(messages, started, time.perf_counter() - started)
        return messages

    async def start(self) -> None:
        """Start; returns once connected, so a crowd's clock starts with every poll held."""
        await super().start()
        await self.ready.wait()

    async def _run(self) -> None:
        try:
            await self.http.connection()
        except OSError:
            self.http.errors += 1
        finally:
            self.ready.set()
        while True:
            try:
                await self.poll_once()
            except (OSError, HttpError, ValueError):
                self.http.errors += 1
                await asyncio.sleep(self.retry)


class SseParser:
    """Incremental ``text/event-stream`` parser: feed bytes, get ``(id, event, data)`` events."""

    def __init__(self) -> None:
        self._buf = b""
        self._cr = b""  # a trailing "\r" whose "\n" may come in the next chunk
        self.last_id: str | None = None

    def feed(self, data: bytes) -> list[tuple[str | None, str, str]]:
        data = self._cr + data
        self._cr = b"\r" if data.endswith(b"\r") else b""
        if self._cr:
            data = data[:-1]
        self._buf += data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events = []
        while True:
            end = self._buf.find(b"\n\n")
            if end < 0:
                return events
            block, self._buf = self._buf[:end].decode(), self._buf[end + 2 :]
            event, data_lines, event_id = "message", [], None
            for line in block.split("\n"):
                if not line or line.startswith(":"):
                    continue  # a comment (": connected", ": heartbeat")
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "id":
                    event_id = value
                elif name == "event":
                    event = value
                elif name == "data":
                    data_lines.append(value)
            if event_id is not None:
                self.last_id = event_id
            if data_lines:
                events.append((event_id, event, "\n".join(data_lines)))


class SseListener(_Receiver):
    """Server-Sent Events: one ``GET /events?user=`` that never ends; each message is pushed.

    When the stream breaks it reconnects with ``Last-Event-ID``, so the server resends only
    what the listener missed (PROTOCOL.md).
    """

    route = "GET /events"

    def __init__(self, url: str, user: str, *, retry: float = 0.2, **kwargs: Any) -> None:
        super().__init__(url, user, **kwargs)
        self.retry = retry
        self.connects = 0
        self.connected = asyncio.Event()

    async def start(self) -> None:
        """Start listening; returns once the server has accepted the stream."""
        await super().start()
        await self.connected.wait()

    def _on_chunk(self, parser: SseParser, chunk: bytes) -> None:
        started = time.perf_counter()
        self.connected.set()
        messages = [json.loads(data) for _id, event, data in parser.feed(chunk) if event == "message"]
        if messages:
            self._deliver(messages, started, 0.0)

    async def listen_once(self) -> None:
        """One stream, until the server or the network ends it."""
        parser = SseParser()
        headers = {"Accept": "text/event-stream"}
        if self.since:
            headers["Last-Event-ID"] = str(self.since)
        self.connects += 1
        response = await self.http.request(
            "GET", f"/events?user={quote(self.user)}", headers=headers, route=self.route,
            on_chunk=lambda chunk: self._on_chunk(parser, chunk),
        )
        if response.status != 200:
            self.connected.set()  # do not leave start() waiting on a refused stream
            raise HttpError(response.status, response.body)

    async def _run(self) -> None:
        while True:
            try:
                await self.listen_once()
            except (OSError, HttpError, ValueError):
                self.http.errors += 1
            await asyncio.sleep(self.retry)
