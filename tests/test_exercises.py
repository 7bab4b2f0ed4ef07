"""Every exercise really checks: its solution passes, a plausible wrong answer is rejected with a
helpful ``AssertionError`` (never a crash), ``...`` is "not attempted yet", and ``lt.solution``
shows what a learner would type."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from typing import Any

import pytest
from lesson11_files import write_learner_files

import labtools as lt
from labtools.events import EventClient
from labtools.exercises import all_exercises, get
from labtools.polling.client import HttpClient

# --- plausible wrong answers -------------------------------------------------------------------


async def newest_oldest(url: str, user: str) -> str:  # the first of the list, not the last
    client = HttpClient(url)
    try:
        return (await client.get_json(f"/messages?user={user}&since=0"))[0]["text"]
    finally:
        await client.aclose()


async def newest_message(url: str, user: str) -> dict:  # the whole message
    client = HttpClient(url)
    try:
        return (await client.get_json(f"/messages?user={user}&since=0"))[-1]
    finally:
        await client.aclose()


def newest_sync(url: str, user: str) -> str:  # not a coroutine function
    return "dos"


def sse_strings(text: str) -> list:  # forgot json.loads
    return [line.removeprefix("data:").strip() for line in text.split("\n") if line.startswith("data:")]


def sse_every_colon(text: str) -> list:  # forgot to skip comments: json.loads(" connected") raises
    messages = []
    for line in text.split("\n"):
        field, _, value = line.partition(":")
        if line and field in ("data", ""):
            messages.append(json.loads(value))
    return messages


def hex_accept() -> str:  # base64 of the hex digest
    key = "x3JJHMbDL1EzLkh9GBhXDw=="
    return base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode())
                            .hexdigest().encode()).decode()


def bytes_accept() -> bytes:  # forgot .decode()
    key = "x3JJHMbDL1EzLkh9GBhXDw=="
    return base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())


def overhead_no_mask(size: int, from_client: bool) -> int:
    return 2 if size <= 125 else 4 if size <= 65535 else 10


def overhead_off_by_one(size: int, from_client: bool) -> int:
    return (2 if size < 125 else 4 if size < 65535 else 10) + (4 if from_client else 0)


def broadcast_to_all(server: Any, client: Any, data: Any) -> None:
    server.broadcast("msg-from-server", {"text": data["text"]})


def handler_without_server(client: Any, data: Any) -> None:
    client.emit("msg-from-server", data)


def frame_size_masked(payload: int) -> int:
    return payload + (6 if payload <= 125 else 8 if payload <= 65_535 else 14)


def frame_size_boundary(payload: int) -> int:
    return payload + (2 if payload < 125 else 4 if payload < 65_535 else 10)


def delta_create_first(bands: list, delta: dict) -> list:
    if delta["op"] == "create":
        return [delta["band"], *bands]
    return get("05.1").solution(bands, delta)


def delta_in_place(bands: list, delta: dict) -> list:
    new = list(bands)
    for band in new:
        if delta["op"] == "vote" and band["id"] == delta["id"]:
            band["votes"] += 1  # changes the old list's dict
    return get("05.1").solution(new, delta) if delta["op"] != "vote" else new


def delta_rename_keyerror(bands: list, delta: dict) -> list:
    if delta["op"] == "rename":
        return [{**b, "name": delta["band"]["name"]} if b["id"] == delta["id"] else b for b in bands]
    return get("05.1").solution(bands, delta)


async def tickets_one_by_one(url: str, n: int) -> list[int]:
    client = await EventClient.connect(url)
    try:
        return [(await client.request("request-ticket"))["number"] for _ in range(n)]
    finally:
        await client.aclose()


async def tickets_socket_each(url: str, n: int) -> list[int]:
    async def one() -> int:
        client = await EventClient.connect(url)
        try:
            return (await client.request("request-ticket"))["number"]
        finally:
            await client.aclose()

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def tickets_dicts(url: str, n: int) -> list[dict]:
    client = await EventClient.connect(url)
    try:
        return list(await asyncio.gather(*(client.request("request-ticket") for _ in range(n))))
    finally:
        await client.aclose()


def tickets_sync(url: str, n: int) -> list[int]:
    return list(range(1, n + 1))


def marker_bool_number(data: Any) -> bool:  # forgets that True is an int
    return (isinstance(data, dict) and isinstance(data.get("id"), str) and 0 < len(data["id"]) <= 64
            and isinstance(data.get("lng"), int | float) and -180 <= data["lng"] <= 180
            and isinstance(data.get("lat"), int | float) and -90 <= data["lat"] <= 90)


def marker_indexing(data: Any) -> bool:  # data["lng"] raises on a missing key, data["id"] on a list
    return (isinstance(data["id"], str) and 0 < len(data["id"]) <= 64
            and -180 <= data["lng"] <= 180 and -90 <= data["lat"] <= 90)


def throttle_every_fifth(moves: list, interval: float) -> list:
    return moves[::5] if moves[-1] in moves[::5] else [*moves[::5], moves[-1]]


def throttle_leading_only(moves: list, interval: float) -> list:  # forgets the final move
    sent: list = []
    for move in moves:
        if not sent or move[0] - sent[-1][0] >= interval:
            sent.append(move)
    return sent


def throttle_last_always(moves: list, interval: float) -> list:  # sends the final move twice
    return [*throttle_leading_only(moves, interval), moves[-1]]


def throttle_ends_only(moves: list, interval: float) -> list:
    return [moves[0], moves[-1]] if len(moves) > 1 else [moves[0]]


#: id -> [(what the learner did, answer, a fragment of the message they must see)]
WRONG: dict[str, list[tuple[str, Any, str]]] = {
    "00.1": [("the oldest message", newest_oldest, "take the last"),
             ("the whole message", newest_message, "message['text']"),
             ("not async", newest_sync, "async def"),
             ("the text itself", "dos", "the function itself")],
    "01.1": [("users × interval", 2000, "divide"), ("interval / users", 0.5, "users / interval"),
             ("a str", "500", "a number")],
    "01.2": [("a number, not the function", 10_800_000_000, "the function daily_bytes"),
             ("hours in a day", lambda users, interval, size: users / interval * size * 24, "86,400 seconds"),
             ("multiplied by the interval", lambda users, interval, size: users * interval * size * 86_400,
              "divide by the interval")],
    "01.3": [("the whole interval", 4.0, "between 0 and a whole interval"), ("milliseconds", 2000, "seconds")],
    "02.1": [("short polling", 60, "short polling"), ("no messages, no requests", 0, "asks again")],
    "02.2": [("nobody writes, nothing open", 0, "stays open"), ("one connection in all", 1, "5,000"),
             ("a bool", True, "whole number")],
    "02.3": [("the parsed list, not the function", [{"text": "Hola"}], "the function parse_sse"),
             ("forgot json.loads", sse_strings, "json.loads"),
             ("parses comments too", sse_every_colon, "raised")],
    "03.1": [("the lesson's sample accept key", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "SHA-1 *digest*"),
             ("base64 of the hex digest", hex_accept(), "not the hex string"),
             ("bytes, not str", bytes_accept(), ".decode()")],
    "03.2": [("the 7-bit length field", 126, "126 is not a length"), ("little-endian", 11265, "big-endian"),
             ("a str", "300", "an int")],
    "03.3": [("no mask key for clients", overhead_no_mask, "by a client"),
             ("off by one at 125", overhead_off_by_one, "125-byte payload"),
             ("the function called", 2, "the function overhead")],
    "04.1": [("the dict, not its text", {"event": "msg-to-server", "data": {"text": "hola"}, "id": 7}, "json.dumps"),
             ("str() of a dict", str({"event": "msg-to-server", "data": {"text": "hola"}, "id": 7}), "double quotes"),
             ("Pedro's name in data",
              json.dumps({"event": "msg-to-server", "data": {"text": "hola", "name": "Pedro"}, "id": 7}),
              "only the text"),
             ("the id as a str", json.dumps({"event": "msg-to-server", "data": {"text": "hola"}, "id": "7"}),
              "integer id")],
    "04.2": [("broadcast to everyone", broadcast_to_all, "exclude="),
             ("handler(client, data)", handler_without_server, "the handler failed")],
    "04.3": [("masked like a client's", frame_size_masked, "takes"),
             ("off by one at 125", frame_size_boundary, "125 bytes")],
    "05.1": [("create inserts first", delta_create_first, "at the *end*"),
             ("votes in place", delta_in_place, "leave the old one"),
             ("rename reads delta['band']", delta_rename_keyerror, "raised KeyError")],
    "05.2": [("only gaps, not stale deltas", lambda last, delta: delta["v"] > last + 1, "stale"),
             ("compares with last, not last + 1", lambda last, delta: delta["v"] != last, "v == last + 1")],
    "06.1": [("all three", {"request-ticket", "next-desktop-ticket", "assigned-tickets"}, "broadcasts"),
             ("a list", ["request-ticket", "next-desktop-ticket"], "a set"),
             ("forgot the desk's request", {"request-ticket"}, "next-desktop-ticket")],
    "06.2": [("awaited one after another", tickets_one_by_one, "in flight at once"),
             ("one socket per ticket", tickets_socket_each, "opened 10 sockets"),
             ("the ticket dicts", tickets_dicts, "ticket['number']"),
             ("not async", tickets_sync, "async def")],
    "07.1": [("True counted as a number", marker_bool_number, "booleans are not numbers"),
             ("indexes without checking", marker_indexing, "never raise")],
    "07.2": [("every fifth move", throttle_every_fifth, "at most one move per"),
             ("drops the final move", throttle_leading_only, "must always go out"),
             ("final move sent twice", throttle_last_always, "at most once"),
             ("only the ends", throttle_ends_only, "moves sent")],
    "08.1": [("one row per send", 3, "one row per (sender, clientId)"), ("a bool", True, "number of rows")],
    "08.2": [("the next id", {"with": "u-pedro", "after": 42}, "the last message Ana saw"),
             ("Pedro's name", {"with": "Pedro", "after": 41}, "uid"),
             ("extra keys", {"with": "u-pedro", "after": 41, "from": "u-ana"}, "only 'with' and 'after'")],
    "08.3": [("only on the first connection", lambda before, after: before == 0 and after > 0, "came or went"),
             ("on every change", lambda before, after: before != after, "nobody needs to know"),
             ("ints for bools", lambda before, after: int((before == 0) != (after == 0)), "not 1")],
    "09.1": [("each message once", 0.1, "delivers it to 100 people"),
             ("one message per second", 1000, "once every 100 s"), ("µs read as ms", 10_000, "millionths"),
             ("a str", "10", "a number")],
    "09.2": [("KiB taken as 1,000 bytes", 14, "1,024 bytes"), ("in TB", 0.014336, "in GB")],
    "09.3": [("forgot the fan-out", lambda cores, cpu_us, m, fanout: cores * 1e6 / (cpu_us * m), "fanout"),
             ("µs per second taken as 1", lambda cores, cpu_us, m, fanout: cores / (cpu_us * m * fanout), "10⁶"),
             ("the number, not the function", 100_000, "max_users")],
    "10.1": [("no cap", lambda attempt, base, cap: (0.0, base * 2**attempt), "never more than cap"),
             ("one doubling too many", lambda attempt, base, cap: (0.0, min(cap, base * 2 ** (attempt + 1))),
              "base * 2**attempt"),
             ("equal jitter", lambda attempt, base, cap: (min(cap, base * 2**attempt) / 2, min(cap, base * 2**attempt)),
              "draws from 0")],
    "10.2": [("everything but a normal closure", lambda code: code != 1000, "should be False"),
             ("only a lost network", lambda code: code == 1006, "should_reconnect(1001) should be True"),
             ("app codes mean come back", lambda code: code in (1001, 1006, 1011, 1012, 1013) or code >= 4000,
              "the app's own codes")],
    "10.3": [("no jitter", 1000, "without jitter"), ("half the window", 500, "per second"),
             ("per second", 500.0, "per second"), ("a str", "50", "a number")],
    "11.1": [("reads only", lambda nodes, rate, shards: nodes * rate / shards, "one short per message"),
             ("one read in all", lambda nodes, rate, shards: 2 * rate / shards, "one read per node"),
             ("not divided by the shards", lambda nodes, rate, shards: (nodes + 1) * rate, "its own rooms"),
             ("multiplied by the shards", lambda nodes, rate, shards: (nodes + 1) * rate * shards,
              "do not copy them")],
    "11.2": [("everyone", lambda connections, killed: set(connections), "keep their sockets"),
             ("kill(i) read as node i", lambda connections, killed: {c for c, n in connections.items()
                                                                     if n == f"node{killed}"}, "counts nodes from 0"),
             ("a name, not a set", lambda connections, killed: f"node{killed + 1}", "a set of client names")],
    "11.3": [("one node three times", ["http://127.0.0.1:9/"] * 3, "names one node twice"),
             ("two nodes", ["http://127.0.0.1:9/", "http://127.0.0.1:10/"], "asks for 3"),
             ("one URL, not a list", "http://127.0.0.1:9/", "list of its nodes' URLs")],
}

@pytest.fixture(autouse=True)
def lesson_11_2_folder(request: pytest.FixtureRequest, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """11.3's solution deploys ``_deploy/my_app.py`` on three nodes: the test runs in a folder holding
    the files lesson 11·2 writes, as the notebook does beside itself, and stops the deployment."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is None or callspec.params.get("id") != "11.3":
        yield
        return
    write_learner_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    yield
    service = lt.runtime.services().get("lesson11-my-app-exercise")
    if service is not None:
        lt.run(lt.runtime.unregister_and_close("lesson11-my-app-exercise", service))


