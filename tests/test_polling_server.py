"""The polling contract (PROTOCOL.md, "The polling lessons") over real sockets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from http_helpers import post, request

import labtools as lt
from labtools.polling.client import HttpClient, send
from labtools.sim.http_users import LongPoller, SseListener


@pytest.fixture()
def server() -> lt.ServerHandle:
    return lt.serve("polling", name="test-contract")




def test_post_then_get_with_since(server: lt.ServerHandle) -> None:
    first = post(server.url, {"from": "Pedro", "to": "Ana", "text": "Hola"})
    assert first.status == 201
    stored = first.json()
    assert stored["from"] == "Pedro" and stored["to"] == "Ana" and stored["text"] == "Hola"
    second = post(server.url, {"from": "Luis", "to": "Ana", "text": "Hey"}).json()
    post(server.url, {"from": "Ana", "to": "Pedro", "text": "Hi"})
    assert second["id"] > stored["id"]
    got = request(server.url, "GET", "/messages?user=Ana").json()
    assert [m["text"] for m in got] == ["Hola", "Hey"]
    got = request(server.url, "GET", f"/messages?user=Ana&since={stored['id']}").json()
    assert [m["text"] for m in got] == ["Hey"]
    empty = request(server.url, "GET", f"/messages?user=Ana&since={second['id']}")
    assert empty.status == 200 and empty.body == b"[]"
    assert request(server.url, "GET", "/messages?user=Nobody").json() == []


def test_stats_are_exact_for_a_known_workload(server: lt.ServerHandle) -> None:
    polls = 7

    async def workload() -> HttpClient:
        client = HttpClient(server.url)
        await send(client, "Pedro", "Ana", "Hola")
        for _ in range(polls):
            await client.request("GET", "/messages?user=Ana&since=1", route="GET /messages")
        await client.aclose()
        return client

    client = lt.run(workload())
    time.sleep(0.1)
    stats = server.stats()
    mine = client.traffic.as_dict()
    assert stats["total"]["requests"] == polls + 1 == mine["total"]["requests"]
    assert stats["total"]["empty"] == polls == mine["total"]["empty"]
    assert stats["total"]["bytesIn"] == mine["total"]["bytesOut"]
    assert stats["total"]["bytesOut"] == mine["total"]["bytesIn"]
    for route in ("GET /messages", "POST /messages"):
        assert stats["routes"][route]["bytesIn"] == mine["routes"][route]["bytesOut"]
        assert stats["routes"][route]["bytesOut"] == mine["routes"][route]["bytesIn"]
    # Every empty poll costs the same bytes: a request and a "[]" answer, headers included.
    per_poll = mine["routes"]["GET /messages"]["bytesIn"] / polls
    assert per_poll == int(per_poll) and per_poll > 100
    over_http = request(server.url, "GET", "/stats").json()
    # /stats shows the counters as they were when it was asked: its own request's bytes are in
    # (they crossed the socket first), the request itself and its answer are not yet.
    for key in ("requests", "empty", "bytesOut"):
        assert over_http["total"][key] == stats["total"][key]
    assert over_http["total"]["bytesIn"] == stats["total"]["bytesIn"] + len(b"GET /stats HTTP/1.1\r\nHost: ") + len(
        server.url.removeprefix("http://").rstrip("/")) + 4
    assert set(over_http["routes"]["GET /messages"]) == {"requests", "empty", "bytesIn", "bytesOut"}


def test_long_poll_returns_on_a_message_and_on_timeout(server: lt.ServerHandle) -> None:
    async def main() -> tuple[float, list, float, list]:
        client = HttpClient(server.url)
        started = time.perf_counter()
        waiting = asyncio.ensure_future(client.get_json("/messages?user=Ana&wait=5"))
        await asyncio.sleep(0.2)
        await send(server.url, "Pedro", "Ana", "now")
        got = await waiting
        on_message = time.perf_counter() - started
        started = time.perf_counter()
        empty = await client.get_json(f"/messages?user=Ana&wait=0.4&since={got[-1]['id']}")
        on_timeout = time.perf_counter() - started
        await client.aclose()
        return on_message, got, on_timeout, empty

    on_message, got, on_timeout, empty = lt.run(main())
    assert [m["text"] for m in got] == ["now"]
    assert 0.15 <= on_message < 1.0
    assert empty == [] and 0.35 <= on_timeout < 1.5


def test_long_poller_client_receives(server: lt.ServerHandle) -> None:
    async def main() -> list[dict]:
        poller = LongPoller(server.url, "Ana", wait=5)
        await poller.start()
        await send(server.url, "Pedro", "Ana", "uno")
        await send(server.url, "Pedro", "Ana", "dos")
        for _ in range(100):
            if len(poller.received) == 2:
                break
            await asyncio.sleep(0.02)
        await poller.aclose()
        return poller.received

    assert [m["text"] for m in lt.run(main())] == ["uno", "dos"]


def test_sse_stream_and_last_event_id_resume(server: lt.ServerHandle) -> None:
    async def main() -> tuple[list[str], list[str], int]:
        first = SseListener(server.url, "Ana")
        await first.start()
        await send(server.url, "Pedro", "Ana", "uno")
        await send(server.url, "Pedro", "Ana", "dos")
        for _ in range(100):
            if len(first.received) == 2:
                break
            await asyncio.sleep(0.02)
        await first.aclose()
        await send(server.url, "Pedro", "Ana", "tres")  # while nobody listens
        second = SseListener(server.url, "Ana", since=first.since)  # resumes with Last-Event-ID
        await second.start()
        for _ in range(100):
            if second.received:
                break
            await asyncio.sleep(0.02)
        await second.aclose()
        return [m["text"] for m in first.received], [m["text"] for m in second.received], first.since

    first, second, last = lt.run(main())
    assert first == ["uno", "dos"]
    assert second == ["tres"]
    raw = request_stream(server.url, {"Last-Event-ID": str(last - 1)})
    assert "event: message" in raw and f"id: {last}\n" in raw and '"text": "dos"' in raw and '"uno"' not in raw


def request_stream(url: str, headers: dict) -> str:
    """The first bytes of a raw SSE stream (read for a moment, then hang up)."""

    async def main() -> str:
        client = HttpClient(url)
        chunks: list[bytes] = []
        task = asyncio.ensure_future(client.request("GET", "/events?user=Ana", headers=headers, on_chunk=chunks.append))
        await asyncio.sleep(0.3)
        task.cancel()
        await client.aclose()
        return b"".join(chunks).decode()

    text = lt.run(main())
    assert text.startswith(": connected\n\n")
    return text


BAD_BODIES: list[tuple[Any, int, str]] = [
    (b"{not json", 400, "bad-json"),
    (b"", 400, "bad-json"),
    ([1, 2], 400, "invalid-data"),
    ({"from": "Pedro", "to": "Ana"}, 400, "invalid-data"),
    ({"from": "Pedro", "text": "hi"}, 400, "invalid-data"),
    ({"from": 5, "to": "Ana", "text": "hi"}, 400, "invalid-data"),
    ({"from": "Pedro", "to": "Ana", "text": 5}, 400, "invalid-data"),
    ({"from": "Pedro", "to": "Ana", "text": "   "}, 400, "invalid-data"),
    ({"from": "Pedro", "to": "Ana", "text": "x" * 4001}, 400, "invalid-data"),
    ({"from": "Pe dro", "to": "Ana", "text": "hi"}, 400, "invalid-data"),
    (b"x" * (64 * 1024 + 1), 413, "too-large"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_bad_posts_get_a_json_error_and_store_nothing(server: lt.ServerHandle, body: Any, status: int,
                                                      code: str) -> None:
    before = server.read(lambda store: store.count)
    response = post(server.url, body)
    assert response.status == status, response.body[:200]
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == code
    assert server.read(lambda store: store.count) == before
    assert post(server.url, {"from": "Pedro", "to": "Ana", "text": "still up"}).status == 201


@pytest.mark.parametrize("query", [
    "", "user=", "user=Ana&since=abc", "user=Ana&since=-1", "user=Ana&wait=x", "user=Ana&wait=61",
    "user=Ana&wait=-1", "user=a%20b",
])
def test_bad_queries(server: lt.ServerHandle, query: str) -> None:
    response = request(server.url, "GET", f"/messages?{query}")
    assert response.status == 400 and response.json()["error"]["code"] == "invalid-data"


def test_bad_sse_resume_point(server: lt.ServerHandle) -> None:
    response = request(server.url, "GET", "/events?user=Ana", headers={"Last-Event-ID": "abc"})
    assert response.status == 400 and response.json()["error"]["code"] == "invalid-data"


def test_a_roster_refuses_unknown_users() -> None:
    server = lt.serve("polling", name="test-roster", users=["Pedro", "Ana"])
    assert post(server.url, {"from": "Pedro", "to": "Ana", "text": "hola"}).status == 201
    for payload in ({"from": "Mallory", "to": "Ana", "text": "hi"}, {"from": "Pedro", "to": "Eve", "text": "hi"}):
        response = post(server.url, payload)
        assert response.status == 404 and response.json()["error"]["code"] == "unknown-user"
    response = request(server.url, "GET", "/messages?user=Eve")
    assert response.status == 404 and response.json()["error"]["code"] == "unknown-user"
    assert server.read(lambda store: store.count) == 1
    server.stop()


def test_unknown_route_and_method(server: lt.ServerHandle) -> None:
    assert request(server.url, "GET", "/nope").status == 404
    assert request(server.url, "DELETE", "/messages").status == 405
    stats = server.stats()
    assert stats["total"]["requests"] == 2
