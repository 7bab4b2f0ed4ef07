"""A hand-made WebSocket client and server on plain asyncio streams, every byte counted.

Lesson 03 builds WebSocket from ``labtools.handshake`` (the HTTP upgrade) and
``labtools.codec`` (the frames), then proves the result speaks the real protocol: the
hand-made client talks to a ``websockets`` server, and a ``websockets`` client talks to the
hand-made server. Both are small on purpose; ``websockets`` is what the course's apps use.

* ``connect(url)`` opens a client ``Connection``: ``send_text``, ``send_binary``, ``ping``,
  ``recv`` (text, binary and pong messages; pings are answered for you), ``close(code, reason)``.
* ``serve_handmade()`` runs a ``HandmadeServer`` (an echo by default) on the labtools loop and
  ``serve_websockets_echo()`` runs a ``websockets`` echo server, each registered under a name so
  a re-run cell replaces it.

Bytes are counted where they meet the stream: every ``write`` and every ``read`` goes through
the connection's ``ByteMeter``, handshake included. Nothing here prints.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as websockets_serve
from websockets.exceptions import ConnectionClosed as WebsocketsConnectionClosed

from . import codec, handshake, runtime
from .codec import CloseCode, Message, MessageDecoder, Opcode, ProtocolError
from .metrics import Traffic
from .serving import ServerHandle
from .wire import ByteMeter

CLOSE_TIMEOUT = 5.0  # how long to wait for the other side's close frame, then its FIN
READ_SIZE = 64 * 1024


class ConnectionClosed(Exception):
    """The connection is closed; ``code`` and ``reason`` are what the other side sent
    (1006 when the TCP connection ended without a close frame)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


