"""A simulated client of the event layer: what the notebooks' Pedro and Ana, the tests and the
benchmarks use to talk to an ``EventServer`` (or to any server speaking PROTOCOL.md's frames).

It records everything it receives (time, event, data) as plain data, counts its socket bytes,
and can write a ``Trace`` for sequence diagrams. Acknowledged requests are awaitable::

    pedro = await EventClient.connect(url, name="pedro")
    ticket = await pedro.request("request-ticket")      # the acknowledgement's data

Every incoming frame passes one public hook, ``intercept``: a function of the parsed frame that
returns False to keep it from the client (a lossy link drops it; a fault injector may hold it
and hand it over later, delayed, twice or out of order, with ``deliver``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ..measure.metrics import Trace, Traffic
from ..measure.wire import ByteMeter, CountingTransport
from .frames import EventError, encode_emit, parse_json


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


class EventClient:
    """One connection to an event server, with emit, request (ack) and listeners."""

    def __init__(self, name: str, trace: Trace | None = None, *, intercept: Intercept | None = None) -> None:
        self.name = name
        self.trace = trace
        self.intercept = intercept
        self.traffic = Traffic()
        self.received: list[tuple[float, str, Any]] = []
        self.errors: list[dict] = []
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
        **options: Any,
    ) -> EventClient:
        """Open the socket (``http://`` URLs are turned into ``ws://``); see ``open``."""
        client = cls(name, trace, intercept=intercept)
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
        self.traffic.request(f"recv {event}")
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
