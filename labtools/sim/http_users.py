"""Simulated users of the REST chat: Pedro's ``setInterval`` poll, the long poll, the SSE stream.

Each ``Receiver`` is one way of hearing about messages on one ``HttpClient`` connection;
``HttpUser`` pairs it with a second connection for sending, as a browser does while a long
poll or a stream holds the first. ``poll_user``, ``long_poll_user`` and ``sse_user`` are the
crowd modes' factories. Nothing here prints (it runs on the labtools loop thread); failures are
counted in ``errors``.

Every receiver keeps to the server's limits (PROTOCOL.md): an answer marked ``X-More`` was full,
so it asks again at once from the last id it got; a ``410`` gap (messages forgotten before they
were fetched) is counted in ``gaps`` and the receiver resumes where the server says.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from ..measure.metrics import Trace, Traffic
from ..polling.client import HttpClient, HttpError, Response, send
from ..polling.server import MORE_HEADER
from ..polling.sse import SseParser
from .users import ClientSpec

#: ``on_message(message, received_at)``: ``received_at`` is ``time.perf_counter()`` at receipt.
OnMessage = Callable[[dict, float], None]
#: ``on_answer(started_at, n_messages, seconds)``: one call per answer (per SSE chunk).
OnAnswer = Callable[[float, int, float], None]


def ignore_message(message: dict, received_at: float) -> None:
    pass


class Receiver:
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
        self.on_message = on_message or ignore_message
        self.on_answer = on_answer
        self.trace = trace
        self.since = since
        self.gaps = 0  # answers that said messages were forgotten before we fetched them
        self.more = False  # the last answer was full: more messages wait after it
        self.stopping = False
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
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        """Make no new request. A request the server holds (a long poll, a stream) stays open
        until ``aclose``, which ends it without losing a byte (``HttpConnection.shutdown``)."""
        self.stopping = True

    def _messages(self, response: Response) -> list[dict]:
        """An answer's messages; a ``410`` gap moves ``since`` to where the server resumes."""
        if response.status == 410:
            self.gaps += 1
            self.since = max(self.since, int(response.json()["error"]["resume"]))
            self.more = True
            return []
        if response.status != 200:
            raise HttpError(response.status, response.body)
        self.more = response.headers.get(MORE_HEADER) == "1"
        return json.loads(response.body)

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


class Poller(Receiver):
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
        messages = self._messages(response)
        if self.trace is not None:
            label = "[] no new messages" if not messages else ", ".join(f"{m['from']}: {m['text']}" for m in messages)
            self.trace.record("server", self.user, label)
        self._deliver(messages, started, time.perf_counter() - started)
        return messages

    async def poll_all(self) -> list[dict]:
        """Poll until an answer is not full: everything stored after ``since``, page by page."""
        messages = await self.poll_once()
        while self.more:
            messages += await self.poll_once()
        return messages

    async def stop(self) -> None:
        """Make no new poll; return once the poll in flight, if any, has its answer."""
        await super().stop()
        task = self._task
        if task is None:
            return
        if not self.http.in_flight:
            task.cancel()  # between ticks: nothing on the wire to wait for
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        tick = loop.time() + self.phase
        while not self.stopping:
            delay = tick - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self.poll_all()
            except (OSError, HttpError, ValueError):
                self.http.errors += 1
            tick += self.interval
            now = loop.time()
            if tick < now:  # we fell behind: skip the missed ticks, as a busy browser would
                tick += ((now - tick) // self.interval + 1) * self.interval


class LongPoller(Receiver):
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
        messages = self._messages(response)
        self._deliver(messages, started, time.perf_counter() - started)
        return messages

    async def start(self) -> None:
        """Start; returns once connected, so a crowd's clock starts with every poll held."""
        await super().start()
        await self.ready.wait()

    async def run(self) -> None:
        try:
            await self.http.connection()
        except OSError:
            self.http.errors += 1
        finally:
            self.ready.set()
        while not self.stopping:
            try:
                await self.poll_once()
            except (OSError, HttpError, ValueError):
                self.http.errors += 1
                await asyncio.sleep(self.retry)


class SseListener(Receiver):
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
            self._messages(response)  # a 410 gap: resume where the server says

    async def run(self) -> None:
        while not self.stopping:
            try:
                await self.listen_once()
            except (OSError, HttpError, ValueError):
                self.http.errors += 1
            if self.more:  # a gap: reconnect at once from where the server resumes
                self.more = False
                continue
            await asyncio.sleep(self.retry)


class HttpUser:
    """A user of the REST chat: a receiver (poll, long poll or SSE) and a sending connection.

    Sending uses a second keep-alive connection, opened on first use, as a browser does while
    a long poll or a stream holds the first one. Both count into the same ``traffic``.
    """

    def __init__(self, spec: ClientSpec, receiver: Receiver) -> None:
        self.user = spec.user
        self.url = spec.url
        self.receiver = receiver
        self.traffic = receiver.traffic
        self._sender: HttpClient | None = None

    @property
    def in_flight(self) -> int:
        return self.receiver.in_flight

    @property
    def errors(self) -> int:
        return self.receiver.errors + (self._sender.errors if self._sender else 0)

    async def start(self) -> None:
        await self.receiver.start()

    async def stop(self) -> None:
        """Make no new request; return once none is in flight but a held one (``Receiver.stop``)."""
        await self.receiver.stop()

    async def send(self, to: str, text: str) -> None:
        if self._sender is None:
            self._sender = HttpClient(self.url, self.traffic)
        try:
            await send(self._sender, self.user, to, text)
        except (OSError, HttpError):
            self._sender.errors += 1

    async def aclose(self) -> None:
        await self.receiver.aclose()
        if self._sender is not None:
            await self._sender.aclose()


def poll_user(spec: ClientSpec) -> HttpUser:
    receiver = Poller(spec.url, spec.user, interval=spec.interval, phase=spec.phase,
                      on_message=spec.on_message, on_answer=spec.on_answer)
    return HttpUser(spec, receiver)


def long_poll_user(spec: ClientSpec) -> HttpUser:
    receiver = LongPoller(spec.url, spec.user, wait=spec.wait, on_message=spec.on_message, on_answer=spec.on_answer)
    return HttpUser(spec, receiver)


def sse_user(spec: ClientSpec) -> HttpUser:
    return HttpUser(spec, SseListener(spec.url, spec.user, on_message=spec.on_message, on_answer=spec.on_answer))
