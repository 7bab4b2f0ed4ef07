"""``lt.serve`` runs any server the same way: a lesson app by name, a learner's build function,
or a learner's own ``EventServer``; ``lt.show`` prints the code that runs."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import labtools as lt
from labtools.events import Client, EventClient, EventServer


def echo_app(greeting: str = "hello") -> EventServer:
    server = EventServer("learner-echo")

    @server.on("greet")
    def greet(client: Client, data: Any) -> str:
        return f"{greeting}, {data}"

    return server


async def ask(url: str, name: str) -> str:
    client = await EventClient.connect(url)
    try:
        return await client.request("greet", name)
    finally:
        await client.aclose()


def test_a_learners_build_function_is_served_with_its_options() -> None:
    handle = lt.serve(echo_app, greeting="hola")
    try:
        assert handle.name == "echo_app"
        assert lt.run(ask(handle.url, "Ana")) == "hola, Ana"
    finally:
        handle.stop()


def test_a_learners_server_object_is_served_and_replaced_by_name() -> None:
    first = lt.serve(echo_app())
    second = lt.serve(echo_app(greeting="hi"))  # same name ("learner-echo"): replaces the first
    try:
        assert first.name == second.name == "learner-echo"
        assert lt.run(ask(second.url, "Pedro")) == "hi, Pedro"
        assert "learner-echo" in lt.runtime.services() and lt.runtime.services()["learner-echo"] is second.server
        with pytest.raises(OSError):
            lt.run(ask(first.url, "Pedro"))
    finally:
        second.stop()


def test_options_for_a_server_object_or_garbage_are_refused_clearly() -> None:
    with pytest.raises(TypeError, match="options go to"):
        lt.serve(echo_app(), greeting="hi")
    with pytest.raises(TypeError, match="not a server"):
        lt.serve(lambda: 42)
    with pytest.raises(ValueError, match="unknown app"):
        lt.serve("carrier-pigeon")


def test_app_state_is_read_on_the_loop_thread() -> None:
    """``read(fn)`` calls ``fn`` on the labtools loop's thread (where the handlers mutate the
    state), never on the caller's, and hands its result back."""

    async def loop_thread() -> int:
        return threading.get_ident()

    handle = lt.serve("bands", name="test-serving-bands")
    try:
        seen: list[tuple[int, bool]] = []

        def names(board: Any) -> list[str]:
            seen.append((threading.get_ident(), lt.runtime.in_loop_thread()))
            return [band.name for band in board.bands.values()]

        assert handle.read(names)[0] == "Metallica"
        loop_ident = lt.run(loop_thread())
        assert loop_ident != threading.get_ident()  # the loop runs in a thread of its own
        assert seen == [(loop_ident, True)], f"fn ran on thread {seen}, the loop's is {loop_ident}"
    finally:
        handle.stop()


def test_show_prints_the_source_with_its_file_and_line(capsys: pytest.CaptureFixture[str]) -> None:
    from labtools.apps import minichat

    lt.show(minichat.build)
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("# labtools/apps/minichat.py:") and first.split(":")[1].isdigit()
    assert "def build(" in out and '@server.on("msg-to-server")' in out


def test_a_plain_websockets_server_runs_through_the_runtime(browser) -> None:
    """Lesson 04's smallest chat: websockets' own ``serve``, started by a learner's coroutine."""
    from pathlib import Path

    from websockets.asyncio.server import broadcast, serve

    page = (Path(__file__).resolve().parents[1] / "notebooks" / "smallest_chat.html").read_text()
    clients: set = set()

    async def chat(websocket) -> None:
        clients.add(websocket)
        try:
            async for message in websocket:
                broadcast(clients, message)
        finally:
            clients.discard(websocket)

    def page_or_socket(connection, request):
        if request.headers.get("Upgrade", "").lower() != "websocket":
            response = connection.respond(200, page)
            response.headers["Content-Type"] = "text/html; charset=utf-8"
            return response
        return None

    async def start(host: str, port: int):
        return await serve(chat, host, port, process_request=page_or_socket)

    handle = lt.serve(start)
    again = lt.serve(start)  # re-running the cell replaces it: no "address already in use"
    context = browser.new_context()
    try:
        assert handle.name == again.name == "start"
        with pytest.raises(TypeError, match="only meters its own servers"):
            again.stats()
        pedro, ana = context.new_page(), context.new_page()
        for page_ in (pedro, ana):
            page_.goto(again.page_url())
            page_.wait_for_function("socket.readyState === WebSocket.OPEN", timeout=10_000)
        pedro.fill("#text", "hola Ana")
        pedro.press("#text", "Enter")
        ana.locator("#messages li", has_text="hola Ana").wait_for(timeout=5_000)
    finally:
        context.close()
        again.stop()


def test_a_learners_page_folder_and_lifecycle_hooks(tmp_path) -> None:
    """A learner's own page folder is served beside the shared modules; ``starting`` runs before
    the server listens and ``closed`` after its connections are closed (open and close a database)."""
    import urllib.request

    (tmp_path / "index.html").write_text("<!doctype html><title>mine</title>")
    calls: list[str] = []
    server = EventServer("learner-page", page=tmp_path)

    @server.starting
    async def open_things() -> None:
        calls.append("starting")

    @server.closed
    async def close_things() -> None:
        calls.append("closed")

    handle = lt.serve(server)
    try:
        assert calls == ["starting"]
        with urllib.request.urlopen(handle.url, timeout=5) as page:
            assert b"<title>mine</title>" in page.read()
        with urllib.request.urlopen(handle.url + "events.js", timeout=5) as shared:
            assert b"export class EventSocket" in shared.read()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(handle.url + "..%2Fsecret.html", timeout=5)
    finally:
        handle.stop()
    assert calls == ["starting", "closed"]
