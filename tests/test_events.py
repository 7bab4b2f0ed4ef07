"""The event layer against PROTOCOL.md: acknowledgements, broadcasts, rooms, and bad input.

The bad-input test keeps a well-behaved client connected the whole time: whatever the others
send, it must receive every broadcast, in order, once, and never be disconnected.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import labtools
from labtools.events import AckError, Client, EventClient, EventError, EventServer, require
from labtools.events.limits import MAX_FRAME

run = labtools.run


def build(**options: Any) -> EventServer:
    """A test app: echo (ack with the data), shout (to all), others (all but the sender), rooms."""
    server = EventServer("test", page="minichat", **options)

    @server.on("echo")
    def echo(client: Client, data: Any) -> Any:
        return data

    @server.on("shout")
    def shout(client: Client, data: Any) -> None:
        server.broadcast("shout", data)

    @server.on("others")
    def others(client: Client, data: Any) -> None:
        server.broadcast("others", data, exclude=client)

    @server.on("join")
    def join(client: Client, room: Any) -> None:
        require(isinstance(room, str), "room must be a string")
        client.join(room)

    @server.on("to-room")
    def to_room(client: Client, data: Any) -> int:
        """Broadcast to a room; acknowledged with how many members it has on this node."""
        require(isinstance(data, dict) and isinstance(data.get("room"), str), "needs {room}")
        server.broadcast("room-message", data.get("text"), to=data["room"])
        return len(server.rooms.members(data["room"]))

    @server.on("needs-number")
    def needs_number(client: Client, data: Any) -> int:
        require(isinstance(data, int) and not isinstance(data, bool), "data must be an integer")
        return data * 2

    @server.on("slow")
    async def slow(client: Client, data: Any) -> str:
        await asyncio.sleep(data)
        return "done"

    @server.on("bug")
    def bug(client: Client, data: Any) -> None:
        raise RuntimeError("a bug in a handler")

    return server


async def started(**options: Any) -> EventServer:
    server = build(**options)
    await server.start()
    return server


async def raw(server: EventServer) -> ClientConnection:
    return await connect(f"ws://127.0.0.1:{server.port}/", compression=None, max_size=None)


async def reply(ws: ClientConnection, timeout: float = 5.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


# ----- acknowledgements --------------------------------------------------------------------------


def test_request_is_acknowledged_with_the_handlers_result() -> None:
    async def scenario() -> None:
        server = await started()
        pedro = await EventClient.connect(server.url, name="pedro")
        try:
            assert await pedro.request("echo", {"a": [1, "ñ"]}) == {"a": [1, "ñ"]}
            assert await pedro.request("needs-number", 21) == 42
            with pytest.raises(AckError) as refused:
                await pedro.request("needs-number", "x")
            assert refused.value.code == "invalid-data"
            with pytest.raises(AckError) as unknown:
                await pedro.request("no-such-event")
            assert unknown.value.code == "unknown-event"
            with pytest.raises(AckError) as internal:
                await pedro.request("bug")
            assert internal.value.code == "internal"
            assert server.errors and "a bug in a handler" in server.errors[0]
            # An emit with no id gets no acknowledgement, only errors as events.
            await pedro.emit("needs-number", "x")
            error = await pedro.wait_for("error")
            assert error["code"] == "invalid-data"
        finally:
            await pedro.aclose()
            await server.aclose()

    run(scenario())


def test_request_times_out_and_a_late_ack_is_ignored() -> None:
    async def scenario() -> None:
        server = await started()
        pedro = await EventClient.connect(server.url)
        try:
            with pytest.raises(TimeoutError):
                await pedro.request("slow", 0.3, timeout=0.05)
            await asyncio.sleep(0.4)  # the late acknowledgement arrives and is dropped
            assert await pedro.request("echo", 1) == 1
            assert not pedro.closed
        finally:
            await pedro.aclose()
            await server.aclose()

    run(scenario())


def test_every_id_gets_exactly_one_answer_in_order() -> None:
    async def scenario() -> None:
        server = await started()
        ws = await raw(server)
        try:
            for i in range(50):
                await ws.send(json.dumps({"event": "needs-number" if i % 2 else "nope", "data": i, "id": i}))
            answers = [await reply(ws) for _ in range(50)]
            assert [a["ack"] for a in answers] == list(range(50))
            for i, answer in enumerate(answers):
                if i % 2:
                    assert answer == {"ack": i, "data": 2 * i}
                else:
                    assert answer["error"]["code"] == "unknown-event"
            with pytest.raises(TimeoutError):
                await reply(ws, timeout=0.2)
        finally:
            await ws.close()
            await server.aclose()

    run(scenario())


# ----- broadcasts and rooms ----------------------------------------------------------------------


def test_broadcast_to_all_all_but_sender_and_rooms() -> None:
    async def scenario() -> None:
        server = await started()
        pedro = await EventClient.connect(server.url, name="pedro")
        ana = await EventClient.connect(server.url, name="ana")
        luis = await EventClient.connect(server.url, name="luis")
        try:
            await pedro.emit("shout", "hi")
            for client in (pedro, ana, luis):
                assert await client.wait_for("shout") == "hi"
            await pedro.request("others", "psst")
            assert await ana.wait_for("others") == "psst"
            assert await luis.wait_for("others") == "psst"
            await asyncio.sleep(0.1)
            assert pedro.events("others") == []
            await ana.request("join", "room-1")
            await luis.request("join", "room-2")
            assert await pedro.request("to-room", {"room": "room-1", "text": "only ana"}) == 1
            assert await ana.wait_for("room-message") == "only ana"
            assert await pedro.request("to-room", {"room": "nobody", "text": "x"}) == 0
            await asyncio.sleep(0.1)
            assert luis.events("room-message") == [] and pedro.events("room-message") == []
            await ana.aclose()
            await asyncio.sleep(0.1)
            assert "room-1" not in server.rooms  # a closed connection leaves its rooms
            assert await pedro.request("to-room", {"room": "room-2", "text": "luis"}) == 1
        finally:
            for client in (pedro, ana, luis):
                await client.aclose()
            await server.aclose()

    run(scenario())


def test_a_client_that_does_not_record_still_hears_everything() -> None:
    """``record=False`` (a long-lived client among many): nothing is kept in ``received``, the
    listeners get every push, and ``wait_for`` waits for the next one."""

    async def scenario() -> None:
        server = await started()
        quiet = await EventClient.connect(server.url, name="quiet", record=False)
        heard: list[Any] = []
        quiet.on("shout", heard.append)
        try:
            for k in range(50):
                await quiet.request("shout", k)
            assert heard == list(range(50)) and quiet.received == [] and quiet.events("shout") == []
            waiting = asyncio.ensure_future(quiet.wait_for("shout"))
            await asyncio.sleep(0.05)
            assert not waiting.done()  # what came before is not kept: only the next one answers
            await quiet.emit("shout", "next")
            assert await waiting == "next"
        finally:
            await quiet.aclose()
            await server.aclose()

    run(scenario())


# ----- bad input -----------------------------------------------------------------------------------

# (frame, expected code, the id its answer carries: None means an "error" event)
CORPUS: list[tuple[str, str, int | None]] = [
    ("this is not json", "bad-json", None),
    ('{"event": "echo", "data": NaN, "id": 1}', "bad-json", 1),  # its id is still readable: a failed ack
    ('{"event": "echo", "data": Infinity}', "bad-json", None),
    ('{"event": "echo", "data": -Infinity}', "bad-json", None),
    ("[" * 100_000 + "]" * 100_000, "bad-json", None),
    ('{"event": "echo", "data": ' + "[" * 5000 + "]" * 5000 + ', "id": 2}', "bad-json", 2),
    ('{"event": "echo"', "bad-json", None),
    ("[1, 2, 3]", "bad-frame", None),
    ('"msg-to-server"', "bad-frame", None),
    ("null", "bad-frame", None),
    ("42", "bad-frame", None),
    ('{"data": 1}', "bad-frame", None),
    ('{"data": 1, "id": 3}', "bad-frame", 3),
    ('{"event": 5, "id": 4}', "bad-frame", 4),
    ('{"event": "", "id": 5}', "bad-frame", 5),
    ('{"event": null}', "bad-frame", None),
    ('{"event": "echo", "id": "6"}', "bad-frame", None),
    ('{"event": "echo", "id": 1.5}', "bad-frame", None),
    ('{"event": "echo", "id": true}', "bad-frame", None),
    ('{"event": "echo", "id": -1}', "bad-frame", None),
    ('{"event": "echo", "id": [7]}', "bad-frame", None),
    ('{"event": "no-such-event", "data": 1}', "unknown-event", None),
    ('{"event": "no-such-event", "data": 1, "id": 8}', "unknown-event", 8),
    ('{"event": "' + "x" * 10_000 + '", "id": 9}', "unknown-event", 9),
    ('{"event": "needs-number", "data": "12"}', "invalid-data", None),
    ('{"event": "needs-number", "data": true, "id": 10}', "invalid-data", 10),
    ('{"event": "join", "data": {"room": 1}, "id": 11}', "invalid-data", 11),
]


def test_bad_input_answers_the_sender_only_and_never_disturbs_others() -> None:
    async def scenario() -> None:
        server = await started()
        good = await EventClient.connect(server.url, name="good")
        sender = await EventClient.connect(server.url, name="sender")
        attacker = await raw(server)
        sent = 0

        async def broadcast_one() -> None:
            nonlocal sent
            await sender.request("shout", {"n": sent})
            sent += 1

        try:
            for frame, code, id in CORPUS:
                await broadcast_one()
                await attacker.send(frame)
                answer = await reply(attacker)
                while answer.get("event") == "shout":  # the attacker hears broadcasts too
                    answer = await reply(attacker)
                if id is None:
                    assert answer["event"] == "error", (frame[:60], answer)
                    assert answer["data"]["code"] == code, (frame[:60], answer)
                    assert "ack" not in answer
                else:
                    assert answer["ack"] == id and answer["error"]["code"] == code, (frame[:60], answer)
                    assert "event" not in answer

            # A binary frame closes that connection with 1003; the others stay.
            binary = await raw(server)
            await broadcast_one()
            await binary.send(b"\x00\x01binary")
            with pytest.raises(ConnectionClosed):
                while True:
                    await binary.recv()
            assert binary.close_code == 1003

            # A frame larger than max_size (1 MiB) closes that connection with 1009.
            huge = await raw(server)
            await broadcast_one()
            await huge.send(json.dumps({"event": "echo", "data": "x" * MAX_FRAME}))
            with pytest.raises(ConnectionClosed):
                while True:
                    await huge.recv()
            assert huge.close_code == 1009

            # A flood is rate limited: every frame with an id still gets exactly one answer.
            flood = await raw(server)
            frames = [json.dumps({"event": "echo", "data": i, "id": i}) for i in range(600)]
            for i, frame in enumerate(frames):
                await flood.send(frame)
                if i % 100 == 0:
                    await broadcast_one()
            answers: list[dict] = []
            while len(answers) < len(frames):
                answer = await reply(flood)
                if "ack" in answer:
                    answers.append(answer)
            assert sorted(a["ack"] for a in answers) == list(range(600))
            limited = [a for a in answers if "error" in a]
            assert limited and all(a["error"]["code"] == "rate-limited" for a in limited)
            assert all(a["data"] == a["ack"] for a in answers if "error" not in a)
            assert flood.state.name == "OPEN"  # rate limiting answers; it does not disconnect
            await broadcast_one()

            await good.wait_for("shout", where=lambda d: d["n"] == sent - 1)
            await asyncio.sleep(0.1)
            assert good.events("shout") == [{"n": n} for n in range(sent)]  # all, in order, once
            assert good.errors == [] and not good.closed
            assert await good.request("echo", "still here") == "still here"
            assert server.errors == []
            for ws in (attacker, flood):
                await ws.close()
        finally:
            await good.aclose()
            await sender.aclose()
            await server.aclose()

    run(scenario())


def test_a_slow_reader_is_dropped_and_does_not_stall_the_others() -> None:
    async def scenario() -> None:
        server = await started()
        fast = await EventClient.connect(server.url, name="fast")
        slow = await raw(server)
        slow.transport.pause_reading()  # a client that stopped reading
        await asyncio.sleep(0.05)
        try:
            blob = "x" * 100_000
            started_at = time.perf_counter()
            for n in range(300):  # 30 MB: more than the kernel buffers plus SLOW_CLIENT_BUFFER
                server.broadcast("blob", {"n": n, "blob": blob})
                await asyncio.sleep(0)
            await fast.wait_for("blob", timeout=20, where=lambda d: d["n"] == 299)
            elapsed = time.perf_counter() - started_at
            assert [d["n"] for d in fast.events("blob")] == list(range(300))
            assert server.slow_clients_dropped == 1
            assert elapsed < 10
            assert not fast.closed
        finally:
            slow.transport.abort()
            await fast.aclose()
            await server.aclose()

    run(scenario())


def test_keepalive_cuts_a_silent_peer_and_keeps_a_live_one() -> None:
    async def scenario() -> None:
        server = await started(keepalive=0.2)
        live = await EventClient.connect(server.url, name="live")
        loop = asyncio.get_running_loop()
        silent_closed = loop.create_future()

        class Silent(asyncio.Protocol):
            """Completes the handshake, then never answers anything (a vanished laptop)."""

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                transport.write(  # type: ignore[attr-defined]
                    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                )

            def connection_lost(self, exc: Exception | None) -> None:
                silent_closed.set_result(time.perf_counter())

        opened = time.perf_counter()
        await loop.create_connection(Silent, "127.0.0.1", server.port)
        try:
            closed_at = await asyncio.wait_for(silent_closed, 5)
            assert 0.3 < closed_at - opened < 2
            assert not live.closed and await live.request("echo", 1) == 1
        finally:
            await live.aclose()
            await server.aclose()

    run(scenario())


# ----- HTTP beside the socket ----------------------------------------------------------------------


def test_pages_and_routes_share_the_port() -> None:
    import urllib.request
    from urllib.error import HTTPError

    server = run(started())

    @server.route("/hello")
    def hello(request: Any) -> tuple[int, str, bytes]:
        return 200, "text/plain", b"hi"

    def get(path: str) -> tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(f"{server.url.rstrip('/')}{path}", timeout=5) as response:
                return response.status, response.headers["Content-Type"], response.read()
        except HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read()

    try:
        status, kind, body = get("/")
        assert status == 200 and kind.startswith("text/html") and b"./events.js" in body
        status, kind, body = get("/events.js")  # the shared client, from static/common
        assert status == 200 and "javascript" in kind and b"EventSocket" in body
        assert get("/hello") == (200, "text/plain", b"hi")
        for missing in ("/nope.js", "/../server.py", "/.hidden.js", "/a/b.js", "/x.py"):
            assert get(missing)[0] == 404, missing
        assert "GET /" in server.traffic.routes
    finally:
        run(server.aclose())


def test_event_error_carries_a_code() -> None:
    error = EventError("invalid-data", "nope")
    assert error.as_data() == {"code": "invalid-data", "message": "nope"}
