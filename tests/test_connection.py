"""One socket as the event server drives it (issue 18): frames of one socket in order, other
sockets never held by it, the frames of one handler run in one write, and a bounded line of
frames waiting while a handler suspends."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import connect

import labtools
from labtools.events import Client, EventClient, EventServer
from labtools.events.connection import MAX_QUEUE
from labtools.events.limits import Limits

run = labtools.run


class CountingWrites:
    """A transport stand-in that counts ``write`` calls and passes everything on."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def gated_server(**options: Any) -> tuple[EventServer, asyncio.Event]:
    """``wait`` suspends until the test opens the gate; ``echo`` answers at once; ``two``
    pushes two events to the sender and then acknowledges (sync), ``two-later`` the same after
    suspending once."""
    server = EventServer("connection-test", **options)
    gate = asyncio.Event()

    @server.on("wait")
    async def wait(client: Client, data: Any) -> str:
        await gate.wait()
        return "opened"

    @server.on("echo")
    def echo(client: Client, data: Any) -> Any:
        return data

    @server.on("two")
    def two(client: Client, data: Any) -> str:
        client.emit("first", data)
        client.emit("second", data)
        return "acked"

    @server.on("two-later")
    async def two_later(client: Client, data: Any) -> str:
        await asyncio.sleep(0.01)
        client.emit("first", data)
        client.emit("second", data)
        return "acked"

    return server, gate


def test_a_suspended_handler_holds_its_own_socket_in_order_and_nobody_else() -> None:
    async def scenario() -> None:
        server, gate = gated_server()
        await server.start()
        ana = await EventClient.connect(server.url)
        pedro = await EventClient.connect(server.url)
        try:
            waiting = asyncio.ensure_future(ana.request("wait", None, timeout=10))
            after = asyncio.ensure_future(ana.request("echo", "after", timeout=10))
            # Pedro's frame is answered while Ana's handler is suspended (her next frame waits).
            assert await pedro.request("echo", "pedro", timeout=10) == "pedro"
            assert not waiting.done() and not after.done()
            gate.set()
            assert await waiting == "opened" and await after == "after"
            assert not server.errors
        finally:
            await ana.aclose()
            await pedro.aclose()
            await server.aclose()

    run(scenario())


def test_the_frames_of_one_handler_run_leave_in_one_write() -> None:
    """The ack and the pushes a handler makes to its sender: one system call, sync or after a
    suspension; a broadcast to others is written to each directly."""

    async def scenario() -> None:
        server, _gate = gated_server()
        await server.start()
        ws = await connect(f"ws://127.0.0.1:{server.port}/", compression=None)
        try:
            await asyncio.sleep(0.05)
            (client,) = server.clients.values()
            counting = CountingWrites(client.transport)
            client.transport = counting  # type: ignore[assignment]
            for id, event in enumerate(("two", "two-later"), start=1):
                counting.writes.clear()
                await ws.send(json.dumps({"event": event, "data": id, "id": id}))
                frames = [json.loads(await ws.recv()) for _ in range(3)]
                assert frames == [{"event": "first", "data": id}, {"event": "second", "data": id},
                                  {"ack": id, "data": "acked"}]
                assert len(counting.writes) == 1, event
        finally:
            await ws.close()
            await server.aclose()

    run(scenario())


def test_frames_waiting_for_a_suspended_handler_are_bounded_then_all_answered_in_order() -> None:
    """While Ana's handler waits, her next frames queue up to ``MAX_QUEUE``; then the server
    stops reading her socket (TCP holds the rest); once the handler finishes, every frame is
    answered, in order."""

    async def scenario() -> None:
        server, gate = gated_server(limits=Limits(frames_per_second=1e6, frame_burst=1e6))
        await server.start()
        ws = await connect(f"ws://127.0.0.1:{server.port}/", compression=None)
        try:
            await ws.send(json.dumps({"event": "wait", "id": 0}))
            count = 4 * MAX_QUEUE
            for id in range(1, count + 1):
                await ws.send(json.dumps({"event": "echo", "data": id, "id": id}))
                await asyncio.sleep(0.002)  # separate reads, as a real client's frames arrive
            await asyncio.sleep(0.1)
            (client,) = server.clients.values()
            connection = client.connection
            assert connection.inbox is not None and MAX_QUEUE <= len(connection.inbox) < count
            assert not connection.transport.is_reading()  # type: ignore[union-attr]
            gate.set()
            acks = [json.loads(await ws.recv())["ack"] for _ in range(count + 1)]
            assert acks == list(range(count + 1))
            assert connection.inbox is None and connection.transport.is_reading()  # type: ignore[union-attr]
        finally:
            await ws.close()
            await server.aclose()

    run(scenario())


