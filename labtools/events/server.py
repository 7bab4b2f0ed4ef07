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
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, fields
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import Any, Generic, TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Event, State

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
    peek_id,
)

MIB = 1_048_576
MAX_FRAME = MIB
SLOW_CLIENT_BUFFER = 4 * MIB
OPEN = State.OPEN
KEEPALIVE = 20.0
CONTROL = (Opcode.PING, Opcode.PONG)
#: Extra origins a browser page may open sockets from (comma-separated), beside the server's own.
ORIGINS_ENV = "LABTOOLS_ALLOWED_ORIGINS"
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")

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


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may cost the server, and what all of them may buffer together.

    ``frames_per_second``/``frame_burst``: frames accepted from one client (control frames and
    each handler's ``cost`` included). ``bytes_per_second``/``byte_burst``: text accepted from one
    client, taken before the text is parsed (parsing 1 MiB costs tens of milliseconds).
    ``client_buffer``: unsent bytes a client may leave on the server before it is cut;
    ``read_pause``: above this, the server stops reading from that client (so it cannot make
    the server write more) until the client catches up. ``total_buffer``: unsent bytes across
    all clients; beyond it the clients with the largest backlogs are cut. ``max_frame``: the
    largest text frame accepted (1009 closes the connection beyond it).
    """

    frames_per_second: float = 100
    frame_burst: float = 200
    bytes_per_second: float = MIB / 4
    byte_burst: float = 2 * MAX_FRAME
    client_buffer: int = SLOW_CLIENT_BUFFER
    read_pause: int = 64 * 1024
    total_buffer: int = 64 * MIB
    max_frame: int = MAX_FRAME

    def __post_init__(self) -> None:
        for field in fields(self):
            if not getattr(self, field.name) > 0:
                raise ValueError(f"Limits.{field.name} must be positive")
        if self.byte_burst < self.max_frame:
            raise ValueError("Limits.byte_burst must hold one frame of max_frame bytes")
        if not self.read_pause < self.client_buffer <= self.total_buffer:
            raise ValueError("Limits need read_pause < client_buffer <= total_buffer")


class TokenBucket:
    """``burst`` units at once, refilled at ``per_second``: frames, or bytes of text."""

    __slots__ = ("burst", "per_second", "tokens", "stamp")

    def __init__(self, burst: float, per_second: float) -> None:
        self.burst = burst
        self.per_second = per_second
        self.tokens = burst
        self.stamp = time.monotonic()

    def wait(self, amount: float) -> float:
        """Seconds until ``amount`` units are available (0.0: now); takes nothing."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.per_second)
        self.stamp = now
        return max(0.0, (amount - self.tokens) / self.per_second)

    def take(self, amount: float) -> None:
        """Spend ``amount`` units; the balance may go negative (a debt the refill pays back)."""
        self.tokens -= amount


def allowed_origins_from_env() -> frozenset[str]:
    """``LABTOOLS_ALLOWED_ORIGINS``: origins (``scheme://host[:port]``) allowed on every server."""
    return frozenset(o.strip().rstrip("/").lower() for o in os.environ.get(ORIGINS_ENV, "").split(",") if o.strip())


def _origin_host(origin: str) -> str:
    """``https://hub.example:443`` -> ``hub.example``: the host[:port] a browser's Origin names,
    default port dropped, so that it compares with a ``Host`` header."""
    scheme, _, host = origin.lower().partition("://")
    default = {"http": ":80", "https": ":443"}.get(scheme)
    if default and host.endswith(default):
        host = host.removesuffix(default)
    return host


def _header_hosts(value: str | None, scheme: str) -> list[str]:
    """The hosts a ``Host`` or ``X-Forwarded-Host`` header names (proxies may list several)."""
    if not value:
        return []
    return [_origin_host(f"{scheme}://{h.strip()}") for h in value.split(",") if h.strip()]


class Client:
    """One connected socket, as the handlers see it."""

    __slots__ = ("id", "server", "connection", "protocol", "transport", "state", "rooms", "frames", "bytes", "name")

    def __init__(self, id: int, server: EventServer, connection: ServerConnection) -> None:
        self.id = id
        self.server = server
        self.connection = connection
        # The broadcast loop reads these two once per delivery: keep them one lookup away.
        self.protocol = connection.protocol
        self.transport: asyncio.WriteTransport = getattr(connection, "raw_transport", connection.transport)
        self.state: dict[str, Any] = {}
        self.rooms: set[str] = set()
        # The buckets live on the connection: control frames are counted there, before a Client exists.
        self.frames: TokenBucket = connection.frames  # type: ignore[attr-defined]
        self.bytes: TokenBucket = connection.bytes  # type: ignore[attr-defined]
        self.name = f"client-{id}"

    def admit(self, size: int) -> float:
        """Take one frame and ``size`` bytes before parsing; else the seconds to wait (nothing taken)."""
        wait = max(self.frames.wait(1), self.bytes.wait(size))
        if wait == 0.0:
            self.frames.take(1)
            self.bytes.take(size)
        return wait

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

    It also keeps a client from growing the server: websockets answers each ping with a pong on
    its own, so reading stops while this client's unsent bytes are above the high-water mark
    (``Limits.read_pause``, given as ``write_limit``), a client whose backlog still passes
    ``Limits.client_buffer`` is cut, and pings and pongs take tokens from the client's frame
    bucket: a client that runs a debt of more than one burst with them is closed with 1008.
    """

    def __init__(self, server: EventServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = server.limits
        self.events = server  # not ``server``: websockets keeps its own ``Server`` there
        self.total = server.traffic.total
        self.meter = server.meter
        self.raw_transport: asyncio.WriteTransport | None = None
        self.heard = time.monotonic()
        self.frames = TokenBucket(limits.frame_burst, limits.frames_per_second)
        self.bytes = TokenBucket(limits.byte_burst, limits.bytes_per_second)
        # websockets keeps two deques per connection, about 760 bytes each even when empty (a
        # deque allocates a 64-slot block): lists do the same job here for 56 bytes.
        self.drain_waiters = []  # type: ignore[assignment]  # append, remove, iterate: same with a list

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw_transport = transport  # type: ignore[assignment]
        # One meter for the whole server: a connection holds no counter or closure of its own.
        super().connection_made(CountingTransport(transport, self.meter))  # type: ignore[arg-type]
        self.recv_messages.frames.queue = _SmallQueue()  # type: ignore[assignment]  # made by connection_made

    def data_received(self, data: bytes) -> None:
        self.total.bytes_in += len(data)
        self.heard = time.monotonic()
        super().data_received(data)
        transport = self.raw_transport
        if transport is None:
            return
        if transport.get_write_buffer_size() > self.events.limits.client_buffer:
            self.events.drop_slow(transport)
        elif self.paused:  # websockets' queue may have resumed reading while writes are backed up
            transport.pause_reading()  # type: ignore[attr-defined]

    def process_event(self, event: Event) -> None:
        """Count pings and pongs in the frame budget (websockets answers pings by itself)."""
        if isinstance(event, Frame) and event.opcode in CONTROL:
            self.frames.wait(1)  # refill first
            self.frames.take(1)
            if self.frames.tokens < -self.frames.burst:
                self.protocol.fail(CloseCode.POLICY_VIOLATION, "too many control frames")
                self.send_data()
                return
        super().process_event(event)

    def pause_writing(self) -> None:
        """Past the high-water mark: stop reading, so this client cannot make us write more."""
        super().pause_writing()
        if self.raw_transport is not None:
            self.raw_transport.pause_reading()  # type: ignore[attr-defined]

    def resume_writing(self) -> None:
        """Back under the low-water mark: read again, unless websockets' own queue is full."""
        super().resume_writing()
        if self.raw_transport is not None and not self.recv_messages.paused:
            self.raw_transport.resume_reading()  # type: ignore[attr-defined]


_NO_HEADERS = Headers()


class _SmallQueue(list):
    """The deque operations websockets' ``Assembler`` uses, on a list: its queue holds at most
    ``max_queue`` (16) frames, so ``pop(0)`` costs nothing, and an empty list is 56 bytes."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)

    def extendleft(self, items: Iterable[Any]) -> None:
        self[0:0] = list(items)[::-1]


def _forget_handshake(connection: ServerConnection) -> None:
    """Once open, a connection keeps only its request's path (``Client.query``): the request's
    and the response's headers, about 3 KB per connection, are not read again."""
    if connection.request is not None:  # in place: websockets' parser holds this request too
        connection.request.headers = _NO_HEADERS
    connection.response = None


def _text_frame(text: str) -> bytes:
    """The bytes of one unmasked, uncompressed text frame: what every client receives."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])


def _static(path: str) -> bytes:
    return resources.files("labtools").joinpath("static", path).read_bytes()


def _common_file(filename: str) -> bytes:
    """A file every page shares (``events.js``, ``status.js``, ``course.css``)."""
    return _static(f"common/{filename}")


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
    ) -> None:
        """``page``: the folder whose ``index.html`` ``GET /`` serves: a name under ``labtools/static``
        (the course's apps), or a ``Path`` to a learner's own folder. Either can use the shared
        files of ``static/common`` (``events.js``, ``status.js``, ``course.css``).

        ``limits``: what one client (and all of them) may cost (``Limits()``: the defaults).
        ``allowed_origins``: browser origins (``scheme://host[:port]``) allowed to open the socket
        besides the server's own, added to ``LABTOOLS_ALLOWED_ORIGINS``.
        ``keepalive``: seconds between pings (None: no pings).
        """
        self.name = name
        self.state: S = state
        self.page = page
        self.limits = limits if limits is not None else Limits()
        self.allowed_origins = allowed_origins_from_env() | {o.rstrip("/").lower() for o in allowed_origins}
        self.trace = trace
        self.keepalive = keepalive
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
            create_connection=lambda *a, **kw: _MeteredConnection(self, *a, **kw),  # type: ignore[arg-type]
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

    def origin_allowed(self, headers: Headers) -> bool:
        """Whether a WebSocket upgrade's ``Origin`` may open a connection.

        Allowed: no ``Origin`` (a non-browser client), this server's own origin on 127.0.0.1 or
        localhost, an origin whose host is the request's ``Host`` or ``X-Forwarded-Host`` (the
        page's own server, also through jupyter-server-proxy), and ``allowed_origins``. Any other
        page would otherwise act in the learner's name (cross-site WebSocket hijacking).
        """
        origins = headers.get_all("Origin")
        if not origins:
            return True
        if len(origins) > 1:
            return False
        origin = origins[0].strip().rstrip("/").lower()
        if origin in self.allowed_origins or origin in (f"http://127.0.0.1:{self.port}", f"http://localhost:{self.port}"):
            return True
        scheme = origin.partition("://")[0]
        if scheme not in ("http", "https"):
            return False
        hosts = _header_hosts(", ".join(headers.get_all("Host")), scheme)
        hosts += _header_hosts(", ".join(headers.get_all("X-Forwarded-Host")), scheme)
        return _origin_host(origin) in hosts

    def security_headers(self, headers: Headers) -> list[tuple[str, str]]:
        """Headers on every HTTP answer: no MIME sniffing, and a CSP that lets the page load only
        its own modules, open sockets, and be framed by a notebook (JupyterLab on localhost or
        127.0.0.1, the proxy's host on Binder, or an allowed origin) and by no other site."""
        ancestors = ["'self'", "http://localhost:*", "http://127.0.0.1:*", *sorted(self.allowed_origins)]
        for host in ", ".join(headers.get_all("X-Forwarded-Host")).split(","):
            host = host.strip()
            if _HOST.fullmatch(host):
                ancestors += [f"http://{host}", f"https://{host}"]
        # 'unsafe-eval': the pages never eval, but Playwright's string predicates (the browser
        # tests) do; inline and foreign scripts, the XSS vectors, stay refused.
        policy = (f"default-src 'self'; script-src 'self' 'unsafe-eval'; connect-src 'self' ws: wss:; "
                  f"frame-ancestors {' '.join(ancestors)}")
        return [("X-Content-Type-Options", "nosniff"), ("Content-Security-Policy", policy)]

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if not self.origin_allowed(request.headers):
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
            status, content_type, body = self._static_file(path)
        else:
            status, content_type, body = 404, "text/plain; charset=utf-8", b"not found\n"
        self.traffic.request(f"GET {path}" if status != 404 else "GET (not found)")
        return self._response(request, status, content_type, body)

    def _response(self, request: Request, status: int, content_type: str, body: bytes) -> Response:
        headers = Headers(
            [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-cache"),
             *self.security_headers(request.headers)]
        )
        return Response(status, HTTPStatus(status).phrase, headers, body)

    def _page_file(self, filename: str) -> bytes:
        """A file of the app's page folder: a learner's own folder, or one under ``labtools/static``."""
        if isinstance(self.page, Path):
            return (self.page / filename).read_bytes()
        return _static(f"{self.page}/{filename}")

    def _static_file(self, path: str) -> tuple[int, str, bytes]:
        """``/`` is the app's ``index.html``; ``/name.ext`` its own file, else the shared one."""
        filename = "index.html" if path == "/" else path[1:]
        suffix = "." + filename.rpartition(".")[2]
        if suffix not in CONTENT_TYPES or filename.startswith("."):
            return 404, "text/plain; charset=utf-8", b"not found\n"
        for read in (self._page_file, _common_file):
            try:
                return 200, CONTENT_TYPES[suffix], read(filename)
            except (FileNotFoundError, IsADirectoryError):
                continue
        return 404, "text/plain; charset=utf-8", b"not found\n"

    async def _handle(self, connection: ServerConnection) -> None:
        _forget_handshake(connection)
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

