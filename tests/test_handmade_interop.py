"""The hand-made WebSocket speaks the real protocol, both ways, over loopback sockets.

* the hand-made client (``labtools.handmade.connection.connect``) against a ``websockets`` echo server;
* a ``websockets`` client against the hand-made server (``HandmadeServer``).

Servers run on the labtools loop, registered by name, as in the notebook.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as websockets_connect
from websockets.exceptions import ConnectionClosedError

from labtools import runtime
from labtools.handmade import codec, handshake
from labtools.handmade.codec import Message, Opcode
from labtools.handmade.connection import Connection, connect
from labtools.handmade.server import HandmadeServer, WebsocketsEcho
from labtools.serving import ServerHandle, serve

MESSAGES: list[str | bytes] = [
    "Hello",
    "héllo ✓ 🎉",
    b"\x00\x01\xfe\xff",
    "",
    b"",
    "x" * 125,
    "y" * 126,
    b"z" * 65535,
    bytes(range(256)) * 256,  # 65,536 bytes: a 64-bit length
]
T = TypeVar("T")
IDS = ["text", "unicode", "binary", "empty-text", "empty-binary", "125", "126", "65535", "65536"]


def run(coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
    """Every scenario runs on the labtools loop, with a deadline so a hang fails the test."""
    return runtime.run(coro, timeout)


@pytest.fixture(scope="module")
def websockets_server() -> Iterator[ServerHandle]:
    server = serve(WebsocketsEcho(), name="test-websockets-echo")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def handmade_server() -> Iterator[ServerHandle]:
    server = serve(HandmadeServer(), name="test-handmade")
    yield server
    server.stop()


def _kind(data: str | bytes) -> Opcode:
    return Opcode.TEXT if isinstance(data, str) else Opcode.BINARY


# --- hand-made client -> websockets server ----------------------------------------------------


@pytest.mark.parametrize("data", MESSAGES, ids=IDS)
def test_handmade_client_to_websockets_server(websockets_server: ServerHandle, data: str | bytes) -> None:
    async def scenario() -> Message:
        connection = await connect(websockets_server.ws_url)
        try:
            await connection.send(data)
            return await connection.recv()
        finally:
            await connection.close()

    assert run(scenario()) == Message(_kind(data), data)


def test_handmade_client_ping_pong_and_close(websockets_server: ServerHandle) -> None:
    async def scenario() -> tuple[Message, tuple[int, str], str]:
        connection = await connect(websockets_server.ws_url)
        await connection.ping(b"are you there?")
        pong = await connection.recv()
        closed = await connection.close(1000, "bye")
        return pong, closed, connection.state

    pong, closed, state = run(scenario())
    assert pong == Message(Opcode.PONG, b"are you there?")
    assert closed == (1000, "bye")  # websockets echoes the code and the reason
    assert state == "closed"


def test_handmade_client_counts_every_byte(websockets_server: ServerHandle) -> None:
    """Handshake once, then exactly header_size(n) + n per message each way."""
    payloads = ["hi", "x" * 200, "y" * 70_000]

    async def scenario() -> tuple[int, int, int, int]:
        connection = await connect(websockets_server.ws_url)
        after_handshake = connection.meter.bytes_out, connection.meter.bytes_in
        for text in payloads:
            await connection.send_text(text)
            await connection.recv()
        sent = connection.meter.bytes_out - after_handshake[0]
        received = connection.meter.bytes_in - after_handshake[1]
        await connection.close()
        return *after_handshake, sent, received

    handshake_out, handshake_in, sent, received = run(scenario())
    assert 150 < handshake_out < 300 and 100 < handshake_in < 300
    assert sent == sum(codec.header_size(len(p), True) + len(p) for p in payloads)
    assert received == sum(codec.header_size(len(p), False) + len(p) for p in payloads)


def test_handmade_client_answers_pings_from_the_server(handmade_server: ServerHandle) -> None:
    async def pinger(connection: Connection, message: Message) -> None:
        await connection.send_frame(Opcode.PING, b"tick")
        await connection.send(message.data)

    server = serve(HandmadeServer(pinger), name="test-pinger")

    async def scenario() -> tuple[Message, int]:
        connection = await connect(server.ws_url)
        await connection.send_text("hi")
        reply = await connection.recv()  # the ping was answered on the way, not returned
        await connection.close()
        return reply, connection.pings_answered

    try:
        assert run(scenario()) == (Message(Opcode.TEXT, "hi"), 1)
    finally:
        server.stop()


def test_handmade_client_refuses_a_plain_http_server() -> None:
    polling = serve("polling", name="test-polling")
    try:
        with pytest.raises(handshake.HandshakeError, match="not 101"):
            run(connect(polling.ws_url + "messages?user=ana"))
    finally:
        polling.stop()


# --- websockets client -> hand-made server ----------------------------------------------------


@pytest.mark.parametrize("data", MESSAGES, ids=IDS)
def test_websockets_client_to_handmade_server(handmade_server: ServerHandle, data: str | bytes) -> None:
    async def scenario() -> str | bytes:
        async with websockets_connect(handmade_server.ws_url) as websocket:
            await websocket.send(data)
            return await websocket.recv()

    assert run(scenario()) == data


def test_websockets_client_ping_pong_and_close(handmade_server: ServerHandle) -> None:
    async def scenario() -> tuple[float, int | None, str | None]:
        websocket = await websockets_connect(handmade_server.ws_url)
        latency = await (await websocket.ping(b"are you there?"))
        await websocket.close(1000, "bye")
        return latency, websocket.close_code, websocket.close_reason

    latency, code, reason = run(scenario())
    assert latency >= 0
    assert (code, reason) == (1000, "bye")  # the hand-made server echoed them


def test_websockets_client_offers_compression_and_gets_none(handmade_server: ServerHandle) -> None:
    async def scenario() -> str | None:
        async with websockets_connect(handmade_server.ws_url) as websocket:  # offers permessage-deflate
            return websocket.response.headers.get("Sec-WebSocket-Extensions") if websocket.response else "?"

    assert run(scenario()) is None


def test_handmade_server_closes_with_a_code_of_its_own() -> None:
    async def closer(connection: Connection, message: Message) -> None:
        await connection.send_close(4000, "as you wish")

    server = serve(HandmadeServer(closer), name="test-closer")

    async def scenario() -> tuple[int | None, str | None]:
        async with websockets_connect(server.ws_url) as websocket:
            await websocket.send("close me")
            with pytest.raises(ConnectionClosedError):
                await websocket.recv()
            return websocket.close_code, websocket.close_reason

    try:
        assert run(scenario()) == (4000, "as you wish")
    finally:
        server.stop()


def test_handmade_server_rejects_an_unmasked_frame(handmade_server: ServerHandle) -> None:
    async def scenario() -> tuple[bytes, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", handmade_server.port)
        key = handshake.make_key()
        writer.write(handshake.build_request(f"127.0.0.1:{handmade_server.port}", key=key))
        head = await reader.readuntil(b"\r\n\r\n")
        handshake.parse_response(head, key)
        writer.write(codec.text("Hello"))  # a client that forgot to mask
        rest = await reader.read()  # the server's close frame, then EOF
        writer.close()
        return head, rest

    _head, rest = run(scenario())
    message = codec.MessageDecoder(masked=False).feed(rest)
    assert len(message) == 1 and message[0].opcode is Opcode.CLOSE and message[0].code == 1002


def test_handmade_server_refuses_a_plain_get(handmade_server: ServerHandle) -> None:
    async def scenario() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", handmade_server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await reader.read()
        writer.close()
        return answer

    assert run(scenario()).startswith(b"HTTP/1.1 426 Upgrade Required\r\n")


def test_handmade_server_reads_the_first_frame_sent_with_the_request(handmade_server: ServerHandle) -> None:
    """A frame in the same TCP segment as the upgrade request must not be lost."""

    async def scenario() -> list[Message]:
        reader, writer = await asyncio.open_connection("127.0.0.1", handmade_server.port)
        key = handshake.make_key()
        writer.write(handshake.build_request("x", key=key) + codec.text("early", mask=True))
        handshake.parse_response(await reader.readuntil(b"\r\n\r\n"), key)
        decoder = codec.MessageDecoder(masked=False)
        messages: list[Message] = []
        while not messages:
            messages += decoder.feed(await reader.read(1024))
        writer.close()
        return messages

    assert run(scenario()) == [Message(Opcode.TEXT, "early")]


def test_handmade_client_to_handmade_server_and_traffic() -> None:
    server = serve(HandmadeServer(), name="test-traffic")

    async def scenario() -> Connection:
        connection = await connect(server.ws_url)
        for i in range(5):
            await connection.send_text(f"message {i}")
            assert await connection.recv() == Message(Opcode.TEXT, f"message {i}")
        await connection.close()
        return connection

    try:
        connection = run(scenario())
        stats = server.stats()
    finally:
        server.stop()
    assert stats["routes"]["handshake"]["requests"] == 1
    assert stats["routes"]["frames"]["requests"] == 5
    assert stats["total"]["bytesIn"] == connection.meter.bytes_out
    assert stats["total"]["bytesOut"] == connection.meter.bytes_in
    assert stats["routes"]["handshake"]["bytesIn"] == len(connection.handshake_request)
    assert stats["routes"]["handshake"]["bytesOut"] == len(connection.handshake_response)
    framing = sum(codec.header_size(len(f"message {i}"), True) + len(f"message {i}") for i in range(5))
    assert stats["routes"]["frames"]["bytesIn"] == framing + len(codec.close(1000, mask=True))


# --- stopping and replacing -------------------------------------------------------------------


def test_stopping_the_server_says_going_away_to_open_clients() -> None:
    server = serve(HandmadeServer(), name="test-stop")

    async def open_client() -> ClientConnection:
        return await websockets_connect(server.ws_url)

    websocket = run(open_client())
    server.stop()  # returns once the client answered the close (or after a timeout)

    async def after() -> tuple[int | None, str | None]:
        await websocket.wait_closed()
        return websocket.close_code, websocket.close_reason

    assert run(after()) == (1001, "server shutting down")
    server.stop()  # idempotent
    with pytest.raises(OSError):
        run(asyncio.open_connection("127.0.0.1", server.port))


def test_registering_again_replaces_the_server() -> None:
    first = serve(HandmadeServer(), name="test-replace")
    second = serve(HandmadeServer(), name="test-replace", port=0)
    assert runtime.services()["test-replace"] is second.server
    with pytest.raises(OSError):
        run(asyncio.open_connection("127.0.0.1", first.port))
    second.stop()
    ws_first = serve(WebsocketsEcho(), name="test-replace-ws")
    ws_second = serve(WebsocketsEcho(), name="test-replace-ws")
    with pytest.raises(OSError):
        run(asyncio.open_connection("127.0.0.1", ws_first.port))
    ws_second.stop()


def test_nothing_went_wrong_in_the_background() -> None:
    assert not [e for e in runtime.errors() if "handmade" in e.lower() or "websocket" in e.lower()]
