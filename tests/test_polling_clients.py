"""The lean HTTP client's parser, against a raw server that writes exactly what a test says."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

import labtools as lt
from labtools.polling.client import HttpClient, HttpError, Response
from labtools.polling.sse import SseParser
from labtools.sim.http_users import Poller


def serve_raw(answer: bytes, *, split: int = 0, close: bool = False) -> Callable[[], Response]:
    """Run a one-request raw server that writes ``answer`` (in ``split``-byte pieces)."""

    async def main() -> tuple[Response, HttpClient]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            if split:
                for i in range(0, len(answer), split):
                    writer.write(answer[i : i + split])
                    await writer.drain()
                    await asyncio.sleep(0)
            else:
                writer.write(answer)
            await writer.drain()
            if close:
                writer.close()
            else:
                await asyncio.sleep(0.2)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = HttpClient(f"http://127.0.0.1:{port}/")
        try:
            return await asyncio.wait_for(client.request("GET", "/x", route="GET /x"), 5), client
        finally:
            await client.aclose()
            server.close()

    return lambda: lt.run(main())


CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Thing: a:b\r\n\r\n"
           b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n")


@pytest.mark.parametrize("split", [0, 1, 3])
def test_content_length_body(split: int) -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n[]"
    response, client = serve_raw(raw, split=split)()
    assert response.status == 200 and response.reason == "OK"
    assert response.headers["content-type"] == "application/json"
    assert response.body == b"[]"
    assert client.traffic.total.bytes_in == len(raw)
    assert client.traffic.total.empty == 1 and client.traffic.routes["GET /x"].requests == 1
    assert client.traffic.total.bytes_out == client.traffic.routes["GET /x"].bytes_out > 20


@pytest.mark.parametrize("split", [0, 1, 4])
def test_chunked_body_with_extensions(split: int) -> None:
    response, client = serve_raw(CHUNKED, split=split)()
    assert response.body == b"hello, world"
    assert response.headers["x-thing"] == "a:b"
    assert client.traffic.total.bytes_in == len(CHUNKED)


def test_body_until_close_and_no_content() -> None:
    response, _ = serve_raw(b"HTTP/1.0 200 OK\r\n\r\nold style", close=True)()
    assert response.body == b"old style"
    response, _ = serve_raw(b"HTTP/1.1 204 No Content\r\n\r\n")()
    assert response.status == 204 and response.body == b""


def test_garbage_and_early_close_fail_the_request() -> None:
    with pytest.raises(ValueError):
        serve_raw(b"SMTP hello\r\n\r\n")()
    with pytest.raises(ConnectionError):
        serve_raw(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", close=True)()


def test_sse_parser_handles_split_events_comments_and_crlf() -> None:
    parser = SseParser()
    stream = b": connected\r\n\r\nid: 3\r\nevent: message\r\ndata: {\"a\": 1}\r\n\r\ndata: x\ndata: y\n\n"
    events = []
    for i in range(len(stream)):
        events += parser.feed(stream[i : i + 1])
    assert events == [("3", "message", '{"a": 1}'), (None, "message", "x\ny")]
    assert parser.last_id == "3"


def test_poller_tracks_since_and_keep_alive() -> None:
    server = lt.serve("polling", name="test-clients")

    async def main() -> tuple[list[int], int, int]:
        poller = Poller(server.url, "Ana", interval=0.05)
        await poller.poll_once()
        from labtools.polling.client import send

        await send(server.url, "Pedro", "Ana", "uno")
        await poller.poll_once()
        since = poller.since
        await poller.poll_once()
        connection = poller.http._conn
        await poller.start()
        await asyncio.sleep(0.3)
        await poller.aclose()
        assert poller.http._conn is None
        return [m["id"] for m in poller.received], since, id(connection)

    ids, since, _ = lt.run(main())
    assert ids == [since]
    stats = server.stats()
    assert stats["routes"]["GET /messages"]["requests"] >= 6
    assert stats["routes"]["GET /messages"]["empty"] == stats["routes"]["GET /messages"]["requests"] - 1


def test_http_error_for_refused_requests() -> None:
    server = lt.serve("polling", name="test-clients")

    async def main() -> None:
        client = HttpClient(server.url)
        try:
            await client.get_json("/messages")
        finally:
            await client.aclose()

    with pytest.raises(HttpError) as info:
        lt.run(main())
    assert info.value.status == 400


def test_bad_urls_are_refused() -> None:
    with pytest.raises(ValueError):
        HttpClient("ws://127.0.0.1:1/")
