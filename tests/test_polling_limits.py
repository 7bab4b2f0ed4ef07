"""The polling server's limits (PROTOCOL.md, "The polling server's limits"), over real sockets.

Each test is one probe an attacker (or a careless client) tried: half-sent requests, too many
connections, a store that grows forever, odd digits in a query, deep JSON, cross-site posts.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator

import pytest
from http_helpers import post, request
from waiting import wait_until

import labtools as lt
from labtools.polling.client import HttpClient
from labtools.polling.store import MessageStore
from labtools.sim.http_users import Poller, SseListener


def address(handle: lt.ServerHandle) -> tuple[str, int]:
    return handle.server.host, handle.server.port


def raw_partial_heads(handle: lt.ServerHandle, count: int) -> list[socket.socket]:
    """``count`` connections that each send the start of a request head and then nothing."""
    sockets = []
    for _ in range(count):
        s = socket.create_connection(address(handle), timeout=10)
        s.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        sockets.append(s)
    return sockets


def closed_by_server(s: socket.socket) -> bool:
    """True once the server has closed ``s`` (EOF or reset); waits up to the socket's timeout."""
    try:
        return s.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture()
def small() -> Iterator[lt.ServerHandle]:
    handle = lt.serve("polling", name="test-limits", keep=5, page=3, head_timeout=0.5, max_connections=40)
    yield handle
    handle.stop()


# ----- 1. half-sent requests and too many connections ---------------------------------------------


def test_slowloris_connections_are_closed_and_a_bystander_is_answered() -> None:
    handle = lt.serve("polling", name="test-slowloris", head_timeout=1.0)
    sockets = raw_partial_heads(handle, 200)
    try:
        started = time.monotonic()
        stats = request(handle.url, "GET", "/stats")  # a bystander, during the flood
        assert stats.status == 200 and "total" in stats.json()
        assert all(closed_by_server(s) for s in sockets)
        assert time.monotonic() - started < 15
        wait_until(lambda: handle.server.gate.open == 0, within=10, what="the gate to count no open connection")
    finally:
        for s in sockets:
            s.close()
        handle.stop()


def test_a_kept_alive_connection_that_starts_a_head_and_stalls_is_closed(small: lt.ServerHandle) -> None:
    with socket.create_connection(address(small), timeout=10) as s:
        s.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        time.sleep(1.0)  # idle between requests, longer than the head deadline: still open
        s.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /stats HTTP/1.1\r\n")  # and now a head that never ends
        assert closed_by_server(s)


def test_a_trickled_body_is_a_408_and_the_connection_is_closed(small: lt.ServerHandle) -> None:
    with socket.create_connection(address(small), timeout=10) as s:
        s.sendall(b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"from\"")
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 ") and b'"timeout"' in answer
    assert small.read(lambda store: store.count) == 0


def test_a_held_long_poll_outlives_the_head_deadline(small: lt.ServerHandle) -> None:
    started = time.monotonic()
    response = request(small.url, "GET", "/messages?user=Ana&wait=1.5")
    assert response.status == 200 and response.body == b"[]"
    assert time.monotonic() - started >= 1.4


def test_beyond_the_connection_cap_newcomers_get_503_and_the_others_are_untouched() -> None:
    handle = lt.serve("polling", name="test-cap", head_timeout=30, max_connections=20)
    sockets = raw_partial_heads(handle, 20)
    try:
        wait_until(lambda: handle.server.gate.open == 20, within=10, what="the gate to count 20 open connections")
        with socket.create_connection(address(handle), timeout=10) as late:
            answer = b""
            while chunk := late.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 503 ") and b"Connection: close" in answer
        assert handle.server.gate.refused >= 1
        sockets[0].sendall(b"\r\n\r\n")  # an admitted connection finishes its head: answered
        assert sockets[0].recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for s in sockets:
            s.close()
    wait_until(lambda: handle.server.gate.open == 0, within=10, what="the gate to count no open connection")
    assert request(handle.url, "GET", "/stats").status == 200
    handle.stop()


def test_bad_limits_are_refused() -> None:
    from labtools.polling import server

    for options in ({"keep": 0}, {"page": 0}, {"head_timeout": 0}, {"max_connections": 0}):
        with pytest.raises(ValueError):
            server.build(**options)


# ----- 2. a bounded store and bounded answers -----------------------------------------------------


def test_the_store_keeps_the_last_messages_only() -> None:
    store = MessageStore(keep=100, page=10)
    for i in range(1000):
        store.add("Pedro", f"user{i % 7}", f"m{i}")
    assert store.kept == 100 and store.count == 1000
    assert sum(len(store.page_since(f"user{k}", 900).messages) for k in range(7)) <= 7 * 10


