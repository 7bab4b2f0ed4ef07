"""The event layer against an attacker's probe: each test reproduces one attack on real sockets.

Every app (minichat, bands, tickets, map, chat, relay) is an ``EventServer``, so these
protections hold for all of them: text that UTF-8 cannot encode, clients that never read,
floods of large frames, shutdown under a flood, out-of-range numbers, and pages of other
origins opening the socket.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response

import labtools
from labtools import serving
from labtools.events import AckError, Client, EventClient, EventServer
from labtools.events import dispatch as dispatch_module
from labtools.events.limits import MIB, Limits

run = labtools.run
LONE = "\ud800"  # half of a surrogate pair: valid JSON (as an escape), never valid UTF-8


def echo_server(**options: Any) -> EventServer:
    """A test app: ``echo`` acknowledges with its data, ``bad-result`` returns a lone surrogate."""
    server = EventServer("hardening", page="minichat", **options)

    @server.on("echo")
    def echo(client: Client, data: Any) -> Any:
        return data

    @server.on("bad-result")
    def bad_result(client: Client, data: Any) -> str:
        return LONE

    return server


async def started(server: EventServer) -> EventServer:
    await server.start()
    return server


async def raw(server: EventServer, **options: Any) -> ClientConnection:
    return await connect(f"ws://127.0.0.1:{server.port}/", compression=None, max_size=None, **options)


async def answer(ws: ClientConnection, where: Callable[[dict], bool] = lambda _a: True, timeout: float = 10) -> dict:
    """The next frame that satisfies ``where`` (broadcasts in between are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if where(frame):
                return frame


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


# ----- 1. text UTF-8 cannot encode ------------------------------------------------------------------


def raw_frame(event: str, data_json: str, id: int) -> str:
    """A frame written by hand, so that ``\\ud800`` reaches the server as the JSON escape."""
    return f'{{"event":"{event}","data":{data_json},"id":{id}}}'


@pytest.mark.parametrize(
    ("app", "frame"),
    [
        ("bands", raw_frame("create-band", '{"name":"\\ud800"}', 1)),
        ("bands", raw_frame("create-band", '{"name":"ok","\\udfff":1}', 1)),  # in a key
        ("tickets", raw_frame("next-desktop-ticket", '{"agent":"\\ud800","desktop":1}', 1)),
        ("map", raw_frame("new-marker", '{"id":"\\ud800","lng":1,"lat":2}', 1)),
        ("map", raw_frame("new-marker", '{"id":"m","lng":1,"lat":2,"deep":[[[["\\ud800x"]]]]}', 1)),
    ],
)
def test_a_lone_surrogate_is_refused_before_any_handler_runs(app: str, frame: str) -> None:
    async def scenario() -> None:
        server = await started(serving.build(app))  # type: ignore[arg-type]
        ws = await raw(server)
        try:
            if app == "tickets":
                await ws.send(raw_frame("request-ticket", "null", 7))
                await answer(ws, lambda a: a.get("ack") == 7)
            await ws.send(frame)
            refused = await answer(ws, lambda a: a.get("ack") == 1)
            assert refused["error"]["code"] == "invalid-data"
            # Nothing was stored: a new client still gets its welcome, and the app still works.
            newcomer = await EventClient.connect(server.url, name="newcomer")
            try:
                welcome = {"bands": "band-list", "tickets": "assigned-tickets", "map": "active-marker"}[app]
                await newcomer.wait_for(welcome, timeout=10)
                assert not newcomer.closed
            finally:
                await newcomer.aclose()
            if app == "tickets":
                await ws.send(raw_frame("next-desktop-ticket", '{"agent":"ana","desktop":1}', 8))
                assert (await answer(ws, lambda a: a.get("ack") == 8))["data"]["number"] == 1
                status, body = await asyncio.to_thread(get, f"{server.url}last")  # off the server's loop
                assert status == 200 and json.loads(body)["ok"] is True
            assert server.errors == []
        finally:
            await ws.close()
            await server.aclose()

    run(scenario())


def test_an_escaped_surrogate_pair_is_one_character_and_accepted() -> None:
    async def scenario() -> None:
        server = await started(echo_server())
        ws = await raw(server)
        try:
            await ws.send(raw_frame("echo", '"\\ud83d\\ude00 and a \\\\ud800 that is text"', 1))
            assert (await answer(ws))["data"] == "\U0001f600 and a \\ud800 that is text"
        finally:
            await ws.close()
            await server.aclose()

    run(scenario())


def test_a_failing_send_or_connect_callback_never_kills_the_connection() -> None:
    async def scenario() -> None:
        server = echo_server()

        @server.connected
        def broken_welcome(client: Client) -> None:
            raise RuntimeError("welcome failed")

        await server.start()
        pedro = await EventClient.connect(server.url, name="pedro")
        try:
            with pytest.raises(AckError) as failed:
                await pedro.request("bad-result")  # a result UTF-8 cannot encode
            assert failed.value.code == "internal"
            assert await pedro.request("echo", "still here") == "still here"
            assert not pedro.closed
            assert any("welcome failed" in e for e in server.errors)
        finally:
            await pedro.aclose()
            await server.aclose()

    run(scenario())


# ----- 2. clients that never read -------------------------------------------------------------------

HANDSHAKE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class Deaf(asyncio.Protocol):
    """Completes the handshake, then stops reading and only writes (what it got is kept)."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.upgraded = loop.create_future()
        self.lost = loop.create_future()
        self.data = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(HANDSHAKE)

    def data_received(self, data: bytes) -> None:
        self.data += data
        if not self.upgraded.done() and b"\r\n\r\n" in self.data:
            assert self.transport is not None
            self.transport.pause_reading()
            self.upgraded.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


async def deaf(server: EventServer) -> Deaf:
    _transport, peer = await asyncio.get_running_loop().create_connection(Deaf, "127.0.0.1", server.port)
    await asyncio.wait_for(peer.upgraded, 10)
    return peer


def masked(opcode: Opcode, payload: bytes) -> bytes:
    return Frame(opcode, payload).serialize(mask=True, extensions=[])


async def flood_and_watch(server: EventServer, peer: Deaf, frame: bytes, total: int) -> int:
    """Write ``total`` bytes of ``frame`` from a peer that never reads; the most the server buffered."""
    assert peer.transport is not None
    batch = frame * max(1, 65_536 // len(frame))
    most = 0
    written = 0
    while written < total and not peer.lost.done():
        peer.transport.write(batch)
        written += len(batch)
        await asyncio.sleep(0.002)
        most = max(most, server.buffered())
    for _ in range(50):  # the server goes on reading what the peer's socket still holds
        await asyncio.sleep(0.01)
        most = max(most, server.buffered())
    return most


@pytest.mark.parametrize("kind", ["pings", "acks"])
def test_a_client_that_never_reads_cannot_grow_the_server(kind: str) -> None:
    limits = Limits(frames_per_second=1e6, frame_burst=1e6, bytes_per_second=1e9, byte_burst=1e9,
                    client_buffer=512 * 1024, read_pause=32 * 1024, total_buffer=64 * MIB)

    async def scenario() -> None:
        server = await started(echo_server(limits=limits, keepalive=None))
        bystander = await EventClient.connect(server.url, name="bystander")
        peer = await deaf(server)
        if kind == "pings":
            frame = masked(Opcode.PING, b"p" * 125)
        else:
            frame = masked(Opcode.TEXT, json.dumps({"event": "echo", "data": "x" * 400, "id": 1}).encode())
        try:
            most = await flood_and_watch(server, peer, frame, 40 * MIB)
            assert most <= limits.client_buffer, most
            assert await bystander.request("echo", "answered", timeout=10) == "answered"
            assert not bystander.closed
        finally:
            if peer.transport is not None:
                peer.transport.abort()
            await bystander.aclose()
            await server.aclose()

    run(scenario())


def test_a_ping_flood_is_counted_in_the_rate_limit_and_closed_with_1008() -> None:
    async def scenario() -> None:
        server = await started(echo_server(keepalive=None))
        peer = await deaf(server)
        assert peer.transport is not None
        try:
            ping = masked(Opcode.PING, b"")
            limits = server.limits
            peer.transport.write(ping * int(4 * limits.frame_burst + limits.frames_per_second))
            peer.transport.resume_reading()
            await asyncio.wait_for(peer.lost, 10)
            close = b"\x88" + bytes([2 + len("too many control frames")]) + b"\x03\xf0too many control frames"
            assert close in peer.data
        finally:
            await server.aclose()

    run(scenario())


def test_the_total_buffer_cap_cuts_the_largest_backlogs_first() -> None:
    limits = Limits(client_buffer=2 * MIB, total_buffer=3 * MIB)

    async def scenario() -> None:
        server = await started(echo_server(limits=limits, keepalive=None))
        fast = await EventClient.connect(server.url, name="fast")
        slow = [await deaf(server) for _ in range(3)]
        try:
            blob = "x" * 100_000
            for n in range(150):
                server.broadcast("blob", {"n": n, "blob": blob})
                assert server.buffered() <= limits.total_buffer
                await asyncio.sleep(0)
            await fast.wait_for("blob", timeout=20, where=lambda d: d["n"] == 149)
            assert [d["n"] for d in fast.events("blob")] == list(range(150))
            assert server.slow_clients_dropped >= 2  # two backlogs of 2 MiB cannot fit in 3 MiB
            assert not fast.closed
        finally:
            for peer in slow:
                if peer.transport is not None:
                    peer.transport.abort()
            await fast.aclose()
            await server.aclose()

    run(scenario())


# ----- 3 and 4. limits before parsing, weighted costs, retryAfter ---------------------------------------


def test_a_stream_of_large_frames_is_refused_without_being_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[int] = []
    decode = dispatch_module.decode_emit

    def counting_decode(text: str) -> Any:
        parsed.append(len(text))
        return decode(text)

    monkeypatch.setattr(dispatch_module, "decode_emit", counting_decode)

    async def scenario() -> None:
        server = await started(echo_server())
        bystander = await EventClient.connect(server.url, name="bystander")
        ws = await raw(server)
        big = "x" * (MIB - 100)
        try:
            for id in range(1, 11):
                await ws.send(json.dumps({"event": "echo", "data": big, "id": id}))
            answers = [await answer(ws, lambda a: "ack" in a, timeout=30) for _ in range(10)]
            assert [a["ack"] for a in answers] == list(range(1, 11))  # every id answered, in order
            accepted = [a for a in answers if "error" not in a]
            refused = [a for a in answers if "error" in a]
            # The byte burst (2 MiB) lets a large frame through now and then, not a stream of them.
            assert 1 <= len(accepted) <= 3 and len(refused) >= 7
            assert all(a["error"]["code"] == "rate-limited" and a["error"]["retryAfter"] > 0 for a in refused)
            assert sum(1 for size in parsed if size > MIB // 2) == len(accepted)  # refused: never parsed
            assert await bystander.request("echo", "fine") == "fine"
        finally:
            await ws.close()
            await bystander.aclose()
            await server.aclose()

    run(scenario())


def test_a_weighted_event_takes_its_cost_and_says_when_to_retry() -> None:
    async def scenario() -> None:
        server = echo_server(limits=Limits(frame_burst=120, frames_per_second=10))

        @server.on("login", cost=50)
        def login(client: Client, data: Any) -> str:
            return "welcome"

        with pytest.raises(ValueError):
            server.on("too-dear", cost=121)
        with pytest.raises(ValueError):
            server.on("free", cost=0)
        await server.start()
        pedro = await EventClient.connect(server.url, name="pedro")
        try:
            assert await pedro.request("login") == "welcome"
            assert await pedro.request("login") == "welcome"
            with pytest.raises(AckError) as refused:
                await pedro.request("login")
            assert refused.value.code == "rate-limited"
            assert 1 < refused.value.retry_after < 10  # about 30 frames more at 10/s
            assert await pedro.request("echo", 1) == 1  # the refused login took one frame only
            assert "login" in server.dispatcher.handlers and server.dispatcher.costs["echo"] == 1
        finally:
            await pedro.aclose()
            await server.aclose()

    run(scenario())


def test_request_with_retries_honours_retry_after() -> None:
    async def scenario() -> None:
        server = await started(echo_server(limits=Limits(frame_burst=2, frames_per_second=40)))
        pedro = await EventClient.connect(server.url, name="pedro")
        try:
            without = await asyncio.gather(*(pedro.request("echo", n) for n in range(6)), return_exceptions=True)
            limited = [r for r in without if isinstance(r, AckError)]
            assert limited and all(r.code == "rate-limited" and r.retry_after is not None for r in limited)
            await asyncio.sleep(0.2)
            results = await asyncio.gather(*(pedro.request("echo", n, retries=20) for n in range(6)))
            assert results == list(range(6))
            with pytest.raises(ValueError):
                await pedro.request("echo", 1, retries=-1)
        finally:
            await pedro.aclose()
            await server.aclose()

    run(scenario())


# ----- 5. shutdown under a flood ------------------------------------------------------------------------


def test_aclose_drops_queued_frames_and_cancels_running_handlers() -> None:
    async def scenario() -> None:
        server = echo_server(limits=Limits(frames_per_second=1e6, frame_burst=1e6))
        ran: list[int] = []

        @server.on("slow")
        async def slow(client: Client, data: Any) -> None:
            await asyncio.sleep(0.05)
            ran.append(data)

        await server.start()
        ws = await raw(server)
        frames = 2000
        for n in range(frames):
            await ws.send(json.dumps({"event": "slow", "data": n}))
        while not ran:
            await asyncio.sleep(0.01)
        started_at = time.monotonic()
        await asyncio.wait_for(server.aclose(), 10)
        assert time.monotonic() - started_at < 5
        assert len(ran) < frames // 10, len(ran)
        await ws.close()

    run(scenario())


# ----- 6. numbers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ('{"event":"echo","data":1e400,"id":1}', "bad-json"),
        ('{"event":"echo","data":-1e400}', "bad-json"),
        ('{"event":"echo","data":' + "9" * 65 + "}", "bad-json"),
        ('{"event":"echo","data":' + "9" * 5000 + "}", "bad-json"),
        ('{"event":"echo","data":1,"id":99999999999999999999}', "bad-frame"),
    ],
)
def test_numbers_out_of_range_are_refused(frame: str, code: str) -> None:
    """Numbers JSON cannot carry back (``1e400``) or that cost time to convert are ``bad-json``;
    an id that no client could have sent is ``bad-frame``. A refused frame with a readable id
    gets a failed acknowledgement; long integers that are valid JSON reach the app, which checks
    its own ranges (the chat answers ``invalid-data``)."""

    async def scenario() -> None:
        server = await started(echo_server())
        ws = await raw(server)
        try:
            await ws.send(frame)
            refused = await answer(ws)
            error = refused["error"] if "ack" in refused else refused["data"]
            assert error["code"] == code
            assert ("ack" in refused) == frame.endswith('"id":1}'), refused
            big = [-(2**63), 2**63 - 1, 2**64, 10**30, 1e300]
            await ws.send(json.dumps({"event": "echo", "data": big, "id": 2}))
            assert (await answer(ws))["data"] == big
            assert server.errors == []
        finally:
            await ws.close()
            await server.aclose()

    run(scenario())


# ----- 7. origins and headers ---------------------------------------------------------------------------


def test_the_origin_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABTOOLS_ALLOWED_ORIGINS", "https://notebooks.example, http://lab.example:8888/")

    async def opens(server: EventServer, headers: dict[str, str]) -> bool:
        try:
            ws = await raw(server, additional_headers=headers)
        except InvalidStatus as refused:
            assert refused.response.status_code == 403
            return False
        await ws.close()
        return True

    async def scenario() -> None:
        server = await started(echo_server(allowed_origins=["http://teacher.example:9000"]))
        other = await started(echo_server())
        port = server.port
        try:
            assert await opens(server, {})  # no Origin: a non-browser client
            assert await opens(server, {"Origin": f"http://127.0.0.1:{port}"})
            assert await opens(server, {"Origin": f"http://localhost:{port}"})
            assert await opens(server, {"Origin": "https://notebooks.example"})  # from the env var
            assert await opens(server, {"Origin": "http://lab.example:8888"})
            assert await opens(server, {"Origin": "http://teacher.example:9000"})  # allowed_origins
            # Same origin through a proxy: the Origin's host is the Host or X-Forwarded-Host.
            assert await opens(server, {"Origin": "https://hub.example", "X-Forwarded-Host": "hub.example"})
            assert await opens(server, {"Origin": "https://hub.example", "Host": "hub.example:443"})
            assert not await opens(server, {"Origin": f"http://127.0.0.1:{other.port}"})
            assert not await opens(server, {"Origin": "https://evil.example"})
            assert not await opens(server, {"Origin": "null"})
            assert not await opens(server, {"Origin": "https://evil.example", "X-Forwarded-Host": "hub.example"})
            assert "GET / (upgrade refused: origin)" in server.traffic.routes
        finally:
            await server.aclose()
            await other.aclose()

    run(scenario())


def test_every_http_answer_carries_the_security_headers() -> None:
    server = run(started(echo_server()))
    try:
        for path in ("/", "/events.js", "/nope.js"):
            try:
                response = urllib.request.urlopen(f"{server.url.rstrip('/')}{path}", timeout=10)
            except urllib.error.HTTPError as error:
                response = error
            headers = response.headers
            assert headers["X-Content-Type-Options"] == "nosniff", path
            policy = headers["Content-Security-Policy"]
            assert "default-src 'self'" in policy and "connect-src 'self' ws: wss:" in policy
            assert "frame-ancestors 'self' http://localhost:* http://127.0.0.1:*" in policy
        # Through a proxy, its host may frame the page too; a header that is not a host adds nothing.
        for forwarded, expected in (("hub.example", "https://hub.example"), ("x; script-src *", None)):
            request = urllib.request.Request(server.url, headers={"X-Forwarded-Host": forwarded})
            with urllib.request.urlopen(request, timeout=10) as response:
                policy = response.headers["Content-Security-Policy"]
            assert (expected in policy) if expected else ("script-src *" not in policy), policy
    finally:
        run(server.aclose())


def test_a_page_of_another_port_cannot_open_the_socket(browser) -> None:
    mine = labtools.serve("minichat", name="origin-mine")
    theirs = labtools.serve("bands", name="origin-theirs")
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(mine.page_url())
        page.wait_for_selector('#status[data-status="online"]', timeout=20_000)  # its own socket works
        outcome = page.evaluate(
            """url => new Promise(resolve => {
                const ws = new WebSocket(url);
                ws.onopen = () => resolve("open");
                ws.onerror = () => resolve("refused");
            })""",
            f"ws://127.0.0.1:{theirs.port}/",
        )
        assert outcome == "refused"
        assert "GET / (upgrade refused: origin)" in theirs.stats()["routes"]
    finally:
        context.close()
        mine.stop()
        theirs.stop()


# ----- 8. what an idle connection holds -------------------------------------------------------------------


def _holds_handshake(obj: object) -> bool:
    """Whether ``obj`` or one of its attributes is a handshake's request, response or headers."""
    kinds = (Request, Response, Headers)
    values = [getattr(obj, name, None) for name in getattr(type(obj), "__slots__", ())] + list(vars(obj).values()) \
        if hasattr(obj, "__dict__") else [getattr(obj, name, None) for name in type(obj).__slots__]
    return any(isinstance(value, kinds) for value in [obj, *values])


def test_an_open_connection_keeps_its_path_but_not_its_handshake_and_still_reassembles_fragments() -> None:
    """Memory per idle connection: no task, no queue, no timer and no handshake headers once
    open (the query stays for ``Client.query``); and a message sent in fragments, many messages
    queued at once, and the flow control all still work."""

    async def scenario() -> None:
        server = await started(echo_server(limits=Limits(frames_per_second=1e6, frame_burst=1e6)))
        ws = await connect(f"ws://127.0.0.1:{server.port}/?token=abc", compression=None,
                           additional_headers={"X-Big": "x" * 2000})
        try:
            await ws.send(raw_frame("echo", '"hello"', 1))
            assert (await answer(ws, lambda a: a.get("ack") == 1))["data"] == "hello"
            (client,) = server.clients.values()
            assert client.query == "token=abc"
            connection = client.connection
            assert not _holds_handshake(connection) and not _holds_handshake(connection.protocol)
            assert connection.timer is None and connection.inbox is None and connection.busy is None
            assert connection.fragments is None and client.out is None
            server_tasks = [task for task in asyncio.all_tasks()
                            if "labtools/events/" in getattr(task.get_coro(), "cr_code", run.__code__).co_filename]
            assert [task.get_coro().__qualname__ for task in server_tasks] == ["EventServer.keep_alive"]
            # A message in fragments (text, continuation, continuation) is reassembled.
            await ws.send(['{"event":"echo",', '"data":"in pieces",', '"id":2}'])
            assert (await answer(ws, lambda a: a.get("ack") == 2))["data"] == "in pieces"
            # A burst queues many frames at once: every one answered, in order.
            for id in range(3, 203):
                await ws.send(raw_frame("echo", str(id), id))
            acks = [(await answer(ws, lambda a: "ack" in a))["ack"] for _ in range(200)]
            assert acks == list(range(3, 203))
        finally:
            await ws.close()
            await server.aclose()

    run(scenario())


def test_the_total_buffer_cap_holds_when_many_clients_are_each_a_little_behind() -> None:
    """Six clients that stopped reading, each kept under its own read-pause mark and its own
    cap, together past the server-wide cap: checked from the backlogs a broadcast meets."""
    limits = Limits(read_pause=900 * 1024, client_buffer=MIB, total_buffer=2 * MIB)

    async def scenario() -> None:
        server = await started(echo_server(limits=limits, keepalive=None))
        slow = [await deaf(server) for _ in range(6)]
        try:
            blob = "x" * 20_000
            for n in range(600):
                server.broadcast("blob", {"n": n, "blob": blob})
                assert server.buffered() <= limits.total_buffer + 6 * 21_000
                await asyncio.sleep(0)
            assert server.slow_clients_dropped >= 3
        finally:
            for peer in slow:
                if peer.transport is not None:
                    peer.transport.abort()
            await server.aclose()

    run(scenario())


@pytest.mark.parametrize("value", ["null", "*", "https://a.example; script-src *", "https://a.example\r\nX-Evil: 1",
                                   "https://a.example/path", "javascript:alert(1)"])
def test_allowed_origins_that_are_not_origins_are_refused_before_they_reach_a_header(
        value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``null`` would admit sandboxed pages, ``*`` would become ``frame-ancestors *``, and ``;``
    or a line break would write into (or break) the CSP header of every answer."""
    monkeypatch.setenv("LABTOOLS_ALLOWED_ORIGINS", f"https://ok.example,{value}")
    with pytest.raises(ValueError, match=r"LABTOOLS_ALLOWED_ORIGINS: .* is not an origin"):
        EventServer("origins-test")
    monkeypatch.delenv("LABTOOLS_ALLOWED_ORIGINS")
    with pytest.raises(ValueError, match="allowed_origins"):
        EventServer("origins-test", allowed_origins=[value])
    assert EventServer("origins-test", allowed_origins=["HTTPS://Ok.Example:8443/"]).allowed_origins == {
        "https://ok.example:8443"}
