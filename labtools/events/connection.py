"""One connected socket, as an event server sees it: the ``Client`` handlers get, and the
websockets connection under it that counts bytes, bounds what the client may make the server
buffer, and weighs its control frames.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import Event

from ..measure.metrics import Counter
from ..measure.wire import ByteMeter, CountingTransport
from .limits import Limits, TokenBucket
from .rooms import Rooms

CONTROL = (Opcode.PING, Opcode.PONG)


class Host(Protocol):
    """What a ``Client`` asks of the server that holds it (the ``EventServer``)."""

    rooms: Rooms[Client]

    def emit_to(self, client: Client, event: str, data: Any) -> None: ...

    def close_client(self, client: Client, code: int, reason: str) -> None: ...


class Client:
    """One connected socket, as the handlers see it: emit to it, put it in rooms, close it.

    ``session`` is the app's own per-connection data: whatever the server's ``session``
    factory made for this connection (a dataclass of the app's, typed), or None.
    """

    __slots__ = ("id", "host", "connection", "protocol", "transport", "session", "frames", "bytes", "name")

    def __init__(self, id: int, host: Host, connection: ServerConnection, session: Any = None) -> None:
        self.id = id
        self.host = host
        self.connection = connection
        # The broadcast loop reads these two once per delivery: keep them one lookup away.
        self.protocol = connection.protocol
        self.transport: asyncio.WriteTransport = getattr(connection, "raw_transport", connection.transport)
        self.session = session
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

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """The peer's ``(host, port)``: behind a proxy, the proxy's."""
        address = self.connection.remote_address
        return (address[0], address[1]) if address else None

    def emit(self, event: str, data: Any = None) -> None:
        """Send one event to this client (with an offset when the event is recoverable)."""
        self.host.emit_to(self, event, data)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close this socket with ``code`` without waiting for the closing handshake."""
        self.host.close_client(self, code, reason)

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


@dataclass(frozen=True, slots=True)
class Wiring:
    """What a connection needs of its server, and no more: the limits it enforces, where its
    bytes are counted, and whom to tell about a client too slow to keep."""

    limits: Limits
    total: Counter
    meter: ByteMeter
    drop_slow: Callable[[asyncio.WriteTransport], None]


class MeteredConnection(ServerConnection):
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

    def __init__(self, wiring: Wiring, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = wiring.limits
        self.wiring = wiring
        self.total = wiring.total
        self.meter = wiring.meter
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
        self.recv_messages.frames.queue = SmallQueue()  # type: ignore[assignment]  # made by connection_made

    def data_received(self, data: bytes) -> None:
        self.total.bytes_in += len(data)
        self.heard = time.monotonic()
        super().data_received(data)
        transport = self.raw_transport
        if transport is None:
            return
        if transport.get_write_buffer_size() > self.wiring.limits.client_buffer:
            self.wiring.drop_slow(transport)
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


NO_HEADERS = Headers()


class SmallQueue(list):
    """The deque operations websockets' ``Assembler`` uses, on a list: its queue holds at most
    ``max_queue`` (16) frames, so ``pop(0)`` costs nothing, and an empty list is 56 bytes."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)

    def extendleft(self, items: Iterable[Any]) -> None:
        self[0:0] = list(items)[::-1]


def forget_handshake(connection: ServerConnection) -> None:
    """Once open, a connection keeps only its request's path (``Client.query``): the request's
    and the response's headers, about 3 KB per connection, are not read again."""
    if connection.request is not None:  # in place: websockets' parser holds this request too
        connection.request.headers = NO_HEADERS
    connection.response = None