def test_frames_for_one_socket_in_one_loop_turn_leave_in_one_write_and_a_broadcast_at_once() -> None:
    """Frames written to a socket outside its own handler (the chat's push of A's message to B)
    wait for the end of the loop turn and leave in one write, in order; a broadcast is written
    to each socket at once, one write per frame."""

    async def scenario() -> None:
        server = EventServer("turn-test")

        @server.on("poke")
        def poke(client: Client, data: Any) -> None:
            for other in server.clients.values():
                if other is not client:
                    other.emit("first", data)
                    other.emit("second", data)

        @server.on("shout")
        def shout(client: Client, data: Any) -> None:
            server.broadcast("heard", data, exclude=client)
            server.broadcast("heard again", data, exclude=client)

        await server.start()
        ana = await EventClient.connect(server.url)
        ws = await connect(f"ws://127.0.0.1:{server.port}/", compression=None)
        try:
            await asyncio.sleep(0.05)
            listener = list(server.clients.values())[1]  # the raw socket, connected after Ana
            counting = CountingWrites(listener.transport)
            listener.transport = counting  # type: ignore[assignment]
            await ana.request("poke", 1, timeout=10)
            assert [json.loads(await ws.recv()) for _ in range(2)] == [{"event": "first", "data": 1},
                                                                      {"event": "second", "data": 1}]
            assert len(counting.writes) == 1
            counting.writes.clear()
            await ana.request("shout", 2, timeout=10)
            assert [json.loads(await ws.recv())["event"] for _ in range(2)] == ["heard", "heard again"]
            assert len(counting.writes) == 2
            assert not server.errors
        finally:
            await ana.aclose()
            await ws.close()
            await server.aclose()

    run(scenario())


def test_handlers_that_resume_in_one_turn_write_each_socket_once() -> None:
    """The chat's batch: two handlers wait for one future, then each pushes to the other and is
    acknowledged. Whichever resumes first, each socket gets its acknowledgement and the other's
    push in one write (``TurnWrites.release``)."""

    async def scenario() -> None:
        server = EventServer("resume-turn-test")
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        @server.on("say")
        async def say(client: Client, data: Any) -> str:
            await stored
            for other in server.clients.values():
                if other is not client:
                    other.emit("heard", data)
            return "stored"

        await server.start()
        sockets = [await connect(f"ws://127.0.0.1:{server.port}/", compression=None) for _ in range(2)]
        try:
            await asyncio.sleep(0.05)
            countings = []
            for client in server.clients.values():
                countings.append(CountingWrites(client.transport))
                client.transport = countings[-1]  # type: ignore[assignment]
            for id, ws in enumerate(sockets, start=1):
                await ws.send(json.dumps({"event": "say", "data": id, "id": id}))
            while len(server.dispatcher.running) < 2:
                await asyncio.sleep(0.01)
            stored.set_result(None)
            for id, ws in enumerate(sockets, start=1):
                frames = [json.loads(await ws.recv()) for _ in range(2)]
                assert sorted(map(json.dumps, frames)) == sorted(
                    map(json.dumps, [{"ack": id, "data": "stored"}, {"event": "heard", "data": 3 - id}]))
            assert [len(counting.writes) for counting in countings] == [1, 1]
            assert not server.errors
        finally:
            for ws in sockets:
                await ws.close()
            await server.aclose()

    run(scenario())


def test_a_frame_sent_with_connection_send_goes_after_the_frames_held_for_that_socket() -> None:
    """``Connection.send`` (lesson 10's naive broadcast) writes at once: what the turn held for
    that socket leaves first."""

    async def scenario() -> None:
        server = EventServer("send-order-test")

        @server.on("poke")
        async def poke(client: Client, data: Any) -> None:
            for other in list(server.clients.values()):
                if other is not client:
                    other.emit("held", data)
                    await other.connection.send('{"event":"direct","data":null}')

        await server.start()
        ana = await EventClient.connect(server.url)
        ws = await connect(f"ws://127.0.0.1:{server.port}/", compression=None)
        try:
            await asyncio.sleep(0.05)
            await ana.request("poke", 1, timeout=10)
            assert [json.loads(await ws.recv())["event"] for _ in range(2)] == ["held", "direct"]
            assert not server.errors
        finally:
            await ana.aclose()
            await ws.close()
            await server.aclose()

    run(scenario())
