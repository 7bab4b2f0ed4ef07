"""``lt.serve`` runs any server the same way: a lesson app by name, a learner's build function,
or a learner's own ``EventServer``; ``lt.show`` prints the code that runs."""

from __future__ import annotations

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
    handle = lt.serve("bands", name="test-serving-bands")
    try:
        names = handle.read(lambda board: [band.name for band in board.bands.values()])
        assert names[0] == "Metallica"
    finally:
        handle.stop()


def test_show_prints_the_source_with_its_file_and_line(capsys: pytest.CaptureFixture[str]) -> None:
    from labtools.apps import minichat

    lt.show(minichat.build)
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("# labtools/apps/minichat.py:") and first.split(":")[1].isdigit()
    assert "def build()" in out and '@server.on("msg-to-server")' in out
