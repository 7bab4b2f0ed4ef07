"""Two small WebSocket servers for lesson 03: the hand-made one and a ``websockets`` echo.

``HandmadeServer`` runs the hand-made ``Connection`` on ``asyncio.start_server`` (an echo by
default); ``WebsocketsEcho`` is the reference implementation the hand-made client meets. Both
have the shape every course server has (``start(host, port)``, ``url``, ``traffic``,
``aclose()``), so a cell runs them with ``lt.serve(HandmadeServer())`` like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as websockets_serve
from websockets.exceptions import ConnectionClosed as WebsocketsConnectionClosed

from ..measure.metrics import Traffic
from ..measure.wire import ByteMeter
from . import handshake
from .codec import CloseCode, Message, Opcode
from .connection import CLOSE_TIMEOUT, Connection, ConnectionClosed, read_head

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

    name = "handmade"

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
        self._server = await asyncio.start_server(self.serve_connection, host, port, reuse_address=True)
        sockname: Any = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        return self

    @property
    def url(self) -> str:
        """``http://HOST:PORT/``, as every course server spells it (``ServerHandle.ws_url`` has ws://)."""
        return f"http://{self.host}:{self.port}/"

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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

    name = "websockets-echo"

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