async def read_head(reader: asyncio.StreamReader, meter: ByteMeter) -> bytes:
    """Read an HTTP head (up to and including the empty line), counting its bytes.

    Only the head is consumed: frames that arrived in the same TCP segment stay in the reader.
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise handshake.HandshakeError("the handshake head is too long") from None
    except asyncio.IncompleteReadError as exc:
        meter.inbound(len(exc.partial))
        raise ConnectionClosed(CloseCode.ABNORMAL, "closed during the handshake") from None
    meter.inbound(len(head))
    return head


class Connection:
    """One open WebSocket connection, client or server side, over an asyncio stream pair.

    The two sides differ in one rule only: a client masks what it sends and expects unmasked
    frames back; a server does the opposite. And in who closes TCP: the server, first (§7.1.1).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        client: bool,
        meter: ByteMeter | None = None,
        max_size: int | None = codec.DEFAULT_MAX_SIZE,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.client = client
        self.meter = meter if meter is not None else ByteMeter()
        self.decoder = MessageDecoder(masked=not client, max_size=max_size)
        self.state = "open"  # then "closing" (our close frame is sent), then "closed"
        self.close_code: int | None = None  # what the other side sent (or 1006)
        self.close_reason = ""
        self.pings_answered = 0
        self.handshake_request = b""  # the raw exchange, for the lesson to show
        self.handshake_response = b""
        self._ready: deque[Message] = deque()

    # --- sending ---------------------------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        self.meter.outbound(len(data))
        self.writer.write(data)
        await self.writer.drain()

    async def send_frame(self, opcode: Opcode, payload: bytes) -> None:
        """Encode and send one frame, masked if we are the client."""
        if self.state != "open":
            raise ConnectionClosed(self.close_code or CloseCode.ABNORMAL, self.close_reason)
        await self._write(codec.encode(opcode, payload, mask=self.client))

    async def send_text(self, text: str) -> None:
        await self.send_frame(Opcode.TEXT, text.encode())

    async def send_binary(self, data: bytes) -> None:
        await self.send_frame(Opcode.BINARY, data)

    async def send(self, data: str | bytes) -> None:
        """Text for ``str``, binary for ``bytes``, as ``websockets`` does."""
        if isinstance(data, str):
            await self.send_text(data)
        else:
            await self.send_binary(bytes(data))

    async def ping(self, data: bytes = b"") -> None:
        """Send a ping; its pong arrives through ``recv``."""
        await self.send_frame(Opcode.PING, data)

    async def send_close(self, code: int | None = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake: send our close frame (once), then only read."""
        if self.state != "open":
            return
        payload = codec.encode_close_payload(code, reason)
        await self._write(codec.encode(Opcode.CLOSE, payload, mask=self.client))
        self.state = "closing"

    # --- receiving -------------------------------------------------------------------------

    async def recv(self) -> Message:
        """The next text, binary or pong message. Raises ``ConnectionClosed`` at the end."""
        while True:
            while self._ready:
                message = self._ready.popleft()
                if message.opcode is Opcode.PING:
                    await self.send_frame(Opcode.PONG, bytes(message.data))
                    self.pings_answered += 1
                elif message.opcode is Opcode.CLOSE:
                    await self._peer_closed(message)
                elif self.state == "open":
                    return message
                # data that arrives after we sent our close frame is dropped (§5.5.1)
            if self.state == "closed":
                raise ConnectionClosed(self.close_code or CloseCode.ABNORMAL, self.close_reason)
            data = await self._read()
            if not data:  # EOF before any close frame: the connection dropped
                await self._finish(CloseCode.ABNORMAL, "")
                continue
            try:
                self._ready.extend(self.decoder.feed(data))
            except ProtocolError as exc:
                # The other side broke the protocol: tell it why, then hang up at once.
                with contextlib.suppress(ConnectionError):
                    await self.send_close(exc.code, str(exc)[:100])
                await self._finish(exc.code, str(exc))

    async def _read(self) -> bytes:
        try:
            data = await self.reader.read(READ_SIZE)
        except ConnectionError:
            data = b""
        self.meter.inbound(len(data))
        return data

    async def _peer_closed(self, message: Message) -> None:
        """A close frame arrived: answer it if it opened the closing handshake, then end."""
        assert message.code is not None
        if self.state == "open":
            # Echo the code (an empty close frame when it carried none: 1005 is never sent).
            code = None if message.code == CloseCode.NO_STATUS else message.code
            with contextlib.suppress(ConnectionError):
                await self.send_close(code, str(message.data))
        await self._finish(message.code, str(message.data))

    async def _finish(self, code: int, reason: str) -> None:
        """Close TCP: the server at once, the client after the server's FIN (or a timeout)."""
        if self.state == "closed":
            return
        self.state = "closed"
        self.close_code, self.close_reason = code, reason
        if self.client and code != CloseCode.ABNORMAL:
            with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
                rest = await asyncio.wait_for(self.reader.read(), CLOSE_TIMEOUT)
                self.meter.inbound(len(rest))
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    async def close(self, code: int | None = CloseCode.NORMAL, reason: str = "") -> tuple[int, str]:
        """The closing handshake from our side; returns the code and reason the peer echoed.

        Only for a connection nobody else is reading (``recv``) at the same time.
        """
        if self.state == "closed":
            return self.close_code or CloseCode.ABNORMAL, self.close_reason
        await self.send_close(code, reason)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                while True:
                    await self.recv()  # anything before the echoed close frame is dropped
        except ConnectionClosed:
            pass
        except TimeoutError:
            await self._finish(CloseCode.ABNORMAL, "no close frame came back")
        return self.close_code or CloseCode.ABNORMAL, self.close_reason

    async def aclose(self) -> None:
        """Close normally (so a connection can be a registered labtools service)."""
        await self.close()


async def connect(url: str, *, key: str | None = None, meter: ByteMeter | None = None) -> Connection:
    """Open a WebSocket connection to ``ws://HOST:PORT/PATH`` by hand: TCP, upgrade, check.

    ``key`` defaults to a fresh random one; pass the RFC's example key only to reproduce it.
    """
    parts = urlsplit(url)
    if parts.scheme != "ws" or parts.hostname is None:
        raise ValueError(f"a ws:// URL, please (no TLS here): {url!r}")
    port = parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    meter = meter if meter is not None else ByteMeter()
    reader, writer = await asyncio.open_connection(parts.hostname, port)
    try:
        key = key or handshake.make_key()
        request = handshake.build_request(parts.netloc, path, key=key)
        meter.outbound(len(request))
        writer.write(request)
        await writer.drain()
        head = await read_head(reader, meter)
        handshake.parse_response(head, key)
    except BaseException:
        writer.close()
        raise
    connection = Connection(reader, writer, client=True, meter=meter)
    connection.handshake_request, connection.handshake_response = request, head
    return connection


# --- the hand-made server ---------------------------------------------------------------------

Handler = Callable[[Connection, Message], Awaitable[None]]


async def echo(connection: Connection, message: Message) -> None:
    """Send every text or binary message back; a pong needs no answer."""
    if message.opcode in (Opcode.TEXT, Opcode.BINARY):
        await connection.send(message.data)


class _RouteMeter(ByteMeter):
    """A server connection's meter: bytes go to the total and to the phase we are in."""

    __slots__ = ("route", "traffic")

    def __init__(self, traffic: Traffic) -> None:
        super().__init__()
        self.traffic = traffic
        self.route = "handshake"

    def inbound(self, n: int) -> None:
        super().inbound(n)
        self.traffic.total.bytes_in += n
        self.traffic.bytes(self.route, inbound=n)

    def outbound(self, n: int) -> None:
        super().outbound(n)
        self.traffic.total.bytes_out += n
        self.traffic.bytes(self.route, outbound=n)


class HandmadeServer:
    """A WebSocket server on ``asyncio.start_server``: handshake, frames, close, nothing more.

    ``traffic`` counts connections (route ``handshake``), data messages (route ``frames``) and
    bytes at the stream, split between the handshake and the frames that follow.
    """

    def __init__(self, handler: Handler = echo) -> None:
        self.handler = handler
        self.traffic = Traffic()
        self.errors: list[str] = []  # handler exceptions, recorded instead of printed
        self.host = ""
        self.port = 0
        self._server: asyncio.Server | None = None
        self._connections: set[Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> HandmadeServer:
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        sockname: Any = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        return self

    @property
    def url(self) -> str:
        """``http://HOST:PORT/``, as every course server spells it (``ServerHandle.ws_url`` has ws://)."""
        return f"http://{self.host}:{self.port}/"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        meter = _RouteMeter(self.traffic)
        connection: Connection | None = None
        try:
            try:
                head = await read_head(reader, meter)
                request = handshake.parse_request(head)
            except handshake.HandshakeError as exc:
                answer = handshake.build_error_response(exc)
                meter.outbound(len(answer))
                writer.write(answer)
                self.traffic.request("handshake", empty=True)
                return
            response = handshake.build_response(request.key)
            meter.outbound(len(response))
            writer.write(response)
            self.traffic.request("handshake")
            meter.route = "frames"  # from here on, every byte is framing or payload
            connection = Connection(reader, writer, client=False, meter=meter)
            connection.handshake_request, connection.handshake_response = head, response
            self._connections.add(connection)
            while True:
                message = await connection.recv()
                if message.opcode in (Opcode.TEXT, Opcode.BINARY):
                    self.traffic.request("frames")
                await self.handler(connection, message)
        except (ConnectionClosed, ConnectionError, asyncio.CancelledError):
            pass
        except Exception as exc:  # a handler bug: record it, close with 1011, keep serving others
            self.errors.append(f"{type(exc).__name__}: {exc}")
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.send_close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            if connection is not None:
                self._connections.discard(connection)
            writer.close()
            self._tasks.discard(task)

    async def aclose(self) -> None:
        """Stop listening, say 1001 "going away" to every client, and wait for them (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self._connections):
            with contextlib.suppress(Exception):
                await connection.send_close(CloseCode.GOING_AWAY, "server shutting down")
        # Each connection's own task reads the client's answering close frame and hangs up.
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=CLOSE_TIMEOUT)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await server.wait_closed()


class WebsocketsEcho:
    """A ``websockets`` echo server: the reference implementation the hand-made client meets.

    Keepalive pings are off so that every byte a lesson counts is one it sent.
    """

    def __init__(self) -> None:
        self.traffic = Traffic()
        self.host = ""
        self.port = 0
        self._server: Any = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> WebsocketsEcho:
        self._server = await websockets_serve(self._echo, host, port, ping_interval=None, compression=None)
        sockname: Any = next(iter(self._server.sockets)).getsockname()
        self.host, self.port = sockname[0], sockname[1]
        return self

    async def _echo(self, websocket: ServerConnection) -> None:
        self.traffic.request("handshake")
        # A client that hangs up without a close frame (the lesson's first, rude handshake)
        # ends the loop with an error; caught here, or websockets would log it from the loop.
        with contextlib.suppress(WebsocketsConnectionClosed):
            async for message in websocket:
                self.traffic.request("frames")
                await websocket.send(message)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def aclose(self) -> None:
        """Close every connection (1001) and stop listening (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()


async def aserve_handmade(
    name: str = "handmade", *, host: str = "127.0.0.1", port: int = 0, handler: Handler = echo
) -> ServerHandle:
    """Start a ``HandmadeServer`` on the labtools loop under ``name`` (replacing the old one)."""

    async def start() -> HandmadeServer:
        return await HandmadeServer(handler).start(host, port)

    return ServerHandle(name, await runtime.arun(runtime.register(name, start)))


def serve_handmade(
    name: str = "handmade", *, host: str = "127.0.0.1", port: int = 0, handler: Handler = echo
) -> ServerHandle:
    """``aserve_handmade`` for plain cells and scripts."""
    return runtime.run(aserve_handmade(name, host=host, port=port, handler=handler))


async def aserve_websockets_echo(
    name: str = "websockets-echo", *, host: str = "127.0.0.1", port: int = 0
) -> ServerHandle:
    """Start a ``websockets`` echo server on the labtools loop under ``name``."""

    async def start() -> WebsocketsEcho:
        return await WebsocketsEcho().start(host, port)

    return ServerHandle(name, await runtime.arun(runtime.register(name, start)))


def serve_websockets_echo(name: str = "websockets-echo", *, host: str = "127.0.0.1", port: int = 0) -> ServerHandle:
    """``aserve_websockets_echo`` for plain cells and scripts."""
    return runtime.run(aserve_websockets_echo(name, host=host, port=port))
