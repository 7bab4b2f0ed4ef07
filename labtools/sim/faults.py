"""Faults on purpose, shared by lesson 10 and the tests: a bad network between a client and a server.

Two levels:

* ``FaultyProxy``: a TCP proxy on 127.0.0.1 between clients and a server. Each connection
  through it passes, is delayed (``delay(ms)``), is blackholed (``blackhole()``: nothing moves
  either way and nothing is closed, which is what a peer that vanished without a FIN looks
  like to the other side) or is cut (``cut()``: both sides closed; ``cut(reset=True)`` resets
  them). Faults apply to one connection (``proxy.links[i].blackhole()``) or to all of them, new
  ones included (``proxy.blackhole()``). Bytes are counted each way.
* ``deaf_client``: a WebSocket client that opens the connection and never reads a byte, with a
  small receive buffer: the slow consumer of lesson 10, without a proxy in between.
* ``FrameFaults``: frame-level faults on one ``EventClient``, through its public ``intercept``
  hook and ``deliver()``: drop a share of the frames, delay them, duplicate them, reorder them
  (hold one and deliver it after the next). The faults compose, are seeded, and are counted.

Both run on the labtools loop; the proxy's sync methods may be called from a cell (they hop to
the loop thread).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import socket
import time
from collections.abc import Callable
from typing import Any

from .. import runtime
from ..events import EventClient

MODES = ("pass", "delay", "blackhole")
CHUNK = 65_536


class ProxyLink:
    """One client connection through the proxy, and its own fault."""

    def __init__(self, proxy: FaultyProxy, number: int, mode: str, delay_ms: float) -> None:
        self.proxy = proxy
        self.number = number
        self.mode = mode
        self.delay_ms = delay_ms
        self.bytes_up = 0  # client -> server
        self.bytes_down = 0  # server -> client
        self.open = True
        self.opened_at = time.monotonic()
        self._flowing = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: list[asyncio.Task] = []
        self._apply()

    def _apply(self) -> None:
        if self.mode == "blackhole":
            self._flowing.clear()
        else:
            self._flowing.set()

    def _set(self, mode: str, delay_ms: float = 0.0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: one of {MODES}")
        self.mode, self.delay_ms = mode, delay_ms
        self._apply()

    # The sync API (from a cell or a test) hops to the loop thread.
    def passthrough(self) -> None:
        runtime.call(lambda: self._set("pass"))

    def delay(self, ms: float) -> None:
        runtime.call(lambda: self._set("delay", ms))

    def blackhole(self) -> None:
        runtime.call(lambda: self._set("blackhole"))

    def cut(self, reset: bool = False) -> None:
        runtime.call(lambda: self._cut(reset))

    def _cut(self, reset: bool = False) -> None:
        self.open = False
        for writer in self._writers:
            if reset:
                writer.transport.abort()
            else:
                writer.close()
        for task in self._tasks:
            task.cancel()

    async def run(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(self.proxy.target_host, self.proxy.target_port)
        except OSError:
            client_writer.transport.abort()
            self.open = False
            return
        self._writers = [client_writer, server_writer]
        if not self.open:  # cut while connecting
            self._cut()
            return
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._pump(client_reader, server_writer, up=True)),
            loop.create_task(self._pump(server_reader, client_writer, up=False)),
        ]
        await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        # One side ended (EOF or error) and no fault holds it: end the other side too.
        self._cut()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: bool) -> None:
        """Read, wait out the fault, forward; a blackhole stops reading, so the kernel's buffers
        fill up and the sender sees the back-pressure a vanished peer causes."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.get_running_loop().create_task(self._send(queue, writer))
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(CHUNK)
                if not data:
                    await queue.join()
                    return
                due = time.monotonic() + (self.delay_ms / 1000 if self.mode == "delay" else 0.0)
                queue.put_nowait((due, data))
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    async def _send(self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter) -> None:
        direction_up = writer is self._writers[1]
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._flowing.wait()
            writer.write(data)
            if direction_up:
                self.bytes_up += len(data)
                self.proxy.bytes_up += len(data)
            else:
                self.bytes_down += len(data)
                self.proxy.bytes_down += len(data)
            queue.task_done()
            await writer.drain()

    def __repr__(self) -> str:
        state = self.mode if self.open else "closed"
        return f"<link {self.number}: {state}, {self.bytes_up} B up, {self.bytes_down} B down>"


