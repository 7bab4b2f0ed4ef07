"""One connected socket, as an event server sees it: the ``Connection`` that speaks WebSocket on
it, and the ``Client`` that handlers get.

``Connection`` is an ``asyncio.Protocol`` that drives websockets' own core, its sans-I/O
``ServerProtocol`` (the opening handshake, frame parsing, pongs, the closing handshake): bytes
in, events out, bytes to write. Driving it from callbacks, instead of from websockets' asyncio
layer, means an idle connection holds no task, no timer and no queue: a transport, a parser
and two small objects. What that layer gave, this class gives too:

* the opening handshake must finish within ``OPEN_TIMEOUT`` (a slowloris defence), and a
  closing handshake within ``CLOSE_TIMEOUT``; then the socket is aborted;
* ``Limits.max_frame`` bounds a message (websockets closes with 1009 beyond it); binary
  frames close with 1003, text that is not UTF-8 with 1007;
* the server stops reading from a client whose unsent bytes pass ``Limits.read_pause`` (the
  transport's high-water mark) or whose frames wait in line (``MAX_QUEUE``, below), and a
  client whose backlog passes ``Limits.client_buffer`` is cut;
* pings and pongs take tokens from the client's frame bucket: a client that runs a debt of
  more than one burst with them is closed with 1008;
* ``close(1001)`` on shutdown.

Frames of one socket reach its handlers one after another, in the order it sent them: a frame
is handled inline, in ``data_received``; if its handler suspends (awaits something not ready),
the frames that follow wait in the connection's ``inbox`` until it has finished.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import SERVER, Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from ..measure.metrics import Counter
from .forwarded import forwarded_for
from .limits import Limits, TokenBucket
from .rooms import Rooms

CONNECTING, OPEN = State.CONNECTING, State.OPEN
TEXT, CONT, BINARY, PING, PONG = Opcode.TEXT, Opcode.CONT, Opcode.BINARY, Opcode.PING, Opcode.PONG
#: Seconds a client has to complete the opening handshake (websockets' default ``open_timeout``).
OPEN_TIMEOUT = 10.0
#: Seconds a peer has to answer our close frame: it must not hold up a shutdown (Ctrl-C).
CLOSE_TIMEOUT = 2.0
#: Frames of one client that may wait while its handler runs; then the server stops reading it.
MAX_QUEUE = 16
LOGGER = logging.getLogger("websockets.server")


def text_frame(text: str) -> bytes:
    """The bytes of one unmasked, uncompressed, final text frame: what a server sends (RFC 6455
    §5.2). A server frame is not masked, so one encoding serves every recipient."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload


class Host(Protocol):
    """What a ``Client`` asks of the server that holds it (the ``EventServer``)."""

    rooms: Rooms[Client]

    def emit_to(self, client: Client, event: str, data: Any) -> None: ...


class Endpoint(Protocol):
    """What a ``Connection`` asks of the server that accepted it (the ``EventServer``)."""

    limits: Limits
    closing: bool
    front_door_secret: str | None
    connections: set[Connection]

    @property
    def total(self) -> Counter: ...

    def respond(self, request: Request) -> Response | Awaitable[Response | None] | None: ...

    def opened(self, connection: Connection) -> Client: ...

    def received(self, client: Client, text: str, then: Callable[[], None]) -> asyncio.Future | None: ...

    def lost(self, client: Client) -> None: ...

    def drop_slow(self, transport: asyncio.WriteTransport) -> None: ...


