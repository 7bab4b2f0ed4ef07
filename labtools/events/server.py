"""An event server on ``websockets``: handlers by event name, broadcast, rooms, shared state.

Every WebSocket app of the course is one ``EventServer``: its state and its handlers, as the
seed's Socket.IO servers were::

    server = EventServer("minichat", page="minichat", recoverable=("msg-from-server",))

    @server.on("msg-to-server")
    async def relay(client, data):
        await server.broadcast("msg-from-server", {"text": data["text"]})

One port serves both: a plain ``GET`` gets the app's page (or another HTTP route), and a
WebSocket upgrade opens the event connection.

What the server carries so that the app need not (and is the same on one node or ten):

* ``broadcast`` reaches everyone, or a room's members, on every node of the app; ``local``
  reaches this node's sockets only (Socket.IO's ``io.local.emit``);
* ``@server.change`` and ``update`` change shared state in one order on every node
  (``changes``), through the log of the server's adapter;
* events named ``recoverable`` carry offsets, and a client that reconnects ``resume``s
  (``recovery``); every other broadcast is fire-and-forget across nodes;
* the adapter (``adapter``) decides how nodes talk: in-process by default, Redis when the
  serving code attaches ``labtools.cluster.adapter.RedisAdapter`` with ``use``.

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
from pathlib import Path
from typing import Any, Generic, TypeVar

from websockets.datastructures import Headers
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State

from ..measure.metrics import Trace, Traffic
from .adapter import BROADCASTS, Adapter, Bus, LocalAdapter
from .changes import Change, Changes
from .connection import CLOSE_TIMEOUT, Client, Connection, text_frame
from .dispatch import Dispatcher, Handler
from .forwarded import front_door_secret
from .frames import dumps
from .inline import start
from .limits import Limits
from .origins import allowed_origins_from_env, checked_origins, origin_allowed, security_headers
from .pages import HEALTH_PATH, HEALTHY, serve_file
from .recovery import LOG_KEEP, Recovery
from .replicated import Push
from .rooms import Rooms
from .turn import TurnWrites

OPEN = State.OPEN
KEEPALIVE = 20.0

#: The type of an app's state: a small class of its own, kept apart from I/O (``BandBoard``...).
S = TypeVar("S")
HttpRoute = Callable[[Request], "tuple[int, str, bytes] | Awaitable[tuple[int, str, bytes]]"]
PING = b"\x89\x00"  # an unmasked ping frame with no payload: the same bytes for every client


class EventServer(Generic[S]):
    """A WebSocket server speaking PROTOCOL.md's frames, with handlers by event name.

    ``state`` is the app's own state (``EventServer[BandBoard]``): the declared place where an
    app keeps it, for handlers and changes to use and for a cell to read through
    ``ServerHandle.read``.
    """

    def __init__(
        self,
        name: str,
        state: S = None,  # type: ignore[assignment]
        *,
        page: str | Path | None = None,
        session: Callable[[], Any] | None = None,
        recoverable: Iterable[str] = (),
        limits: Limits | None = None,
        allowed_origins: Iterable[str] = (),
        trace: Trace | None = None,
        keepalive: float | None = KEEPALIVE,
    ) -> None:
        """``page``: the folder whose ``index.html`` ``GET /`` serves: a name under ``labtools/static``
        (the course's apps), or a ``Path`` to a learner's own folder. Either can use the shared
        files of ``static/common`` (``events.js``, ``status.js``, ``course.css``).

        ``session``: a factory (a dataclass of the app's) called for each new connection; what
        it makes is ``client.session``, the app's typed per-connection data.
        ``recoverable``: the events whose pushes carry offsets and that a client can ``resume``
        (PROTOCOL.md); every other broadcast is fire-and-forget across nodes.
        ``limits``: what one client (and all of them) may cost (``Limits()``: the defaults).
        ``allowed_origins``: browser origins (``scheme://host[:port]``) allowed to open the socket
        besides the server's own, added to ``LABTOOLS_ALLOWED_ORIGINS``.
        ``keepalive``: seconds between pings (None: no pings).
        """
        self.name = name
        self.page = page
        self.session = session
        self.recoverable = frozenset(recoverable)
        self.limits = limits if limits is not None else Limits()
        self.allowed_origins = allowed_origins_from_env() | checked_origins(allowed_origins, "allowed_origins")
        #: The front door's proof (``forwarded``): its ``X-Forwarded-For`` is trusted only with it.
        self.front_door_secret = front_door_secret()
        self.trace = trace
        self.keepalive = keepalive
        self._keepalive_task: asyncio.Task | None = None
        self.traffic = Traffic()
        self.total = self.traffic.total  # every byte in and out, for the connections to count
        self.clients: dict[int, Client] = {}
        self.rooms: Rooms[Client] = Rooms()
        self.errors: list[str] = []
        #: Clients holding frames until this loop turn ends (``send_text``, handlers that finished).
        self.turn = TurnWrites()
        self.dispatcher = Dispatcher(self.traffic, self.send_text, self.errors, trace, release=self.turn.release)
        self.changes = Changes(state, self.clients.get)
        #: How this server reaches the other nodes of its app (``use``); in-process by default.
        self.adapter: Adapter = LocalAdapter()
        self.bus: Bus | None = None  # the adapter's, from ``start`` on
        self.recovery: Recovery | None = None  # with changes or recoverable events, from ``start`` on
        self.local = Local(self)
        self.http_routes: dict[str, HttpRoute] = {}
        self.on_connect: list[Callable[[Client], Any]] = []
        self.on_welcome: list[Callable[[Client], Any]] = []
        self.on_disconnect: list[Callable[[Client], Any]] = []
        self.on_start: list[Callable[[], Awaitable[Any]]] = []
        self.on_close: list[Callable[[], Awaitable[Any]]] = []
        self.slow_clients_dropped = 0
        #: Every socket, from its first byte (clients are those past the handshake).
        self.connections: set[Connection] = set()
        self._tasks: set[asyncio.Task] = set()  # connect and disconnect callbacks that suspended
        self._emitted = 0  # single emits so far (how many frames a welcome sent)
        self._sent: asyncio.Future[None] | None = None  # what a broadcast already sent returns
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self.host = ""
        self.port = 0

    @property
    def state(self) -> S:
        return self.changes.state

    @state.setter
    def state(self, state: S) -> None:
        self.changes.state = state

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
            self.dispatcher.register(event, handler, cost)
            return handler

        return register

    def change(self, fn: Change) -> Change:
        """Register a change of the shared state: ``fn(state, data)`` or ``fn(state, data, sender)``.

        Deterministic, validating before it changes anything: every node applies it, in the
        log's order (``changes``). Ask for it with ``await server.update(fn, data, sender=client)``.
        """
        self.changes.register(fn)
        return fn

    async def update(self, fn: Change | str, data: Any = None, *, sender: Client | None = None) -> Any:
        """Apply the change ``fn`` with ``data`` on every node, in one order; what it returned here.

        Raises the ``EventError`` the change raised (nothing changed anywhere), or
        ``unavailable`` when the log could not take it (the broker is away).
        """
        name = self.changes.name_of(fn)
        recovery = self.recovery
        if recovery is None:
            raise RuntimeError(f"{self.name}: start the server before update()")
        if self.changes.applying:  # every node would append it again while applying this one
            raise RuntimeError(f"{self.name}: update() inside a change; call the other change's function directly")
        return await recovery.submit_soon(sender.id if sender is not None else None, {"c": name, "d": data})

    def welcome(self, callback: Callable[[Client], Any]) -> Callable[[Client], Any]:
        """Register what a new connection is sent first, synchronously (``client.emit`` the
        state): run after the ``connected`` callbacks, and again when a client of an app with
        state resumes after missing changes."""
        self.on_welcome.append(callback)
        return callback

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

    def use(self, adapter: Adapter) -> None:
        """Make this server one node of an app through ``adapter`` (before ``start``). Serving
        code calls it (``--broker``, ``nodes=``); an app's ``build()`` never does."""
        if self._server is not None:
            raise RuntimeError(f"{self.name}: use() an adapter before the server starts")
        self.adapter = adapter

    # ----- emitting ------------------------------------------------------------------------

    def broadcast(self, event: str, data: Any = None, *, to: str | None = None,
                  exclude: Client | None = None) -> Awaitable[None]:
        """Emit ``event`` to everyone, or to room ``to``'s members, on every node, but ``exclude``.

        Sent at once; what it returns may be awaited (needed only to know that a recoverable
        event reached the log: a failure then raises ``unavailable``). Inside a change the
        broadcast is sent by every node, to its own sockets, once the change is applied.
        """
        if self.changes.applying:
            self.changes.collect(Push(event, data, to, exclude))
            return self._already_sent()
        if event in self.recoverable:
            return self._through_log(event, data, to, exclude)
        text = dumps({"event": event, "data": data})
        bus = self.bus
        if bus is not None and bus.reaches_others:
            bus.post(BROADCASTS, {"to": to, "event": event, "text": text})
        self.deliver(event, text, to, exclude)
        return self._already_sent()

    def _through_log(self, event: str, data: Any, to: str | None, exclude: Client | None) -> asyncio.Future:
        """A recoverable broadcast outside any change: an entry of the log, pushed with its offset."""
        if self.recovery is None:
            raise RuntimeError(f"{self.name}: start the server before broadcasting {event!r}")
        command = {"b": event, "d": data, "to": to, "x": exclude is not None}
        sent = self.recovery.submit_soon(exclude.id if exclude is not None else None, command)
        sent.add_done_callback(self._note_failure)
        return sent

    def _note_failure(self, sent: asyncio.Future) -> None:
        """A broadcast nobody awaited must not fail in silence: its error is kept in ``errors``."""
        if not sent.cancelled() and sent.exception() is not None:
            self.errors.append(f"broadcast: {sent.exception()!r}")

    def _already_sent(self) -> asyncio.Future[None]:
        if self._sent is None:
            self._sent = asyncio.get_running_loop().create_future()
            self._sent.set_result(None)
        return self._sent

    def deliver(self, event: str, text: str, to: str | None, exclude: Client | None) -> int:
        """Write an encoded broadcast to this node's clients (or its members of room ``to``)."""
        targets: Iterable[Client] = self.clients.values() if to is None else self.rooms.members(to)
        if exclude is not None:
            targets = [c for c in targets if c is not exclude]
        return self.send_text(targets, event, text, at_once=True)

    def _from_bus(self, message: dict[str, Any]) -> None:
        """Another node broadcast: write its frame to our sockets (everyone, or the room's members)."""
        to, event, text = message.get("to"), message.get("event"), message.get("text")
        if not (isinstance(event, str) and isinstance(text, str) and (to is None or isinstance(to, str))):
            self.errors.append(f"bus: a broadcast of an unexpected shape from {message.get('node')!r}")
            return
        self.deliver(event, text, to, None)

    def emit_to(self, client: Client, event: str, data: Any) -> None:
        """``client.emit``: one event to one client, with an offset when it is recoverable."""
        self._emitted += 1
        recovery = self.recovery
        if recovery is not None and event in self.recoverable:
            text = recovery.frame(event, data)
        else:
            text = dumps({"event": event, "data": data})
        self.send_text([client], event, text)

    def send_text(self, targets: Iterable[Client], event: str, text: str, *, at_once: bool = False) -> int:
        """Write one already-encoded frame to every open target (the hot path).

        Per delivery: a state check, a buffer check, and the frame's shared bytes appended to
        what the client holds (corked while a handler of its own runs, or held for the turn) or,
        for a client that holds nothing, held until this turn of the event loop ends
        (``TurnWrites``): whatever one socket is sent in one turn leaves in one system call.
        In the chat, the push of A's message to B and B's own acknowledgement and push, answered
        by the same batch, are one write instead of two. A broadcast (``at_once``) is written at
        once instead: one frame for many sockets, which rarely meets a second frame for the same
        socket in one turn, is not worth holding. A client whose unsent bytes would pass
        ``Limits.client_buffer`` is dropped rather than buffered for: it must not make the
        server grow, nor hold anyone else back. The server-wide ``Limits.total_buffer`` is
        checked when a target is past its read-pause mark, or when the backlogs of this frame's
        targets add up past the cap (many clients each a little behind).
        """
        frame = text_frame(text)
        size = len(frame)
        sent = 0
        trace = self.trace
        room = self.limits.client_buffer - size
        high = self.limits.read_pause
        backlog = False
        backlogs = 0  # what this frame's targets hold unsent, this frame included
        for client in targets:
            if client.protocol.state is not OPEN:
                continue
            transport = client.transport
            buffered = transport.get_write_buffer_size() + client.pending
            if buffered > room and buffered > 0:  # an empty buffer still takes one large frame
                self.drop_slow(transport)
                continue
            if buffered:
                backlogs += buffered + size
                backlog = backlog or buffered > high
            out = client.out
            if out is not None:
                out.append(frame)
                client.pending += size
            elif at_once:
                transport.write(frame)
            else:
                client.out = [frame]
                client.pending = size
                self.turn.hold(client)
            sent += 1
            if trace is not None:
                trace.record("server", client.name, event)
        if backlog or backlogs > self.limits.total_buffer:
            self._enforce_total_buffer()
        size *= sent
        counter = self.traffic.route(f"send {event}")
        counter.requests += sent
        counter.bytes_out += size
        self.total.bytes_out += size
        return sent

    def drop_slow(self, transport: asyncio.WriteTransport) -> None:
        """A client that stopped reading would make the server buffer without bound: cut it."""
        if not transport.is_closing():
            self.slow_clients_dropped += 1
            transport.abort()

    def buffered(self) -> int:
        """Bytes written to clients that their sockets have not taken yet, all clients together."""
        return sum(c.transport.get_write_buffer_size() + c.pending for c in self.clients.values())

    def _enforce_total_buffer(self) -> None:
        """Past ``Limits.total_buffer``, cut the clients with the largest backlogs first."""
        sizes = sorted(((c.transport.get_write_buffer_size() + c.pending, c) for c in self.clients.values()),
                       key=lambda pair: pair[0], reverse=True)
        total = sum(size for size, _client in sizes)
        for size, client in sizes:
            if total <= self.limits.total_buffer:
                break
            self.drop_slow(client.transport)
            total -= size

    # ----- serving -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Connect the adapter (its bus; its log when the app has changes or recoverable
        events), run the ``starting`` callbacks, then listen."""
        self.dispatcher.closing = False
        self.bus = self.adapter.bus(self.name)
        self.bus.subscribe(BROADCASTS, self._from_bus)
        try:
            await self.bus.start()
            if self.changes.functions or self.recoverable:
                await self._open_log()
            for callback in self.on_start:
                await callback()
            # No compression (see the module), one keepalive loop for every client (keep_alive).
            self._server = await asyncio.get_running_loop().create_server(lambda: Connection(self), host, port)
        except BaseException:
            await self._disconnect()
            raise
        sockname = next(iter(self._server.sockets)).getsockname()
        self.host, self.port = sockname[0], sockname[1]
        if self.keepalive:
            self._keepalive_task = asyncio.get_running_loop().create_task(self.keep_alive(self.keepalive))

    async def _open_log(self) -> None:
        """Join the app's log: restore the state it holds, then apply what follows, in order."""
        self.recovery = Recovery(
            self.changes, self.adapter.log(self.name, keep=LOG_KEEP), node=self.adapter.node,
            clients=self.clients, rooms=self.rooms, send=self.send_text, recoverable=self.recoverable,
            welcome=self._welcome, errors=self.errors,
        )
        if self.recoverable and "resume" not in self.dispatcher.handlers:
            self.dispatcher.register("resume", self._resume)
        await self.recovery.open()

    def _resume(self, client: Client, data: Any) -> dict[str, Any]:
        """``resume``, for an app with recoverable events that does not answer it itself."""
        assert self.recovery is not None
        return self.recovery.resume(client, data)

    def _welcome(self, client: Client) -> int:
        """Run the ``welcome`` callbacks for ``client``; how many frames they sent it."""
        before = self._emitted
        for callback in self.on_welcome:
            callback(client)
        return self._emitted - before

    async def keep_alive(self, interval: float) -> None:
        """Ping every client each ``interval``; cut those not heard from in two intervals.

        Pings keep idle connections alive through proxies (Binder's closes silent ones) and
        find peers that vanished without a FIN. websockets would run a task per connection for
        this (about a kilobyte each); one loop over a shared, pre-encoded frame does the same.
        Browsers and websockets clients answer pings with pongs on their own.
        """
        while True:
            await asyncio.sleep(interval)
            silent_since = time.monotonic() - 2 * interval
            for client in list(self.clients.values()):
                if client.protocol.state is not OPEN:
                    continue
                if client.connection.heard < silent_since:
                    client.transport.abort()
                else:
                    client.write(PING)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def aclose(self) -> None:
        """Stop listening and close every connection (idempotent).

        Frames already received but not yet handled are dropped, and async handlers still
        running are cancelled: shutting down must not first work through a flood's backlog.
        """
        if self._server is None:
            return
        server, self._server = self._server, None
        self.dispatcher.cancel_running()
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            self._keepalive_task = None
        server.close()
        for connection in list(self.connections):
            connection.close(CloseCode.GOING_AWAY)  # during the opening handshake: aborted
        # Each connection is gone within CLOSE_TIMEOUT (its close deadline aborts it).
        deadline = time.monotonic() + CLOSE_TIMEOUT + 1.0
        while (self.connections or self._tasks) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()
        for callback in self.on_close:
            try:
                await callback()
            except Exception as exc:  # one failing clean-up must not skip the others
                self.errors.append(f"close callback: {exc!r}")
        await self._disconnect()

    async def _disconnect(self) -> None:
        """Leave the app's log and bus (after a start that failed half-way too)."""
        recovery, self.recovery = self.recovery, None
        if recovery is not None:
            await recovery.close()
        bus, self.bus = self.bus, None
        if bus is not None:
            await bus.aclose()

    # ----- what a Connection asks of its server (connection.Endpoint) ------------------------

    @property
    def closing(self) -> bool:
        """Shutting down: new upgrades are refused, frames not yet handled dropped."""
        return self.dispatcher.closing

    def respond(self, request: Request) -> Response | Awaitable[Response | None] | None:
        """The opening handshake's request: None upgrades it; a ``Response`` answers it (a page,
        a route, a 404, the Origin check's 403)."""
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if not origin_allowed(request.headers, self.port, self.allowed_origins):
                self.traffic.request("GET / (upgrade refused: origin)")
                return self._response(request, 403, "text/plain; charset=utf-8", b"origin not allowed\n")
            # The upgrade is an HTTP request too: counted, so that a crowd's requests add up.
            self.traffic.request("GET / (WebSocket upgrade)")
            return None
        path = request.path.partition("?")[0]
        if path == HEALTH_PATH:
            return self._response(request, *HEALTHY)
        if path in self.http_routes:
            result = self.http_routes[path](request)
            if inspect.isawaitable(result):
                return self._route_later(request, path, result)
            return self._answer(request, path, result)
        if self.page is not None and (path == "/" or path.count("/") == 1):
            return self._answer(request, path, serve_file(self.page, path))
        return self._answer(request, path, (404, "text/plain; charset=utf-8", b"not found\n"))

    async def _route_later(self, request: Request, path: str, result: Awaitable[tuple[int, str, bytes]]) -> Response:
        return self._answer(request, path, await result)

    def _answer(self, request: Request, path: str, result: tuple[int, str, bytes]) -> Response:
        status, content_type, body = result
        self.traffic.request(f"GET {path}" if status != 404 else "GET (not found)")
        return self._response(request, status, content_type, body)

    def _response(self, request: Request, status: int, content_type: str, body: bytes) -> Response:
        headers = Headers(
            [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-cache"),
             *security_headers(request.headers, self.allowed_origins)]
        )
        return Response(status, HTTPStatus(status).phrase, headers, body)

    def opened(self, connection: Connection) -> Client:
        """A socket finished its opening handshake: a ``Client``, greeted (connect callbacks,
        then the welcome) before any of its frames is handled."""
        client = Client(next(self._ids), self, connection, self.session() if self.session is not None else None)
        self.clients[client.id] = client
        corked = client.cork()  # the welcome's frames leave in one write
        try:
            running = start(self._greet(client), client)
        finally:
            if corked:
                client.flush()
        if running is not None:
            self._keep(running)
            connection.hold(running)
        return client

    async def _greet(self, client: Client) -> None:
        for callback in self.on_connect:
            try:
                await self._call(callback, client)
            except Exception as exc:  # e.g. a welcome that fails to send: the connection stays
                self.errors.append(f"connect callback: {exc!r}")
        try:
            if self.recovery is not None:
                self.recovery.welcome(client)
            else:
                self._welcome(client)
        except Exception as exc:
            self.errors.append(f"welcome: {exc!r}")

    def received(self, client: Client, text: str, then: Callable[[], None]) -> asyncio.Future | None:
        """A text frame of ``client``: dispatched inline; the Task of a handler that suspended
        (which calls ``then`` once its acknowledgement is written)."""
        return self.dispatcher.dispatch(client, text, then)

    def lost(self, client: Client) -> None:
        """A client's socket closed (and its last handler finished): forget it everywhere."""
        del self.clients[client.id]
        self.rooms.leave_all(client)
        if self.recovery is not None:
            self.recovery.forget(client)
        if self.on_disconnect:
            running = start(self._farewell(client))
            if running is not None:
                self._keep(running)

    async def _farewell(self, client: Client) -> None:
        for callback in self.on_disconnect:
            try:
                await self._call(callback, client)
            except Exception as exc:  # one failing callback must not stop the others
                self.errors.append(f"disconnect callback: {exc!r}")

    def _keep(self, task: asyncio.Task) -> None:
        """A callback's Task, kept until done (``aclose`` waits for them)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _call(callback: Callable[..., Any], *args: Any) -> Any:
        result = callback(*args)
        if inspect.isawaitable(result):
            result = await result
        return result


class Local:
    """``server.local``: broadcasts that reach this node's sockets only (Socket.IO's ``.local``),
    for what each node says to its own clients (the chat's presence, which every node merges)."""

    def __init__(self, server: EventServer) -> None:
        self.server = server

    def broadcast(self, event: str, data: Any = None, *, to: str | None = None, exclude: Client | None = None) -> int:
        """Emit ``event`` to this node's clients (or its members of room ``to``) but ``exclude``;
        returns how many it was written to."""
        return self.server.deliver(event, dumps({"event": event, "data": data}), to, exclude)
