"""A hand-made WebSocket connection on plain asyncio streams, every byte counted.

Lesson 03 builds WebSocket from ``handshake`` (the HTTP upgrade) and ``codec`` (the frames),
both free of I/O; this module adds the I/O: ``connect(url)`` opens a client ``Connection``
with ``send_text``, ``send_binary``, ``ping``, ``recv`` (text, binary and pong messages; pings
are answered for you) and ``close(code, reason)``. ``server.py`` serves the same ``Connection``.

Bytes are counted where they meet the stream: every ``write`` and every ``read`` goes through
the connection's ``ByteMeter``, handshake included. Nothing here prints.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from urllib.parse import urlsplit

from ..measure.wire import ByteMeter
from . import codec, handshake
from .codec import CloseCode, Message, MessageDecoder, Opcode, ProtocolError

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

