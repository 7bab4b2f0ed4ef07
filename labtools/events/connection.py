"""One connected socket, as an event server sees it: the ``Client`` handlers get, and the
websockets connection under it that counts bytes, bounds what the client may make the server
buffer, and weighs its control frames.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import Event

from ..measure.wire import CountingTransport
from .frames import dumps
from .limits import TokenBucket

if TYPE_CHECKING:
    from .server import EventServer

CONTROL = (Opcode.PING, Opcode.PONG)


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
        self.recv_messages.frames.queue = SmallQueue()  # type: ignore[assignment]  # made by connection_made

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
