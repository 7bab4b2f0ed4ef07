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

Several nodes (lesson 11): a server given a ``bus`` (``labtools.cluster.bus``, Redis pub/sub)
is one node of an app. ``broadcast`` to everyone or to a room then also publishes the encoded
frame on the bus, and every other node writes it to its own sockets (everyone, or its members
of that room): the role of Socket.IO's Redis adapter. A broadcast ``to`` a list of clients, and
``exclude``, stay local (a ``Client`` is a socket of this node only). Pub/sub is
fire-and-forget: a node that is not subscribed at that moment misses the frame, so what must
not be lost travels another way (the chat's database, a replicated log).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from pathlib import Path
from typing import Any, Generic, TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from ..measure.metrics import Trace, Traffic
from ..measure.wire import ByteMeter
from .adapter import BROADCASTS, BroadcastBus
from .connection import Client, MeteredConnection, forget_handshake
from .frames import (
    Emit,
    EventError,
    decode_emit,
    dumps,
    encode_ack,
    encode_error,
    encode_failed_ack,
    peek_id,
)
from .limits import Limits
from .origins import allowed_origins_from_env, origin_allowed, security_headers
from .pages import serve_file

OPEN = State.OPEN
KEEPALIVE = 20.0

Handler = Callable[["Client", Any], Any]
#: The type of an app's state: a small class of its own, kept apart from I/O (``BandBoard``...).
S = TypeVar("S")
HttpRoute = Callable[[Request], "tuple[int, str, bytes] | Awaitable[tuple[int, str, bytes]]"]



def _text_frame(text: str) -> bytes:
    """The bytes of one unmasked, uncompressed text frame: what every client receives."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])


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
        page: str | Path | None = None,
        limits: Limits | None = None,
        allowed_origins: Iterable[str] = (),
        trace: Trace | None = None,
        keepalive: float | None = KEEPALIVE,
        bus: BroadcastBus | None = None,
    ) -> None:
        """``page``: the folder whose ``index.html`` ``GET /`` serves: a name under ``labtools/static``
        (the course's apps), or a ``Path`` to a learner's own folder. Either can use the shared
        files of ``static/common`` (``events.js``, ``status.js``, ``course.css``).

        ``limits``: what one client (and all of them) may cost (``Limits()``: the defaults).
        ``allowed_origins``: browser origins (``scheme://host[:port]``) allowed to open the socket
        besides the server's own, added to ``LABTOOLS_ALLOWED_ORIGINS``.
        ``keepalive``: seconds between pings (None: no pings).
        ``bus``: makes this server one node of an app (see the module's docstring); the server
        starts it before its ``starting`` callbacks and closes it after its ``closed`` ones.
        """
        self.name = name
        self.state: S = state
        self.page = page
        self.limits = limits if limits is not None else Limits()
        self.allowed_origins = allowed_origins_from_env() | {o.rstrip("/").lower() for o in allowed_origins}
        self.trace = trace
        self.keepalive = keepalive
        self.bus = bus
        self._keepalive_task: asyncio.Task | None = None
        self.traffic = Traffic()
        self.clients: dict[int, Client] = {}
        self.rooms: dict[str, set[Client]] = {}
        self.handlers: dict[str, Handler] = {}
        self.costs: dict[str, int] = {}
        self.closing = False
        self._running: set[asyncio.Future] = set()
        self.http_routes: dict[str, HttpRoute] = {}
        self.on_connect: list[Callable[[Client], Any]] = []
        self.on_disconnect: list[Callable[[Client], Any]] = []
        self.on_start: list[Callable[[], Awaitable[Any]]] = []
        self.on_close: list[Callable[[], Awaitable[Any]]] = []
        self.slow_clients_dropped = 0
        self.errors: list[str] = []
        self._ids = itertools.count(1)
        total = self.traffic.total

        def count_out(n: int) -> None:
            total.bytes_out += n

        #: Counts websockets' own writes (handshakes, pongs, close frames) into ``traffic.total``.
        self.meter = ByteMeter(None, count_out)
        self._server: Server | None = None
        self.host = ""
        self.port = 0

    # ----- listening -----------------------------------------------------------------------

    def on(self, event: str, *, cost: int = 1) -> Callable[[Handler], Handler]:
        """Register the handler of ``event``: ``handler(client, data)``, sync or async.

        Its return value is the acknowledgement's data when the emit asked for one; an
        ``EventError`` it raises goes back to the sender, never to anyone else. ``cost``: how
        many frames of the client's rate limit one such event takes (an expensive one, such as
        a login that hashes a password, weighs more).
        """
        if type(cost) is not int or not 1 <= cost <= self.limits.frame_burst:
            raise ValueError(f"cost must be an integer from 1 to the frame burst ({self.limits.frame_burst:g})")

        def register(handler: Handler) -> Handler:
            self.handlers[event] = handler
            self.costs[event] = cost
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

    def starting(self, callback: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        """Register a coroutine to await before the server listens (open a database, load state)."""
        self.on_start.append(callback)
        return callback

    def closed(self, callback: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        """Register a coroutine to await once every connection is closed (close what ``starting`` opened)."""
        self.on_close.append(callback)
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

        Returns how many clients of this node it was written to. With a ``bus``, a broadcast to
        everyone or to a room reaches the other nodes' sockets too (``exclude`` is local).
        """
        if to is None:
            targets: Iterable[Client] = self.clients.values()
        elif isinstance(to, str):
            targets = self.rooms.get(to, ())
        else:
            targets = to
        if exclude is not None:
            targets = [c for c in targets if c is not exclude]
        text = dumps({"event": event, "data": data})
        if self.bus is not None and (to is None or isinstance(to, str)):
            self.bus.post(BROADCASTS, {"to": to, "event": event, "text": text})
        return self.send_text(targets, event, text)

    def _from_bus(self, message: dict[str, Any]) -> None:
        """Another node broadcast: write its frame to our sockets (everyone, or the room's members)."""
        to, event, text = message.get("to"), message.get("event"), message.get("text")
        if not (isinstance(event, str) and isinstance(text, str) and (to is None or isinstance(to, str))):
            self.errors.append(f"bus: a broadcast of an unexpected shape from {message.get('node')!r}")
            return
        targets = self.clients.values() if to is None else self.rooms.get(to, ())
        self.send_text(list(targets), event, text)

    def send_text(self, targets: Iterable[Client], event: str, text: str) -> int:
        """Write one already-encoded frame to every open target (the hot path).

        Per delivery: a state check, a buffer check and one ``transport.write`` of shared bytes.
        A client whose unsent bytes would pass ``Limits.client_buffer`` is dropped rather than
        buffered for: it must not make the server grow, nor hold anyone else back. When a target
        was already backlogged, the server-wide ``Limits.total_buffer`` is checked too.
        """
        frame = _text_frame(text)
        sent = 0
        trace = self.trace
        room = self.limits.client_buffer - len(frame)
        high = self.limits.read_pause
        backlog = False
        for client in targets:
            if client.protocol.state is not OPEN:
                continue
            transport = client.transport
            buffered = transport.get_write_buffer_size()
            if buffered > room and buffered > 0:  # an empty buffer still takes one large frame
                self.drop_slow(transport)
                continue
            backlog = backlog or buffered > high
            transport.write(frame)
            sent += 1
            if trace is not None:
                trace.record("server", client.name, event)
        if backlog:
            self._enforce_total_buffer()
        size = sent * len(frame)
        counter = self.traffic.route(f"send {event}")
        counter.requests += sent
        counter.bytes_out += size
        self.traffic.total.bytes_out += size
        return sent

    def close_soon(self, client: Client, code: int, reason: str) -> None:
        """Close ``client``'s socket with ``code`` without waiting for its closing handshake
        (from a handler, or from code that must not await: the task is kept until it ends)."""
        task = asyncio.get_running_loop().create_task(client.connection.close(code, reason))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def drop_slow(self, transport: asyncio.WriteTransport) -> None:
        """A client that stopped reading would make the server buffer without bound: cut it."""
        if not transport.is_closing():
            self.slow_clients_dropped += 1
            transport.abort()

    def buffered(self) -> int:
        """Bytes written to clients that their sockets have not taken yet, all clients together."""
        return sum(c.transport.get_write_buffer_size() for c in self.clients.values())

    def _enforce_total_buffer(self) -> None:
        """Past ``Limits.total_buffer``, cut the clients with the largest backlogs first."""
        sizes = sorted(((c.transport.get_write_buffer_size(), c) for c in self.clients.values()),
                       key=lambda pair: pair[0], reverse=True)
        total = sum(size for size, _client in sizes)
        for size, client in sizes:
            if total <= self.limits.total_buffer:
                break
            self.drop_slow(client.transport)
            total -= size

    def room(self, room: str) -> set[Client]:
        return set(self.rooms.get(room, ()))

    # ----- serving -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.closing = False
        if self.bus is not None:
            self.bus.subscribe(BROADCASTS, self._from_bus)
            await self.bus.start()
        for callback in self.on_start:
            await callback()
        read_pause = self.limits.read_pause
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            compression=None,
            max_size=self.limits.max_frame,
            write_limit=(read_pause, read_pause // 4),
            # One keepalive task for the whole server instead of one per connection (see _ping).
            ping_interval=None,
            # A client that never answers the closing handshake must not hold up Ctrl-C for 10 s.
            close_timeout=2,
            create_connection=lambda *a, **kw: MeteredConnection(self, *a, **kw),  # type: ignore[arg-type]
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
        """Stop listening and close every connection (idempotent).

        Frames already received but not yet handled are dropped, and async handlers still
        running are cancelled: shutting down must not first work through a flood's backlog.
        """
        if self._server is None:
            if self.bus is not None:  # a start that failed after the bus started
                await self.bus.aclose()
            return
        server, self._server = self._server, None
        self.closing = True
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            self._keepalive_task = None
        for task in list(self._running):
            task.cancel()
        server.close(close_connections=True)
        await server.wait_closed()
        for callback in self.on_close:
            try:
                await callback()
            except Exception as exc:  # one failing clean-up must not skip the others
                self.errors.append(f"close callback: {exc!r}")
        if self.bus is not None:
            await self.bus.aclose()

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if not origin_allowed(request.headers, self.port, self.allowed_origins):
                self.traffic.request("GET / (upgrade refused: origin)")
                return self._response(request, 403, "text/plain; charset=utf-8", b"origin not allowed\n")
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
            status, content_type, body = serve_file(self.page, path)
        else:
            status, content_type, body = 404, "text/plain; charset=utf-8", b"not found\n"
        self.traffic.request(f"GET {path}" if status != 404 else "GET (not found)")
        return self._response(request, status, content_type, body)

    def _response(self, request: Request, status: int, content_type: str, body: bytes) -> Response:
        headers = Headers(
            [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-cache"),
             *security_headers(request.headers, self.allowed_origins)]
        )
        return Response(status, HTTPStatus(status).phrase, headers, body)

    async def _handle(self, connection: ServerConnection) -> None:
        forget_handshake(connection)
        client = Client(next(self._ids), self, connection)
        self.clients[client.id] = client
        try:
            for callback in self.on_connect:
                try:
                    await self._call(callback, client)
                except Exception as exc:  # e.g. a welcome that fails to send: the connection stays
                    self.errors.append(f"connect callback: {exc!r}")
            async for message in connection:
                if self.closing:  # shutting down: the frames still queued are not handled
                    break
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

    async def _call_handler(self, handler: Handler, client: Client, data: Any) -> Any:
        """Run a handler; an async one runs as a task that ``aclose`` can cancel."""
        result = handler(client, data)
        if not inspect.isawaitable(result):
            return result
        task = asyncio.ensure_future(result)
        self._running.add(task)
        try:
            return await task
        finally:
            self._running.discard(task)

    async def _dispatch(self, client: Client, text: str) -> None:
        """Answer one text frame: run its handler, or tell the sender (only) what is wrong.

        The rate limit counts every frame, malformed ones included, so a flood of junk is
        throttled like a flood of valid emits; it is taken before the text is parsed (one frame
        and its length in bytes), so a flood of large frames costs no parsing either. A handler
        registered with a ``cost`` takes the rest of its cost once the event name is known.
        """
        wait = client.admit(len(text))
        if wait > 0:
            self.traffic.request("recv (rate-limited)")
            self._refuse(client, peek_id(text), _rate_limited(wait))
            return
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
        if error is None and not known and emit is not None:
            error = EventError("unknown-event", f"no event called {emit.event[:64]!r}")
        elif error is None and emit is not None:
            error = self._charge(client, self.costs[emit.event])
            if error is None:
                await self._run_handler(client, emit)
                return
        assert error is not None
        self._refuse(client, emit.id if emit is not None else None, error)

    def _refuse(self, client: Client, id: int | None, error: EventError) -> None:
        """A failed acknowledgement when the frame had an ``id``, else an ``error`` event."""
        reply = encode_failed_ack(id, error) if id is not None else encode_error(error)
        self.send_text([client], "error", reply)

    @staticmethod
    def _charge(client: Client, cost: int) -> EventError | None:
        """Take the rest of a weighted event's cost (its first frame is taken already)."""
        if cost == 1:
            return None
        if client.frames.wait(cost - 1) > 0:
            return _rate_limited(client.frames.wait(cost))
        client.frames.take(cost - 1)
        return None

    async def _run_handler(self, client: Client, emit: Emit) -> None:
        """Run the handler and send its acknowledgement, both inside the error handling: a
        result that cannot be sent answers ``internal`` and the connection carries on."""
        try:
            result = await self._call_handler(self.handlers[emit.event], client, emit.data)
            if emit.id is not None:
                self.send_text([client], "ack", encode_ack(emit.id, result))
        except EventError as error:
            self._refuse(client, emit.id, error)
        except asyncio.CancelledError:
            if not self.closing:
                raise
        except Exception as exc:  # a bug in a handler (or an unencodable result) answers this client only
            self.errors.append(f"{emit.event}: {exc!r}")
            self._refuse(client, emit.id, EventError("internal", "the server failed to handle this event"))


def _rate_limited(wait: float) -> EventError:
    return EventError("rate-limited", "too many frames or bytes; retry after retryAfter seconds", retry_after=wait)


def require(condition: bool, message: str, code: str = "invalid-data") -> None:
    """Refuse the current event with ``code`` unless ``condition`` holds."""
    if not condition:
        raise EventError(code, message)

