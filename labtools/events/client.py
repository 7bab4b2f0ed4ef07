"""A simulated client of the event layer: what the notebooks' Pedro and Ana, the tests and the
benchmarks use to talk to an ``EventServer`` (or to any server speaking PROTOCOL.md's frames).

It records everything it receives (time, event, data) as plain data, counts its socket bytes,
and can write a ``Trace`` for sequence diagrams. Acknowledged requests are awaitable::

    pedro = await EventClient.connect(url, name="pedro")
    ticket = await pedro.request("request-ticket")      # the acknowledgement's data

Every incoming frame passes one public hook, ``intercept``: a function of the parsed frame that
returns False to keep it from the client (a lossy link drops it; a fault injector may hold it
and hand it over later, delayed, twice or out of order, with ``deliver``).

Recoverable streams (PROTOCOL.md, "Several nodes, offsets and recovery"): pushes carry an
``offset`` and an ``epoch``. The client remembers the last ones it got (``position``), so that
after a reconnection ``resume`` asks the server for exactly what was missed; a push whose offset
this client already got (a replay overlapping what arrived live, a duplicated frame) is dropped.
While a resume is answered, pushes with an offset are held back and handed over in offset
order once the answer is in: a live push that reached the new connection before the replay of
older ones does not overtake them.

An ``EventClient`` does not reconnect by itself; ``should_reconnect`` is the rule the clients
that do follow (``sim.reconnect.Reconnecting``, and the pages' ``events.js``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ..measure.metrics import Trace, Traffic
from ..measure.wire import ByteMeter, CountingTransport
from .frames import EventError, encode_emit, parse_json

# Close codes after which a client reconnects (with backoff): 1001 going away, 1006 closed without
# a close frame (the network, a crash), 1011 server error, 1012 service restart, 1013 try again
# later, 1014 bad gateway (a proxy's upstream failed). labtools/static/common/events.js keeps the
# same set in RETRY_AFTER; tests/test_close_codes.py checks that they agree.
RECONNECT_AFTER: frozenset[int] = frozenset({1001, 1006, 1011, 1012, 1013, 1014})

# Every close code a client can see: RFC 6455's and IANA's 1000-1015, then 3000-3999 (registered
# by libraries and frameworks) and 4000-4999 (an app's own).
CLIENT_VISIBLE: tuple[int, ...] = (*range(1000, 1016), *range(3000, 5000))


def should_reconnect(code: int | None) -> bool:
    """True when a client should reconnect (with backoff) after its connection closed with ``code``.

    Only when the cause is temporary and not the client's own: the server or the network failed,
    or the server is leaving or busy for a while. Any other close stays closed, because coming
    back would meet the same answer: a close the server meant (1000, and 1005: a close frame
    without a code), one caused by what this client sent or lacks (1002, 1003, 1007-1010), a TLS
    failure (1015), a reserved code (1004), and every code of 3000-4999, which the course's apps
    use to say "do not come back" (the chat's 4001). ``None`` (websockets' code before any close
    was seen) counts as 1006: the connection is gone and nothing said why.
    """
    return (1006 if code is None else code) in RECONNECT_AFTER


class AckError(EventError):
    """The server answered an acknowledged request with an error (``retry_after`` with ``rate-limited``)."""

    @classmethod
    def from_data(cls, error: Any) -> AckError:
        """The error object of a failed acknowledgement, as sent (a malformed one still raises)."""
        if not isinstance(error, dict):
            return cls("", repr(error))
        retry_after = error.get("retryAfter")
        if not isinstance(retry_after, (int, float)) or isinstance(retry_after, bool) or not retry_after >= 0:
            retry_after = None
        return cls(str(error.get("code", "")), str(error.get("message", "")), retry_after)


class _MeteredClientConnection(ClientConnection):
    def __init__(self, meter: ByteMeter, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.meter = meter

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(CountingTransport(transport, self.meter))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.meter.inbound(len(data))
        super().data_received(data)


#: ``intercept(frame) -> bool``: called with every parsed incoming frame; False keeps it back.
Intercept = Callable[[Any], bool]

#: Where a client stands in a recoverable stream: ``(offset, epoch)``, both opaque strings.
Position = tuple[str, str]

#: Offsets remembered per client to recognise a push already received. A replay never reaches
#: further back than the last position the client itself sent, so the recent ones are enough.
SEEN = 4096


class Seen:
    """The offsets of the recent pushes a client got, in one epoch: a bounded set.

    Offsets are opaque strings on the wire, compared only for equality; a push is the same push
    when its event and offset are (one log entry may push different events to a client: the state
    sent on connect carries the offset of the last change, whose own push was, say, a delta).
    Another epoch is another history: the same offsets mean other pushes, so they start over.
    """

    def __init__(self, keep: int = SEEN) -> None:
        self.epoch: str | None = None
        self._order: deque[tuple[str, str]] = deque()
        self._keys: set[tuple[str, str]] = set()
        self._keep = keep

    def add(self, event: str, offset: str, epoch: str) -> bool:
        """Note one push; False when it was seen already (a duplicate)."""
        if epoch != self.epoch:
            self.epoch = epoch
            self._order.clear()
            self._keys.clear()
        key = (event, offset)
        if key in self._keys:
            return False
        self._keys.add(key)
        self._order.append(key)
        if len(self._order) > self._keep:
            self._keys.discard(self._order.popleft())
        return True


def offset_order(frames: list[Any]) -> list[Any]:
    """Frames of one epoch sorted by offset (``"MS-SEQ"`` or ``"N"``: integers compared in
    order); frames of several epochs, or with an offset of another form, as they came."""
    epochs = {frame.get("epoch") for frame in frames}
    try:
        keys = [tuple(int(part) for part in frame["offset"].split("-")) for frame in frames]
    except ValueError:
        return frames
    if len(epochs) > 1:
        return frames
    order = sorted(range(len(frames)), key=keys.__getitem__)  # stable: equal offsets as they came
    return [frames[n] for n in order]


def stream_position(data: Any) -> Position | None:
    """``(offset, epoch)`` of a frame (or an acknowledgement's data) that carries both as strings."""
    if not isinstance(data, dict):
        return None
    offset, epoch = data.get("offset"), data.get("epoch")
    if isinstance(offset, str) and isinstance(epoch, str):
        return offset, epoch
    return None


class EventClient:
    """One connection to an event server, with emit, request (ack) and listeners."""

    def __init__(
        self, name: str, trace: Trace | None = None, *, intercept: Intercept | None = None, record: bool = True
    ) -> None:
        """``record``: keep every frame received in ``received`` (what tests and lessons read
        back, with ``events`` and ``wait_for``). A client that lives long among many (a crowd, a
        chaos run) passes False, or the record grows with every push: its listeners still hear
        everything, and ``wait_for`` waits for the next matching frame."""
        self.name = name
        self.trace = trace
        self.intercept = intercept
        self.record = record
        self.traffic = Traffic()
        self.received: list[tuple[float, str, Any]] = []
        self.errors: list[dict] = []
        #: Pushes dropped because this client had them already (same event and offset).
        self.duplicates = 0
        self._position: Position | None = None
        self._seen = Seen()
        self._held: list[Any] | None = None  # pushes with an offset, held while a resume is answered
        self._held_from_connect = False  # ``connect(hold=True)``: the first resume releases them
        self._listeners: dict[str, list[Callable[[Any], Any]]] = {}
        self._waiters: list[tuple[str, Callable[[Any], bool], asyncio.Future]] = []
        self._pending: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._connection: ClientConnection | None = None
        self._reader: asyncio.Task | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        name: str = "client",
        trace: Trace | None = None,
        intercept: Intercept | None = None,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        hold: bool = False,
        record: bool = True,
        **options: Any,
    ) -> EventClient:
        """Open the socket (``http://`` URLs are turned into ``ws://``); see ``open``.

        ``hold``: a ``resume`` will follow, so pushes with an offset are held from the first
        frame on, not only from when ``resume`` is sent: one that arrives before it (newer than
        what the replay brings) is handed over after the replay, in offset order. ``record``: see
        ``__init__``."""
        client = cls(name, trace, intercept=intercept, record=record)
        if hold:
            client._held = []
            client._held_from_connect = True
        await client.open(url, query=query, headers=headers, **options)
        return client

    async def open(
        self,
        url: str,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        **options: Any,
    ) -> None:
        """Open the socket: ``query`` goes into the upgrade's URL, ``headers`` into its request
        (``Origin``, for one); other ``options`` go to ``websockets.connect``."""
        if url.startswith("http"):
            url = "ws" + url.removeprefix("http")
        if query:
            url += ("&" if "?" in url else "?") + urlencode(query)
        if headers:
            options["additional_headers"] = dict(headers)
        total = self.traffic.total

        def count_in(n: int) -> None:
            total.bytes_in += n

        def count_out(n: int) -> None:
            total.bytes_out += n

        meter = ByteMeter(count_in, count_out)
        options.setdefault("compression", None)
        options.setdefault("max_size", None)
        self._connection = await connect(
            url,
            create_connection=lambda *a, **kw: _MeteredClientConnection(meter, *a, **kw),  # type: ignore[arg-type]
            **options,
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @property
    def connection(self) -> ClientConnection:
        if self._connection is None:
            raise RuntimeError("not connected")
        return self._connection

    @property
    def closed(self) -> bool:
        return self._reader is None or self._reader.done()

    @property
    def position(self) -> Position | None:
        """``(offset, epoch)`` of the last push, ``position`` frame or resume received; None before any."""
        return self._position

    async def resume(self, offset: str | None = None, epoch: str | None = None, timeout: float = 5.0) -> Any:
        """Ask for what was missed since ``offset`` (default: the remembered ``position``).

        The server first sends the missed pushes, then acknowledges ``{"missed", "offset",
        "epoch"}``, returned here. Meanwhile live pushes may reach this connection too, newer than
        the replayed ones: every push with an offset is held back until the answer, then handed to
        the listeners in offset order, any this client already has dropped. Raises ``AckError``
        ``too-old`` when the gap cannot be filled (another epoch, or trimmed): the caller starts
        over from the state it got on connect.
        """
        if offset is None or epoch is None:
            if self._position is None:
                raise ValueError("no position to resume from: nothing with an offset was received")
            offset = self._position[0] if offset is None else offset
            epoch = self._position[1] if epoch is None else epoch
        # A resume within a resume leaves the release to the outer one; the first resume after
        # ``connect(hold=True)`` releases what was held since the connection opened.
        holding = self._held is None or self._held_from_connect
        self._held_from_connect = False
        if self._held is None:
            self._held = []
        try:
            answer = await self.request("resume", {"offset": offset, "epoch": epoch}, timeout)
            position = stream_position(answer)
            if position is not None:
                self._position = position
        finally:
            if holding:
                held, self._held = self._held or [], None
                for frame in offset_order(held):
                    self.deliver(frame)
        return answer

    def on(self, event: str, listener: Callable[[Any], Any]) -> None:
        """Call ``listener(data)`` for every ``event`` received (after it is recorded)."""
        self._listeners.setdefault(event, []).append(listener)

    async def emit(self, event: str, data: Any = None) -> None:
        """Fire and forget: no acknowledgement is asked for."""
        self.traffic.request(f"send {event}")
        if self.trace is not None:
            self.trace.record(self.name, "server", event)
        await self.connection.send(encode_emit(event, data))

    async def request(self, event: str, data: Any = None, timeout: float = 5.0, *, retries: int = 0) -> Any:
        """Emit with an ``id`` and wait for the acknowledgement; raises ``AckError`` or ``TimeoutError``.

        ``retries``: how many times a ``rate-limited`` answer is honoured: the client waits the
        ``retryAfter`` seconds the server named, then sends the same frame (same ``id``: the
        refused attempt already had its one answer). ``timeout`` applies to each attempt.
        """
        if type(retries) is not int or retries < 0:
            raise ValueError("retries must be a non-negative integer")
        id = next(self._ids)
        frame = encode_emit(event, data, id)
        while True:
            try:
                return await self._attempt(event, id, frame, timeout)
            except AckError as error:
                if error.code != "rate-limited" or error.retry_after is None or retries == 0:
                    raise
                wait = error.retry_after
            retries -= 1
            await asyncio.sleep(wait)

    async def _attempt(self, event: str, id: int, frame: str, timeout: float) -> Any:
        """Send one acknowledged frame and wait for its answer."""
        future = asyncio.get_running_loop().create_future()
        self._pending[id] = future
        self.traffic.request(f"send {event}")
        if self.trace is not None:
            self.trace.record(self.name, "server", event)
        try:
            await self.connection.send(frame)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(id, None)

    async def send_raw(self, message: str | bytes) -> None:
        """Send a frame exactly as given (the bad-input lessons and tests)."""
        await self.connection.send(message)

    async def next(self, event: str, timeout: float = 5.0, where: Callable[[Any], bool] | None = None) -> Any:
        """Wait for the next ``event`` (whose data satisfies ``where``) and return its data."""
        future = asyncio.get_running_loop().create_future()
        waiter = (event, where or (lambda _data: True), future)
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    async def wait_for(self, event: str, timeout: float = 5.0, where: Callable[[Any], bool] | None = None) -> Any:
        """The first ``event`` received so far whose data satisfies ``where``, or the next one."""
        for _t, name, data in self.received:
            if name == event and (where is None or where(data)):
                return data
        return await self.next(event, timeout, where)

    def events(self, event: str) -> list[Any]:
        """The data of every ``event`` received so far, oldest first."""
        return [data for _t, name, data in self.received if name == event]

    async def _read(self) -> None:
        try:
            async for message in self.connection:
                frame = parse_json(message if isinstance(message, str) else message.decode())
                if self.intercept is None or self.intercept(frame):
                    self.deliver(frame)
        except ConnectionClosed:
            pass
        finally:
            closed = ConnectionError(f"{self.name}: connection closed")
            for future in list(self._pending.values()):
                if not future.done():
                    future.set_exception(closed)
            for _event, _where, future in self._waiters:
                if not future.done():
                    future.set_exception(closed)

    def deliver(self, frame: Any) -> None:
        """Hand one parsed frame to the client: settle its request, or record and dispatch its event."""
        now = time.perf_counter()
        if "ack" in frame:
            future = self._pending.get(frame["ack"])
            if future is not None and not future.done():
                if "error" in frame:
                    future.set_exception(AckError.from_data(frame["error"]))
                else:
                    future.set_result(frame.get("data"))
            self.traffic.request("recv ack")
            return
        event, data = frame.get("event"), frame.get("data")
        position = stream_position(frame)
        if position is not None and self._held is not None and event != "position":
            self._held.append(frame)  # a resume is being answered: in offset order once it is
            return
        if position is not None:
            if event != "position" and isinstance(event, str) and not self._seen.add(event, *position):
                self.duplicates += 1
                self.traffic.request(f"recv {event} (duplicate)")
                return
            self._position = position
        self.traffic.request(f"recv {event}")
        if self.record:
            self.received.append((now, event, data))
        if self.trace is not None:
            self.trace.record("server", self.name, event)
        if event == "error":
            self.errors.append(data)
        for listener in self._listeners.get(event, ()):
            listener(data)
        for waiter in list(self._waiters):
            name, where, future = waiter
            if name == event and not future.done() and where(data):
                future.set_result(data)
                self._waiters.remove(waiter)

    async def aclose(self) -> None:
        """Close the socket and wait for the reader to finish (idempotent)."""
        if self._connection is not None:
            await self._connection.close()
        if self._reader is not None:
            await self._reader