class FaultyProxy:
    """A TCP proxy with faults, between clients and the server at ``target`` (a URL or (host, port))."""

    def __init__(self, target: str | tuple[str, int]) -> None:
        if isinstance(target, str):
            host_port = target.split("//", 1)[-1].split("/", 1)[0]
            host, port = host_port.rsplit(":", 1)
            target = (host, int(port))
        self.target_host, self.target_port = target
        self.mode = "pass"
        self.delay_ms = 0.0
        self.links: list[ProxyLink] = []
        self.bytes_up = 0
        self.bytes_down = 0
        self.host = ""
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FaultyProxy:
        self._server = await asyncio.start_server(self._accept, host, port)
        self.host, self.port = self._server.sockets[0].getsockname()[:2]
        return self

    @property
    def url(self) -> str:
        """Where clients connect instead of the server: ``http://127.0.0.1:PORT/``."""
        return f"http://{self.host}:{self.port}/"

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    @property
    def open_links(self) -> list[ProxyLink]:
        return [link for link in self.links if link.open]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = ProxyLink(self, len(self.links), self.mode, self.delay_ms)
        self.links.append(link)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await link.run(reader, writer)
        finally:
            if task is not None:
                self._handlers.discard(task)

    def _set_all(self, mode: str, delay_ms: float = 0.0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: one of {MODES}")
        self.mode, self.delay_ms = mode, delay_ms
        for link in self.open_links:
            link._set(mode, delay_ms)

    # Faults on every connection, open or yet to come (sync: callable from a cell).
    def passthrough(self) -> None:
        runtime.call(lambda: self._set_all("pass"))

    def delay(self, ms: float) -> None:
        runtime.call(lambda: self._set_all("delay", ms))

    def blackhole(self) -> None:
        runtime.call(lambda: self._set_all("blackhole"))

    def cut(self, reset: bool = False) -> None:
        """Close every open connection (new ones are still accepted)."""

        def cut_all() -> None:
            for link in self.open_links:
                link._cut(reset)

        runtime.call(cut_all)

    def stats(self) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            return {
                "mode": self.mode,
                "connections": len(self.links),
                "open": len(self.open_links),
                "bytes up": self.bytes_up,
                "bytes down": self.bytes_down,
            }

        return runtime.call(read)

    async def aclose(self) -> None:
        """Stop accepting and cut every connection (idempotent)."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for link in self.open_links:
            link._cut(reset=True)
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await server.wait_closed()


def serve_proxy(target: str | tuple[str, int], *, name: str = "proxy", port: int = 0) -> FaultyProxy:
    """Start a ``FaultyProxy`` to ``target`` on the labtools loop; re-running replaces it."""

    async def make() -> FaultyProxy:
        return await FaultyProxy(target).start(port=port)

    return runtime.run(runtime.register(name, make))


async def deaf_client(url: str, *, receive_buffer: int = 4096) -> socket.socket:
    """Open a WebSocket connection to ``url`` and never read from it again (close it when done).

    The handshake is written by hand on a plain socket whose receive buffer is shrunk first
    (``SO_RCVBUF``), so that what the server sends piles up on the server's side soon, as it
    would for a phone on a dead train-tunnel link or a browser tab frozen by a debugger.
    """
    host_port = url.split("//", 1)[-1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET / HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        await loop.sock_sendall(sock, request.encode())
        head = b""
        while b"\r\n\r\n" not in head:  # one byte at a time: not one byte of a frame is read
            byte = await loop.sock_recv(sock, 1)
            if not byte:
                raise ConnectionError("the server closed the connection during the handshake")
            head += byte
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"upgrade refused: {head.splitlines()[0]!r}")
    except BaseException:
        sock.close()
        raise
    return sock


class FrameFaults:
    """Frame-level faults on an ``EventClient``: ``drop``, ``delay_ms``, ``duplicate``, ``reorder``.

    ``drop``, ``duplicate`` and ``reorder`` are shares (0 to 1) of the frames, decided with a
    seeded random generator; ``delay_ms`` delays every frame (plus up to ``jitter_ms`` more,
    which reorders frames on its own). ``only(frame)`` picks the frames that may suffer (all by
    default; say ``lambda f: "event" in f`` to spare acknowledgements). A frame held back for a
    reorder is delivered right after the next one, or after ``max_hold_ms`` if none comes.
    ``counts`` says what was done. Attach with ``FrameFaults(...).attach(client)``; an intercept
    the client already had (a ``LossyLink``) still runs first.
    """

    def __init__(
        self,
        *,
        drop: float = 0.0,
        delay_ms: float = 0.0,
        jitter_ms: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        seed: int = 0,
        only: Callable[[Any], bool] | None = None,
        max_hold_ms: float = 500.0,
    ) -> None:
        self.drop = drop
        self.delay_ms = delay_ms
        self.jitter_ms = jitter_ms
        self.duplicate = duplicate
        self.reorder = reorder
        self.only = only
        self.max_hold_ms = max_hold_ms
        self.random = random.Random(seed)
        self.counts = {"seen": 0, "dropped": 0, "delayed": 0, "duplicated": 0, "reordered": 0, "delivered": 0}
        self.client: EventClient | None = None
        self.inner: Callable[[Any], bool] | None = None
        self._held: Any = None
        self._held_timer: asyncio.TimerHandle | None = None

    def attach(self, client: EventClient) -> FrameFaults:
        """Become ``client``'s intercept hook (keeping the one it had, which runs first)."""
        self.client = client
        self.inner = client.intercept
        client.intercept = self
        return self

    def __call__(self, frame: Any) -> bool:
        if self.inner is not None and not self.inner(frame):
            return False
        if self.only is not None and not self.only(frame):
            return True
        self.counts["seen"] += 1
        rng = self.random
        if self.drop and rng.random() < self.drop:
            self.counts["dropped"] += 1
            return False
        copies = 2 if self.duplicate and rng.random() < self.duplicate else 1
        if copies == 2:
            self.counts["duplicated"] += 1
        hold = self.reorder and self._held is None and rng.random() < self.reorder
        delay = self.delay_ms + (rng.uniform(0, self.jitter_ms) if self.jitter_ms else 0.0)
        if hold:
            self.counts["reordered"] += 1
            self._held = (frame, copies)
            self._held_timer = asyncio.get_running_loop().call_later(self.max_hold_ms / 1000, self._release)
            return False
        self._later(frame, copies, delay)
        if self._held is not None:
            self._release(delay)
        return False

    def _release(self, delay: float = 0.0) -> None:
        if self._held is None:
            return
        (frame, copies), self._held = self._held, None
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        self._later(frame, copies, delay)

    def _later(self, frame: Any, copies: int, delay_ms: float) -> None:
        if delay_ms > 0:
            self.counts["delayed"] += 1
            asyncio.get_running_loop().call_later(delay_ms / 1000, self._deliver, frame, copies)
        else:
            self._deliver(frame, copies)

    def _deliver(self, frame: Any, copies: int) -> None:
        assert self.client is not None, "attach(client) first"
        for _ in range(copies):
            self.counts["delivered"] += 1
            self.client.deliver(frame)

    def flush(self) -> None:
        """Deliver a held frame now (call on the loop thread)."""
        self._release()
