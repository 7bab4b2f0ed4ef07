"""An event server on ``websockets``: handlers by event name, broadcast, rooms, errors.

Every WebSocket app of the course is one ``EventServer`` with handlers::

    server = EventServer("minichat", page="minichat")

    @server.on("msg-to-server")
    def relay(client, data):
        server.broadcast("msg-from-server", {"text": data["text"]})

One port serves both: a plain ``GET`` gets the app's page (or another HTTP route), and a
WebSocket upgrade opens the event connection.

Why broadcasts bypass ``websocket.send``: a server frame is not masked, so the bytes sent to
every client are identical. ``broadcast`` encodes the JSON once and the frame once, then writes
the same bytes to each open connection. The per-delivery cost is one ``transport.write``, which
is what lets one Python process fan a message out to a thousand clients. Compression is off
(see lesson 04 for the trade-off): per-message deflate would compress once per connection.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from importlib import resources
from typing import Any, Generic, TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from ..measure.metrics import Trace, Traffic
from ..measure.wire import ByteMeter, CountingTransport
from .frames import (
    Emit,
    EventError,
    decode_emit,
    dumps,
    encode_ack,
    encode_error,
    encode_failed_ack,
)

MAX_FRAME = 1_048_576
SLOW_CLIENT_BUFFER = 4 * 1_048_576
OPEN = State.OPEN
KEEPALIVE = 20.0

Handler = Callable[["Client", Any], Any]
#: The type of an app's state: a small class of its own, kept apart from I/O (``BandBoard``...).
S = TypeVar("S")
HttpRoute = Callable[[Request], "tuple[int, str, bytes] | Awaitable[tuple[int, str, bytes]]"]

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}


class RateLimit:
    """A token bucket: ``burst`` frames at once, refilled at ``per_second``."""

    __slots__ = ("burst", "per_second", "tokens", "stamp")

    def __init__(self, burst: float, per_second: float) -> None:
        self.burst = burst
        self.per_second = per_second
        self.tokens = burst
        self.stamp = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.per_second)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Client:
    """One connected socket, as the handlers see it."""

    __slots__ = ("id", "server", "connection", "protocol", "transport", "state", "rooms", "limit", "name")

    def __init__(self, id: int, server: EventServer, connection: ServerConnection) -> None:
        self.id = id
        self.server = server
        self.connection = connection
        # The broadcast loop reads these two once per delivery: keep them one lookup away.
        self.protocol = connection.protocol
        self.transport: asyncio.WriteTransport = getattr(connection, "raw_transport", connection.transport)
        self.state: dict[str, Any] = {}
        self.rooms: set[str] = set()
        self.limit = RateLimit(*server.rate_limit)
        self.name = f"client-{id}"

    @property
    def query(self) -> str:
        """The query string of the upgrade request (``token=...`` for the chat)."""
        request = self.connection.request
        path = request.path if request is not None else "/"
        return path.partition("?")[2]

    def emit(self, event: str, data: Any = None) -> None:
        """Send one event to this client."""
        self.server.send_text([self], event, dumps({"event": event, "data": data}))

    def join(self, room: str) -> None:
        self.rooms.add(room)
        self.server.rooms.setdefault(room, set()).add(self)

    def leave(self, room: str) -> None:
        self.rooms.discard(room)
        members = self.server.rooms.get(room)
        if members is not None:
            members.discard(self)
            if not members:
                del self.server.rooms[room]

    def __repr__(self) -> str:
        return f"<Client {self.name}>"


class _MeteredConnection(ServerConnection):
    """A ``ServerConnection`` whose socket bytes are counted in the server's ``Traffic``.

    websockets' own writes (handshake, pongs, close frames) go through a ``CountingTransport``;
    ``send_text`` writes to ``raw_transport`` and counts its bytes once per broadcast instead,
    which saves three Python calls per delivery. ``heard`` is when bytes last arrived, for the
    server-wide keepalive.
    """

    def __init__(self, traffic: Traffic, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.total = traffic.total
        self.raw_transport: asyncio.WriteTransport | None = None
        self.heard = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw_transport = transport  # type: ignore[assignment]
        total = self.total

        def count_out(n: int) -> None:
            total.bytes_out += n

        super().connection_made(CountingTransport(transport, ByteMeter(None, count_out)))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.total.bytes_in += len(data)
        self.heard = time.monotonic()
        super().data_received(data)


def _text_frame(text: str) -> bytes:
    """The bytes of one unmasked, uncompressed text frame: what every client receives."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])


def _static(path: str) -> bytes:
    return resources.files("labtools").joinpath("static", path).read_bytes()