class Client:
    """One connected socket, as the handlers see it: emit to it, put it in rooms, close it.

    ``session`` is the app's own per-connection data: whatever the server's ``session``
    factory made for this connection (a dataclass of the app's, typed), or None.

    ``out`` holds the frames written while the client is corked (``cork``/``flush``) or held
    for the rest of the loop's turn (``TurnWrites``): what one handler run, or one turn,
    produces for this socket leaves in one write.
    """

    __slots__ = ("id", "host", "connection", "protocol", "transport", "session", "frames", "bytes", "name",
                 "out", "pending", "since")

    def __init__(self, id: int, host: Host, connection: Connection, session: Any = None) -> None:
        self.id = id
        self.host = host
        self.connection = connection
        # The broadcast loop reads these once per delivery: keep them one lookup away.
        self.protocol = connection.protocol
        self.transport: asyncio.WriteTransport = connection.transport  # type: ignore[assignment]
        self.session = session
        # The buckets live on the connection: control frames are counted there, before a Client exists.
        self.frames: TokenBucket = connection.frames
        self.bytes: TokenBucket = connection.bytes
        self.name = f"client-{id}"
        self.out: list[bytes] | None = None
        self.pending = 0  # bytes in ``out``: they count against the client's buffer bound
        #: The offset after which this connection was sent every recoverable push (``Recovery``):
        #: a ``resume`` never replays those again. A reference to a shared tuple: 8 bytes.
        self.since: tuple[int, int] | None = None

    def admit(self, size: int) -> float:
        """Take one frame and ``size`` bytes before parsing; else the seconds to wait (nothing taken)."""
        wait = max(self.frames.wait(1), self.bytes.wait(size))
        if wait == 0.0:
            self.frames.take(1)
            self.bytes.take(size)
        return wait

    def cork(self) -> bool:
        """Hold this client's frames until ``flush``; True when this call corked it (then the
        caller flushes: corks nest, and only the outermost one writes)."""
        if self.out is not None:
            return False
        self.out = []
        return True

    def write(self, frame: bytes) -> None:
        """Write one frame: held while corked, else at once."""
        out = self.out
        if out is not None:
            out.append(frame)
            self.pending += len(frame)
        elif self.protocol.state is OPEN:
            self.transport.write(frame)

    def flush(self) -> None:
        """Send what the cork held, in one write (one system call for an ack and its pushes)."""
        out, self.out = self.out, None
        self.pending = 0
        if out and self.protocol.state is OPEN and not self.transport.is_closing():
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    @property
    def query(self) -> str:
        """The query string of the upgrade request (``token=...`` for the chat)."""
        return self.connection.path.partition("?")[2]

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """The peer's ``(host, port)``; behind the labtools front door, the client's address as
        it saw it (``forwarded``: port 0, unknown)."""
        forwarded = self.connection.forwarded
        if forwarded is not None:
            return (forwarded, 0)
        address = self.transport.get_extra_info("peername")
        return (address[0], address[1]) if address else None

    def emit(self, event: str, data: Any = None) -> None:
        """Send one event to this client (with an offset when the event is recoverable)."""
        self.host.emit_to(self, event, data)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close this socket with ``code`` without waiting for the closing handshake."""
        self.connection.close(code, reason)

    def join(self, room: str) -> None:
        self.host.rooms.join(self, room)

    def leave(self, room: str) -> None:
        self.host.rooms.leave(self, room)

    @property
    def rooms(self) -> frozenset[str]:
        """The rooms this client is in."""
        return self.host.rooms.rooms_of(self)

    def __repr__(self) -> str:
        return f"<Client {self.name}>"


class Connection(asyncio.Protocol):
    """One socket: websockets' ``ServerProtocol`` driven from asyncio's callbacks (see the module)."""

    __slots__ = ("endpoint", "protocol", "transport", "client", "path", "forwarded", "heard", "frames", "bytes",
                 "timer", "busy", "inbox", "fragments", "paused_writing", "paused_inbox", "lost", "drained")

    def __init__(self, endpoint: Endpoint) -> None:
        limits = endpoint.limits
        self.endpoint = endpoint
        self.protocol = ServerProtocol(max_size=limits.max_frame, logger=LOGGER)
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.path = "/"  # the upgrade request's path and query: all a connection keeps of it...
        self.forwarded: str | None = None  # ...with the client's address, behind the front door
        self.heard = time.monotonic()  # when bytes last arrived, for the server-wide keepalive
        self.frames = TokenBucket(limits.frame_burst, limits.frames_per_second)
        self.bytes = TokenBucket(limits.byte_burst, limits.bytes_per_second)
        self.timer: asyncio.TimerHandle | None = None  # the open or close deadline, if one runs
        self.busy: asyncio.Future | None = None  # a handler (or the connect callbacks) still running
        self.inbox: list[str] | None = None  # frames waiting for it, in order
        self.fragments: list[bytes] | None = None  # a fragmented text message, so far
        self.paused_writing = False
        self.paused_inbox = False
        self.lost = False
        self.drained: asyncio.Future[None] | None = None  # what ``send`` awaits while writing is paused

    # ----- asyncio's callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        read_pause = self.endpoint.limits.read_pause
        self.transport.set_write_buffer_limits(high=read_pause, low=read_pause // 4)  # type: ignore[union-attr]
        self.endpoint.connections.add(self)
        self.timer = asyncio.get_running_loop().call_later(OPEN_TIMEOUT, self._open_timed_out)

    def data_received(self, data: bytes) -> None:
        self.endpoint.total.bytes_in += len(data)
        self.heard = time.monotonic()
        protocol = self.protocol
        protocol.receive_data(data)
        events = protocol.events_received()
        self._send_protocol_data()
        client = self.client
        corked = client is not None and client.cork()  # what this read's frames answer leaves in one write
        try:
            for event in events:
                if type(event) is Frame:
                    self._frame(event)
                else:
                    self._request(event)  # type: ignore[arg-type]
        finally:
            if corked:
                client.flush()  # type: ignore[union-attr]
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size() > self.endpoint.limits.client_buffer:
            self.endpoint.drop_slow(transport)

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._send_protocol_data()
        return None  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.receive_eof()  # idempotent: the state becomes CLOSED
        self.lost = True
        self.fragments = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.endpoint.connections.discard(self)
        self._wake_senders()
        if self.busy is None:
            self._forget()

    def pause_writing(self) -> None:
        """Past the high-water mark: stop reading, so this client cannot make us write more."""
        self.paused_writing = True
        self._reading()

    def resume_writing(self) -> None:
        """Back under the low-water mark: read again, unless frames still wait in line."""
        self.paused_writing = False
        self._wake_senders()
        self._reading()

    def _wake_senders(self) -> None:
        drained, self.drained = self.drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # ----- what arrives -------------------------------------------------------------------

    def _request(self, request: Request) -> None:
        """The opening handshake's request: a page, a refusal, or the upgrade."""
        self.path = request.path
        self.forwarded = forwarded_for(request.headers, self.endpoint.front_door_secret)
        try:
            response = self.endpoint.respond(request)
        except Exception:
            LOGGER.error("answering a request failed", exc_info=True)
            response = self.protocol.reject(500, "Failed to open a WebSocket connection.\n")
        if isinstance(response, Awaitable):
            task = asyncio.get_running_loop().create_task(self._respond_later(request, response))
            self.hold(task)
        else:
            self._respond(request, response)

    async def _respond_later(self, request: Request, pending: Awaitable[Response | None]) -> None:
        try:
            response = await pending
        except Exception:
            LOGGER.error("answering a request failed", exc_info=True)
            response = self.protocol.reject(500, "Failed to open a WebSocket connection.\n")
        self._respond(request, response)

    def _respond(self, request: Request, response: Response | None) -> None:
        if self.lost:
            return
        protocol = self.protocol
        if response is None:
            response = protocol.accept(request)
            if self.endpoint.closing and response.status_code == 101:
                response = protocol.reject(503, "Server is shutting down.\n")
        response.headers["Server"] = SERVER
        protocol.send_response(response)
        self._send_protocol_data()
        if protocol.state is OPEN:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.client = self.endpoint.opened(self)
        elif self.transport is not None:
            self.transport.close()  # a page or a refusal: written, then closed

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is TEXT or opcode is CONT:
            if not frame.fin:
                if self.fragments is None:
                    self.fragments = []
                self.fragments.append(frame.data)  # websockets bounds the whole message (max_size)
                return
            data = frame.data
            if self.fragments is not None:
                self.fragments.append(data)
                data, self.fragments = b"".join(self.fragments), None
            try:
                text = data.decode()
            except UnicodeDecodeError:
                self.close(CloseCode.INVALID_DATA, "invalid UTF-8")
                return
            if self.protocol.state is OPEN:
                self._text(text)
        elif opcode is BINARY:
            self.close(CloseCode.UNSUPPORTED_DATA, "binary frames are not accepted")
        elif opcode is PING or opcode is PONG:
            # websockets answers pings by itself: they count in the frame budget all the same.
            frames = self.frames
            frames.wait(1)  # refill first
            frames.take(1)
            if frames.tokens < -frames.burst:
                self.protocol.fail(CloseCode.POLICY_VIOLATION, "too many control frames")
                self._send_protocol_data()

    def _text(self, text: str) -> None:
        if self.busy is not None:  # a handler of this client is running: wait in line
            inbox = self.inbox
            if inbox is None:
                inbox = self.inbox = []
            inbox.append(text)
            if len(inbox) >= MAX_QUEUE and not self.paused_inbox:
                self.paused_inbox = True
                self._reading()
            return
        self._dispatch(text)

    def _dispatch(self, text: str) -> None:
        if self.endpoint.closing:  # shutting down: frames not yet handled are dropped
            return
        running = self.endpoint.received(self.client, text, self._handled)  # type: ignore[arg-type]
        if running is not None:
            self.hold(running)

    def hold(self, running: asyncio.Future) -> None:
        """Something of this connection suspended: what arrives meanwhile waits for it."""
        self.busy = running
        running.add_done_callback(self._finished)  # if it ends without calling ``_handled``

    def _handled(self) -> None:
        """Called by the handler's Task as its last act (its acknowledgement is written): the
        next frame is handled now, not one loop turn later when the Task's done-callbacks run."""
        if self.busy is not None:
            self._finished(self.busy)

    def _finished(self, running: asyncio.Future) -> None:
        """The handler that held the line has finished: handle what waited, in order."""
        if self.busy is not running:  # released already, by ``_handled``
            return
        self.busy = None
        inbox = self.inbox
        client = self.client
        if inbox:
            corked = client is not None and client.cork()
            try:
                while inbox and self.busy is None:
                    self._dispatch(inbox.pop(0))
            finally:
                if corked:
                    client.flush()  # type: ignore[union-attr]
        if not inbox:
            self.inbox = None
        if self.paused_inbox and len(inbox or ()) < MAX_QUEUE // 4:
            self.paused_inbox = False
            self._reading()
        if self.lost and self.busy is None:
            self._forget()

    def _forget(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            self.endpoint.lost(client)

    # ----- what leaves --------------------------------------------------------------------

    async def send(self, text: str) -> None:
        """Write one text frame, then wait while this connection's unsent bytes are above the
        high-water mark, as websockets' own ``send`` does: what a broadcast loop that awaits
        each client in turn waits for (lesson 10 shows why a server must not). The event
        server's own broadcasts never wait (``EventServer.send_text``)."""
        if self.transport is None or self.protocol.state is not OPEN:
            raise ConnectionError("the connection is closed")
        client = self.client
        if client is not None and client.out:
            client.flush()  # frames held for this client (``EventServer.send_text``) go first
        frame = text_frame(text)
        self.transport.write(frame)
        self.endpoint.total.bytes_out += len(frame)
        if self.paused_writing:
            if self.drained is None:
                self.drained = asyncio.get_running_loop().create_future()
            await asyncio.shield(self.drained)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (abort if the peer does not answer in ``CLOSE_TIMEOUT``);
        during the opening handshake, abort."""
        state = self.protocol.state
        if state is OPEN:
            client = self.client
            if client is not None and client.out:
                client.flush()  # what was written before the close frame goes before it
            self.protocol.send_close(code, reason)
            self._send_protocol_data()
        elif state is CONNECTING and self.transport is not None:
            self.transport.abort()

    def _send_protocol_data(self) -> None:
        """Write what websockets' protocol produced (the handshake's response, pongs, close
        frames, the end of the stream), and start the close deadline when a close is due."""
        transport = self.transport
        if transport is None:
            return
        total = self.endpoint.total
        for data in self.protocol.data_to_send():
            if data:
                client = self.client
                if client is not None and client.out:
                    client.flush()  # keep the order of what this client was sent
                transport.write(data)
                total.bytes_out += len(data)
            elif transport.can_write_eof():
                try:
                    transport.write_eof()
                except Exception:  # uvloop may raise RuntimeError on a closing transport
                    transport.abort()
            else:
                transport.close()
        if self.protocol.close_expected() and (self.timer is None or self.protocol.state is not CONNECTING):
            if self.timer is not None:
                self.timer.cancel()
            self.timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._abort)

    def _reading(self) -> None:
        """Read while neither the client's backlog nor its waiting frames hold it back."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.paused_writing or self.paused_inbox:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _open_timed_out(self) -> None:
        self.timer = None
        if self.protocol.state is CONNECTING and self.transport is not None:
            self.transport.abort()

    def _abort(self) -> None:
        self.timer = None
        if self.transport is not None:
            self.transport.abort()