def test_answers_are_pages_and_a_forgotten_since_is_a_410_gap(small: lt.ServerHandle) -> None:
    ids = [post(small.url, {"from": "Pedro", "to": "Ana", "text": f"m{i}"}).json()["id"] for i in range(8)]
    assert small.read(lambda store: store.kept) == 5
    gap = request(small.url, "GET", "/messages?user=Ana&since=0")
    assert gap.status == 410 and gap.headers["content-type"].startswith("application/json")
    error = gap.json()["error"]
    assert error["code"] == "gap" and error["resume"] == ids[2]
    first = request(small.url, "GET", f"/messages?user=Ana&since={ids[2]}")
    assert first.status == 200 and [m["id"] for m in first.json()] == ids[3:6]
    assert first.headers["x-more"] == "1"
    last = request(small.url, "GET", f"/messages?user=Ana&since={ids[5]}")
    assert [m["id"] for m in last.json()] == ids[6:] and "x-more" not in last.headers
    started = time.monotonic()  # a long poll from a forgotten point is told at once
    assert request(small.url, "GET", "/messages?user=Ana&since=0&wait=5").status == 410
    assert time.monotonic() - started < 2
    # Someone whose messages were all kept is not told about others' gaps.
    assert request(small.url, "GET", "/messages?user=Luis&since=0").json() == []


def test_clients_follow_pages_and_gaps(small: lt.ServerHandle) -> None:
    for i in range(8):
        post(small.url, {"from": "Pedro", "to": "Ana", "text": f"m{i}"})

    async def main() -> tuple[list[str], int, list[str], int]:
        poller = Poller(small.url, "Ana")
        got = await poller.poll_all()
        await poller.aclose()
        listener = SseListener(small.url, "Ana")
        await listener.start()
        for _ in range(200):
            if len(listener.received) == 5:
                break
            await asyncio.sleep(0.02)
        await listener.aclose()
        return [m["text"] for m in got], poller.gaps, [m["text"] for m in listener.received], listener.gaps

    polled, poll_gaps, streamed, stream_gaps = lt.run(main())
    assert polled == streamed == ["m3", "m4", "m5", "m6", "m7"]
    assert poll_gaps == stream_gaps == 1


def test_sse_replay_is_paged_and_refuses_a_forgotten_resume_point(small: lt.ServerHandle) -> None:
    ids = [post(small.url, {"from": "Pedro", "to": "Ana", "text": f"m{i}"}).json()["id"] for i in range(8)]
    gone = request(small.url, "GET", "/events?user=Ana", headers={"Last-Event-ID": str(ids[0])})
    assert gone.status == 410 and gone.json()["error"]["resume"] == ids[2]

    async def stream() -> str:
        client = HttpClient(small.url)
        chunks: list[bytes] = []
        task = asyncio.ensure_future(client.request(
            "GET", "/events?user=Ana", headers={"Last-Event-ID": str(ids[2])}, on_chunk=chunks.append))
        await asyncio.sleep(0.3)
        task.cancel()
        await client.aclose()
        return b"".join(chunks).decode()

    text = lt.run(stream())
    assert [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")] == ids[3:]


# ----- 3. strict numbers and JSON --------------------------------------------------------------


@pytest.mark.parametrize("since", ["%C2%B2", "%D9%A3", "%205", "1_0", "%2B5", "5.0", "1" * 17, str(2**53 + 1)])
def test_since_is_ascii_digits_in_range(small: lt.ServerHandle, since: str) -> None:
    for target in (f"/messages?user=Ana&since={since}", f"/events?user=Ana&since={since}"):
        response = request(small.url, "GET", target)
        assert response.status == 400, target
        assert response.json()["error"]["code"] == "invalid-data"


@pytest.mark.parametrize("wait", ["1e1", "nan", "inf", "%C2%B2", "0x1"])
def test_wait_is_a_plain_decimal(small: lt.ServerHandle, wait: str) -> None:
    response = request(small.url, "GET", f"/messages?user=Ana&wait={wait}")
    assert response.status == 400 and response.json()["error"]["code"] == "invalid-data"


def test_a_bad_last_event_id_is_a_400_before_any_200(small: lt.ServerHandle) -> None:
    response = request(small.url, "GET", "/events?user=Ana", headers={"Last-Event-ID": "1_0"})
    assert response.status == 400 and response.json()["error"]["code"] == "invalid-data"


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
                                  b'{"from": "Pedro", "to": "Ana", "text": NaN}', b"\xff\xfe"])
def test_any_json_error_is_a_400(small: lt.ServerHandle, body: bytes) -> None:
    response = post(small.url, body[: 64 * 1024])
    assert response.status == 400 and response.json()["error"]["code"] == "bad-json"
    assert small.read(lambda store: store.count) == 0


# ----- 4. JSON only, same site only ------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_posts_must_be_json(small: lt.ServerHandle, content_type: str | None) -> None:
    body = json.dumps({"from": "Pedro", "to": "Ana", "text": "hola"}).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    response = request(small.url, "POST", "/messages", body, headers)
    assert response.status == 415 and response.json()["error"]["code"] == "unsupported-media-type"
    assert small.read(lambda store: store.count) == 0


def test_cross_site_posts_are_refused(small: lt.ServerHandle) -> None:
    message = {"from": "Pedro", "to": "Ana", "text": "hola"}
    for origin in ("http://evil.example", "null", "https://127.0.0.1:1"):
        response = post(small.url, message, {"Origin": origin})
        assert response.status == 403 and response.json()["error"]["code"] == "forbidden-origin"
    assert small.read(lambda store: store.count) == 0
    own = small.url.rstrip("/")
    assert post(small.url, message, {"Origin": own}).status == 201
    assert post(small.url, message).status == 201  # no Origin: not a browser