class EventServer(Generic[S]):
    """A WebSocket server speaking PROTOCOL.md's frames, with handlers by event name.

    ``state`` is the app's own state (``EventServer[BandBoard]``): the declared place where an
    app keeps it, for handlers to change and for a cell to read through ``ServerHandle.read``.
    """

    def __init__(
        self,
        name: str,
        state: S = None,  # type: ignore[assignment]
        *,
        page: str | None = None,
        rate_limit: tuple[float, float] = (200, 100),
        trace: Trace | None = None,
        keepalive: float | None = KEEPALIVE,
    ) -> None:
        """``page``: folder under ``labtools/static`` whose ``index.html`` ``GET /`` serves.

        ``rate_limit``: (burst, frames per second) accepted from one client before
        ``rate-limited`` errors. ``keepalive``: seconds between pings (None: no pings).
        """
        self.name = name
        self.state: S = state
        self.page = page
        self.rate_limit = rate_limit
        self.trace = trace
        self.keepalive = keepalive
        self._keepalive_task: asyncio.Task | None = None
        self.traffic = Traffic()
        self.clients: dict[int, Client] = {}
        self.rooms: dict[str, set[Client]] = {}
        self.handlers: dict[str, Handler] = {}
        self.http_routes: dict[str, HttpRoute] = {}
        self.on_connect: list[Callable[[Client], Any]] = []
        self.on_disconnect: list[Callable[[Client], Any]] = []
        self.slow_clients_dropped = 0
        self.errors: list[str] = []
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self.host = ""
        self.port = 0

    # ----- listening -----------------------------------------------------------------------

    def on(self, event: str) -> Callable[[Handler], Handler]:
        """Register the handler of ``event``: ``handler(client, data)``, sync or async.

        Its return value is the acknowledgement's data when the emit asked for one; an
        ``EventError`` it raises goes back to the sender, never to anyone else.
        """

        def register(handler: Handler) -> Handler:
            self.handlers[event] = handler
            return handler

        return register

    def connected(self, callback: Callable[[Client], Any]) -> Callable[[Client], Any]:
        """Register a callback (sync or async) for each new connection."""
        self.on_connect.append(callback)
        return callback

    def disconnected(self, callback: Callable[[Client], Any]) -> Callable[[Client], Any]:
        """Register a callback (sync or async) for each closed connection."""
        self.on_disconnect.append(callback)
        return callback

    def route(self, path: str) -> Callable[[HttpRoute], HttpRoute]:
        """Serve a plain HTTP ``GET path`` beside the socket: ``route(request) -> (status, type, body)``."""

        def register(handler: HttpRoute) -> HttpRoute:
            self.http_routes[path] = handler
            return handler

        return register

    # ----- emitting ------------------------------------------------------------------------

    def broadcast(
        self,
        event: str,
        data: Any = None,
        *,
        to: Iterable[Client] | str | None = None,
        exclude: Client | None = None,
    ) -> int:
        """Emit ``event`` to everyone (or a room's members, or given clients) but ``exclude``.

        Returns how many clients it was written to.
        """
        if to is None:
            targets: Iterable[Client] = self.clients.values()
        elif isinstance(to, str):
            targets = self.rooms.get(to, ())
        else:
            targets = to
        if exclude is not None:
            targets = [c for c in targets if c is not exclude]
        return self.send_text(targets, event, dumps({"event": event, "data": data}))

    def send_text(self, targets: Iterable[Client], event: str, text: str) -> int:
        """Write one already-encoded frame to every open target (the hot path).

        Per delivery: a state check, a buffer check and one ``transport.write`` of shared bytes.
        A client whose unsent bytes pile up past ``SLOW_CLIENT_BUFFER`` is dropped rather than
        buffered for: it must not make the server grow, nor hold anyone else back.
        """
        frame = _text_frame(text)
        sent = 0
        trace = self.trace
        limit = SLOW_CLIENT_BUFFER
        for client in targets:
            if client.protocol.state is not OPEN:
                continue
            transport = client.transport
            if transport.get_write_buffer_size() > limit:
                self._drop_slow(client)
                continue
            transport.write(frame)
            sent += 1
            if trace is not None:
                trace.record("server", client.name, event)
        size = sent * len(frame)
        counter = self.traffic.route(f"send {event}")
        counter.requests += sent
        counter.bytes_out += size
        self.traffic.total.bytes_out += size
        return sent

    def _drop_slow(self, client: Client) -> None:
        """A client that stopped reading would make the server buffer without bound: cut it."""
        self.slow_clients_dropped += 1
        client.transport.abort()

    def room(self, room: str) -> set[Client]:
        return set(self.rooms.get(room, ()))

    # ----- serving -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            compression=None,
            max_size=MAX_FRAME,
            # One keepalive task for the whole server instead of one per connection (see _ping).
            ping_interval=None,
            # A client that never answers the closing handshake must not hold up Ctrl-C for 10 s.
            close_timeout=2,
            create_connection=lambda *a, **kw: _MeteredConnection(self.traffic, *a, **kw),  # type: ignore[arg-type]
        )
        sockname = next(iter(self._server.sockets)).getsockname()
        self.host, self.port = sockname[0], sockname[1]
        if self.keepalive:
            self._keepalive_task = asyncio.get_running_loop().create_task(self._ping(self.keepalive))

    async def _ping(self, interval: float) -> None:
        """Ping every client each ``interval``; cut those not heard from in two intervals.

        Pings keep idle connections alive through proxies (Binder's closes silent ones) and
        find peers that vanished without a FIN. websockets would run a task per connection for
        this (about a kilobyte each); one loop over a shared, pre-encoded frame does the same.
        Browsers and websockets clients answer pings with pongs on their own.
        """
        ping = Frame(Opcode.PING, b"").serialize(mask=False, extensions=[])
        while True:
            await asyncio.sleep(interval)
            silent_since = time.monotonic() - 2 * interval
            for client in list(self.clients.values()):
                if client.protocol.state is not OPEN:
                    continue
                if getattr(client.connection, "heard", 0.0) < silent_since:
                    client.transport.abort()
                else:
                    client.transport.write(ping)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def aclose(self) -> None:
        """Stop listening and close every connection (idempotent)."""
        if self._server is None:
            return
        server, self._server = self._server, None
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            self._keepalive_task = None
        server.close(close_connections=True)
        await server.wait_closed()

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            # The upgrade is an HTTP request too: counted, so that a crowd's requests add up.
            self.traffic.request("GET / (WebSocket upgrade)")
            return None
        path = request.path.partition("?")[0]
        if path in self.http_routes:
            result = self.http_routes[path](request)
            if inspect.isawaitable(result):
                result = await result
            status, content_type, body = result
        elif self.page is not None and (path == "/" or path.count("/") == 1):
            status, content_type, body = self._static_file(path)
        else:
            status, content_type, body = 404, "text/plain; charset=utf-8", b"not found\n"
        self.traffic.request(f"GET {path}" if status != 404 else "GET (not found)")
        headers = Headers(
            [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-cache")]
        )
        return Response(status, HTTPStatus(status).phrase, headers, body)

    def _static_file(self, path: str) -> tuple[int, str, bytes]:
        """``/`` is the app's ``index.html``; ``/name.ext`` its own file, else the shared one."""
        filename = "index.html" if path == "/" else path[1:]
        suffix = "." + filename.rpartition(".")[2]
        if suffix not in CONTENT_TYPES or filename.startswith("."):
            return 404, "text/plain; charset=utf-8", b"not found\n"
        for folder in (self.page, "common"):
            try:
                return 200, CONTENT_TYPES[suffix], _static(f"{folder}/{filename}")
            except (FileNotFoundError, IsADirectoryError):
                continue
        return 404, "text/plain; charset=utf-8", b"not found\n"

    async def _handle(self, connection: ServerConnection) -> None:
        client = Client(next(self._ids), self, connection)
        self.clients[client.id] = client
        try:
            for callback in self.on_connect:
                await self._call(callback, client)
            async for message in connection:
                if isinstance(message, bytes):
                    await connection.close(CloseCode.UNSUPPORTED_DATA, "binary frames are not accepted")
                    break
                await self._dispatch(client, message)
        except ConnectionClosed:
            pass
        finally:
            del self.clients[client.id]
            for room in list(client.rooms):
                client.leave(room)
            for callback in self.on_disconnect:
                try:
                    await self._call(callback, client)
                except Exception as exc:  # one failing callback must not stop the others
                    self.errors.append(f"disconnect callback: {exc!r}")

    @staticmethod
    async def _call(callback: Callable[..., Any], *args: Any) -> Any:
        result = callback(*args)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _dispatch(self, client: Client, text: str) -> None:
        """Answer one text frame: run its handler, or tell the sender (only) what is wrong.

        The rate limit counts every frame, malformed ones included, so a flood of junk is
        throttled like a flood of valid emits.
        """
        emit, error = decode_emit(text)
        if error is None and emit is not None:
            known = emit.event in self.handlers
            # Unknown names are counted together: a client must not grow the server's counters.
            self.traffic.request(f"recv {emit.event}" if known else "recv (unknown)")
            if self.trace is not None:
                self.trace.record(client.name, "server", emit.event if known else "(unknown)")
        else:
            known = False
            self.traffic.request("recv (invalid)")
        if not client.limit.allow():
            error = EventError("rate-limited", "too many frames; slow down")
        elif error is None and not known and emit is not None:
            error = EventError("unknown-event", f"no event called {emit.event[:64]!r}")
        elif error is None and emit is not None:
            await self._run_handler(client, emit)
            return
        assert error is not None
        self._refuse(client, emit.id if emit is not None else None, error)

    def _refuse(self, client: Client, id: int | None, error: EventError) -> None:
        """A failed acknowledgement when the frame had an ``id``, else an ``error`` event."""
        reply = encode_failed_ack(id, error) if id is not None else encode_error(error)
        self.send_text([client], "error", reply)

    async def _run_handler(self, client: Client, emit: Emit) -> None:
        try:
            result = await self._call(self.handlers[emit.event], client, emit.data)
            reply = encode_ack(emit.id, result) if emit.id is not None else None
        except EventError as error:
            self._refuse(client, emit.id, error)
            return
        except Exception as exc:  # a bug in a handler (or an unencodable result) answers this client only
            self.errors.append(f"{emit.event}: {exc!r}")
            self._refuse(client, emit.id, EventError("internal", "the server failed to handle this event"))
            return
        if reply is not None:
            self.send_text([client], "ack", reply)


def require(condition: bool, message: str, code: str = "invalid-data") -> None:
    """Refuse the current event with ``code`` unless ``condition`` holds."""
    if not condition:
        raise EventError(code, message)