IDS = [exercise.id for exercise in all_exercises()]
CASES = [pytest.param(id, answer, fragment, id=f"{id}-{what}")
         for id, wrongs in WRONG.items() for what, answer, fragment in wrongs]


def test_every_exercise_has_wrong_answers() -> None:
    assert len(IDS) == 31
    assert set(WRONG) == set(IDS), f"give each exercise plausible wrong answers: {sorted(set(IDS) ^ set(WRONG))}"
    assert all(WRONG[id] for id in IDS)


@pytest.mark.parametrize("id", IDS)
def test_solution_passes(id: str, capsys: pytest.CaptureFixture[str]) -> None:
    lt.check(id, get(id).answer())
    assert f"Exercise {id}: ✓ correct." in capsys.readouterr().out


@pytest.mark.parametrize(("id", "answer", "fragment"), CASES)
def test_wrong_answer_is_rejected_with_a_message(id: str, answer: Any, fragment: str) -> None:
    with pytest.raises(AssertionError) as info:
        lt.check(id, answer)
    assert fragment in str(info.value), f"the message should say {fragment!r}: {info.value}"


@pytest.mark.parametrize("id", IDS)
def test_anything_else_is_rejected_not_crashed_on(id: str) -> None:
    with pytest.raises(AssertionError) as info:
        lt.check(id, object())
    assert str(info.value)


@pytest.mark.parametrize("id", IDS)
def test_ellipsis_is_not_attempted_yet(id: str, capsys: pytest.CaptureFixture[str]) -> None:
    lt.check(id, ...)
    assert f"Exercise {id}: not attempted yet" in capsys.readouterr().out


@pytest.mark.parametrize("id", IDS)
def test_solution_is_what_a_learner_types(id: str, capsys: pytest.CaptureFixture[str]) -> None:
    lt.solution(id)
    shown = capsys.readouterr().out
    assert "@exercise" not in shown and "_solution" not in shown and "return " + "answer" not in shown
    assert shown.rstrip().splitlines()[-1].startswith("answer = "), shown
    namespace: dict[str, Any] = {}
    exec(compile(shown, f"<solution {id}>", "exec"), namespace)  # as a notebook cell, no __future__
    lt.check(id, namespace["answer"])
    assert "✓ correct" in capsys.readouterr().out
