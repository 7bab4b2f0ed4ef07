"""Lesson 04: a frame's size (04·1, the smallest chat); a frame by hand and broadcast to all but
the sender (04·2, the event layer)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from .. import runtime
from ..events import AckError, Client, EventClient, EventServer
from .registry import call, exercise, not_a_function


def check_emit_frame(answer: Any) -> None:
    if isinstance(answer, dict):
        raise AssertionError("answer should be the frame's *text*, a str: json.dumps(...) the dict")
    assert isinstance(answer, str), f"answer should be the frame's text: a str of JSON, not {answer!r}"
    try:
        frame = json.loads(answer)
    except ValueError:
        raise AssertionError(
            "that is not JSON (JSON wants double quotes; str(a_dict) is not JSON): a frame is one JSON object"
        ) from None
    assert isinstance(frame, dict), 'a frame is a JSON object: {"event": ..., "data": ..., "id": ...}'
    assert frame.get("event") == "msg-to-server", "the event Pedro emits is 'msg-to-server'"
    data = frame.get("data")
    if isinstance(data, dict) and "name" in data:
        raise AssertionError(
            'the data carries only the text, {"text": "hola"}, as your page sends it: no name '
            "(the server knows which socket sent the frame)"
        )
    assert data == {"text": "hola"}, f'the data is the object {{"text": "hola"}}, not {data!r}'
    assert frame.get("id") == 7 and type(frame["id"]) is int, (
        f"asking for an acknowledgement means an integer id: 7, not {frame.get('id')!r}"
    )
    extra = sorted(set(frame) - {"event", "data", "id"})
    assert not extra, f"only event, data and id; not {extra}"


@exercise("04.1", check_emit_frame, value=True, imports="import json")
def emit_frame() -> str:
    # The page's seventh request: "msg-to-server" with only the text, and id 7 for its acknowledgement.
    return json.dumps({"event": "msg-to-server", "data": {"text": "hola"}, "id": 7})


Handler = Callable[[EventServer, Client, Any], Any]


async def _others_hear(handler: Handler) -> tuple[list, list, list]:
    server = EventServer("exercise-04.2")

    @server.on("msg-to-server")
    def on_message(client: Client, data: Any) -> Any:
        return handler(server, client, data)

    await server.start()
    people: list[EventClient] = []
    try:
        for name in ("pedro", "ana", "luis"):
            people.append(await EventClient.connect(server.url, name=name))
        pedro, ana, luis = people
        try:
            await pedro.request("msg-to-server", {"text": "hola"}, timeout=2)
        except AckError as error:
            raise AssertionError(f"the handler failed ({error}): {server.errors[-1:]}") from None
        for listener in (ana, luis):
            try:
                await listener.wait_for("msg-from-server", timeout=2)
            except TimeoutError:
                break
        await asyncio.sleep(0.2)  # time for a frame to Pedro to arrive, if one was sent
        return pedro.events("msg-from-server"), ana.events("msg-from-server"), luis.events("msg-from-server")
    finally:
        for person in people:
            await person.aclose()
        await server.aclose()


def check_all_but_sender(answer: Any) -> None:
    assert callable(answer), not_a_function(answer, "handler(server, client, data)")
    pedro, ana, luis = runtime.run(_others_hear(answer), timeout=15)
    assert pedro == [], f"Pedro sent it: he should not receive it back (got {pedro}); see exclude="
    assert ana == [{"text": "hola"}] and luis == [{"text": "hola"}], (
        f'Ana and Luis should each receive msg-from-server {{"text": "hola"}} once; got {ana} and {luis}'
    )


@exercise("04.2", check_all_but_sender)
def handler(server, client, data):
    server.broadcast("msg-from-server", {"text": data["text"]}, exclude=client)


def _frame_size(payload: int) -> int:
    return payload + (2 if payload <= 125 else 4 if payload <= 65_535 else 10)


def check_frame_size(answer: Any) -> None:
    assert callable(answer), not_a_function(answer, "frame_size(payload_bytes)")
    for payload in (0, 5, 125, 126, 1_000, 65_535, 65_536, 1_048_576):
        got = call(answer, payload)
        expected = _frame_size(payload)
        assert got == expected, f"a server frame carrying {payload:,} bytes takes {expected:,} bytes, not {got!r}"


@exercise("04.3", check_frame_size)
def frame_size(payload: int) -> int:
    # A server frame is unmasked: 2 header bytes, plus 2 (length up to 65,535) or 8 more.
    if payload <= 125:
        return payload + 2
    if payload <= 65_535:
        return payload + 4
    return payload + 10
