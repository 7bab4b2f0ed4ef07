"""The event layer's parts without sockets: dispatch, rooms, changes (issue 17: one owner each,
and dispatch unit-tested on its own)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

import labtools
from labtools.events import Client, EventError, require
from labtools.events.changes import Changes
from labtools.events.dispatch import Dispatcher
from labtools.events.limits import TokenBucket
from labtools.events.rooms import Rooms
from labtools.measure.metrics import Traffic


@dataclass(eq=False)
class FakeClient:
    """What dispatch asks of a client: its buckets and its name."""

    name: str = "fake"
    frames: TokenBucket = field(default_factory=lambda: TokenBucket(10, 0.001))
    bytes: TokenBucket = field(default_factory=lambda: TokenBucket(10_000, 0.001))

    admit = Client.admit  # the real rate limit before parsing, on these buckets
    corks: int = 0

    def cork(self) -> bool:
        self.corks += 1
        return False

    def flush(self) -> None:
        pass


def dispatcher() -> tuple[Dispatcher, list[tuple[str, dict]]]:
    sent: list[tuple[str, dict]] = []

    def send(targets: Any, event: str, text: str) -> int:
        sent.append((event, json.loads(text)))
        return 1

    return Dispatcher(Traffic(), send, []), sent


def run(coroutine: Any) -> Any:
    """On the labtools loop, as every test does (a browser test may hold a loop in this thread)."""
    return labtools.run(coroutine)


def handle(dispatch: Dispatcher, client: Any, text: str) -> asyncio.Task | None:
    """Dispatch one frame on the labtools loop and wait for its handler; the Task it needed, if any."""

    async def go() -> asyncio.Task | None:
        task = dispatch.dispatch(client, text)
        if task is not None:
            await task
        return task

    return run(go())


def test_a_handler_runs_and_its_result_is_the_acknowledgement() -> None:
    dispatch, sent = dispatcher()
    dispatch.register("double", lambda client, data: data * 2)
    handle(dispatch, FakeClient(), '{"event": "double", "data": 21, "id": 7}')
    assert sent == [("ack", {"ack": 7, "data": 42})]
    assert dispatch.traffic.as_dict()["routes"]["recv double"]["requests"] == 1


def test_an_async_handler_gets_a_task_only_if_it_suspends_and_is_forgotten_once_done() -> None:
    dispatch, sent = dispatcher()

    async def later(client: Any, data: Any) -> str:
        await asyncio.sleep(0)
        return "done"

    async def at_once(client: Any, data: Any) -> str:
        await asyncio.sleep(0) if data else None  # awaits nothing that is not ready
        return "now"

    dispatch.register("later", later)
    dispatch.register("at-once", at_once)
    assert handle(dispatch, FakeClient(), '{"event": "later", "id": 1}') is not None
    assert handle(dispatch, FakeClient(), '{"event": "at-once", "data": false, "id": 2}') is None
    assert sent == [("ack", {"ack": 1, "data": "done"}), ("ack", {"ack": 2, "data": "now"})]
    assert not dispatch.running


def test_a_suspended_handler_sees_its_awaits_outcomes_and_cancellation_as_in_a_task() -> None:
    """``inline.finish`` goes on with a coroutine as a Task would: results, exceptions, and a
    cancel that reaches what the handler awaits."""
    from labtools.events.inline import finish, step

    async def scenario() -> list[Any]:
        loop = asyncio.get_running_loop()
        seen: list[Any] = []
        failing = loop.create_future()

        async def catches() -> str:
            try:
                await failing
            except KeyError as exc:
                seen.append(exc.args[0])
            await asyncio.sleep(0)  # a bare yield too
            return "caught"

        done, awaited = step(coroutine := catches())
        assert not done and awaited is failing
        task = loop.create_task(finish(coroutine, awaited))
        failing.set_exception(KeyError("boom"))
        seen.append(await task)

        async def waits_forever() -> None:
            try:
                await loop.create_future()
            except asyncio.CancelledError:
                seen.append("cancelled inside")
                raise

        done, awaited = step(coroutine := waits_forever())
        task = loop.create_task(finish(coroutine, awaited))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return seen

    assert run(scenario()) == ["boom", "caught", "cancelled inside"]


def test_two_handlers_stepped_inline_may_await_one_future() -> None:
    """Two frames read in one loop turn whose handlers await one future: the second is stepped
    before the first one's Task starts. A Task clears the future's "someone waits" flag at once;
    ``step`` must too, or the second ``await`` fails with "await wasn't used with future"."""
    dispatch, sent = dispatcher()

    async def scenario() -> None:
        shared = asyncio.get_running_loop().create_future()

        async def waits(client: Any, data: Any) -> Any:
            return await shared

        dispatch.register("wait", waits)
        tasks = [dispatch.dispatch(FakeClient(), f'{{"event": "wait", "id": {id}}}') for id in (1, 2)]
        shared.set_result("stored")
        await asyncio.gather(*tasks)

    run(scenario())
    assert sent == [("ack", {"ack": 1, "data": "stored"}), ("ack", {"ack": 2, "data": "stored"})]
    assert not dispatch.errors


@pytest.mark.parametrize(
    ("text", "code", "route"),
    [
        ("not json", "bad-json", "recv (invalid)"),
        ('{"event": "nope", "id": 3}', "unknown-event", "recv (unknown)"),
        ('{"event": "strict", "data": "x", "id": 3}', "invalid-data", "recv strict"),
    ],
)
def test_refusals_reach_the_sender_only_and_are_counted(text: str, code: str, route: str) -> None:
    dispatch, sent = dispatcher()

    def strict(client: Any, data: Any) -> None:
        require(isinstance(data, int), "an integer")

    dispatch.register("strict", strict)
    handle(dispatch, FakeClient(), text)
    event, frame = sent[0]
    assert len(sent) == 1 and event == "error"
    assert (frame.get("error") or frame["data"])["code"] == code
    assert dispatch.traffic.as_dict()["routes"][route]["requests"] == 1


def test_the_rate_limit_is_taken_before_parsing_and_weighted_events_take_their_cost() -> None:
    dispatch, sent = dispatcher()
    dispatch.register("cheap", lambda client, data: "ok")
    dispatch.register("login", lambda client, data: "ok", cost=8)
    client = FakeClient()
    handle(dispatch, client, '{"event": "login", "id": 1}')  # 8 of 10 frames
    handle(dispatch, client, '{"event": "login", "id": 2}')  # refused: 2 left
    handle(dispatch, client, '{"event": "cheap", "id": 3}')  # 1 frame: fine
    codes = [frame.get("error", {}).get("code") or frame.get("data") for _event, frame in sent]
    assert codes == ["ok", "rate-limited", "ok"]
    for _ in range(3):
        handle(dispatch, client, "garbage that is never parsed")
    assert dispatch.traffic.as_dict()["routes"]["recv (rate-limited)"]["requests"] >= 1


def test_a_failing_handler_answers_internal_and_is_noted() -> None:
    dispatch, sent = dispatcher()

    def broken(client: Any, data: Any) -> None:
        raise KeyError("bug")

    dispatch.register("broken", broken)
    handle(dispatch, FakeClient(), '{"event": "broken", "id": 1}')
    assert sent[0][1]["error"]["code"] == "internal" and "KeyError" in dispatch.errors[0]


def test_rooms_have_one_owner_both_ways() -> None:
    rooms: Rooms[str] = Rooms()
    rooms.join("ana", "kitchen")
    rooms.join("ana", "lobby")
    rooms.join("pedro", "kitchen")
    assert set(rooms.members("kitchen")) == {"ana", "pedro"} and rooms.rooms_of("ana") == {"kitchen", "lobby"}
    rooms.leave("pedro", "kitchen")
    assert set(rooms.members("kitchen")) == {"ana"} and rooms.rooms_of("pedro") == frozenset()
    rooms.leave_all("ana")
    assert len(rooms) == 0 and "kitchen" not in rooms and rooms.rooms_of("ana") == frozenset()
    assert set(rooms.members("nowhere")) == set()


@dataclass
class Counter:
    count: int = 0


def test_a_change_returns_its_result_and_collects_its_broadcasts() -> None:
    from labtools.events.replicated import Push

    sender = object()
    changes = Changes(Counter(), lambda id: sender if id == 1 else None)
    seen: list[Any] = []

    def add(state: Counter, n: int, who: Any) -> int:
        require(isinstance(n, int), "n must be an integer")
        seen.append(who)
        state.count += n
        changes.collect(Push("count", state.count, exclude=who))
        return state.count

    changes.register(add)
    applied = changes.apply({"c": "add", "d": 5}, 1)
    assert applied.result == 5 and applied.pushes == [Push("count", 5, None, sender)] and seen == [sender]
    elsewhere = changes.apply({"c": "add", "d": 2}, None)  # the same entry on another node: no sender
    assert elsewhere.pushes[0].exclude is None and changes.state.count == 7
    with pytest.raises(EventError):
        changes.apply({"c": "add", "d": "x"}, None)
    assert not changes.applying and changes.snapshot() == {"count": 7}
    changes.restore({"count": 1})
    assert changes.state.count == 1


def test_two_changes_of_one_name_are_refused() -> None:
    changes = Changes(Counter(), lambda id: None)

    def bump(state: Counter, data: Any) -> None: ...

    changes.register(bump)

    def other() -> None: ...

    other.__name__ = "bump"
    with pytest.raises(ValueError, match="two changes are called 'bump'"):
        changes.register(other)
    with pytest.raises(ValueError, match="not a change of this server"):
        changes.name_of("missing")
