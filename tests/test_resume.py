"""Resuming after a reconnection (lesson 11): offsets and epochs on the client side.

``EventClient`` remembers where it stands (``position``), ``resume`` asks for what was missed,
a push already received is dropped; ``Reconnecting`` resumes on its own. With the embedded
server here, and with two nodes sharing a Redis at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import labtools as lt
from labtools import serving
from labtools.events import AckError, EventClient
from labtools.sim.faults import FaultyProxy
from labtools.sim.reconnect import Reconnecting


def say(text: str) -> dict[str, str]:
    return {"text": text}


def texts(client: EventClient) -> list[str]:
    return [data["text"] for data in client.events("msg-from-server")]


async def start(app: str = "minichat", port: int = 0) -> Any:
    """A fresh server on the labtools loop (its own epoch: a restart on ``port`` is a new one)."""
    return await serving.start(serving.build(app), port=port)


async def send(url: str, messages: list[str], *, per_sender: int = 150) -> None:
    """Send ``messages`` in order, from as many clients as the per-client rate limit asks for."""
    for first in range(0, len(messages), per_sender):
        last = min(first + per_sender, len(messages)) - 1
        sender = await EventClient.connect(url, name=f"sender{first}")
        for text in messages[first:last]:
            await sender.emit("msg-to-server", say(text))
        await sender.request("msg-to-server", say(messages[last]))  # in order: all before it are in
        await sender.aclose()


async def away(url: str) -> tuple[str, str]:
    """A client that connects, hears what it hears, and goes: where it stood."""
    client = await EventClient.connect(url, name="away")
    await client.wait_for("position")
    await client.aclose()
    assert client.position is not None
    return client.position


def test_a_reconnected_client_gets_exactly_what_it_missed_in_order() -> None:
    async def go() -> None:
        server = await start()
        pedro = await EventClient.connect(server.url, name="pedro")
        await send(server.url, ["before"])
        await pedro.wait_for("msg-from-server", 3, where=lambda d: d["text"] == "before")
        since = pedro.position
        assert since is not None and since[0] != "0-0"
        await pedro.aclose()
        await send(server.url, [f"m{k}" for k in range(5)])
        back = await EventClient.connect(server.url, name="pedro")
        answer = await back.resume(*since)
        assert texts(back) == [f"m{k}" for k in range(5)]  # in order, before the acknowledgement
        assert answer["missed"] == 5 and answer["epoch"] == since[1]
        assert back.position == (answer["offset"], answer["epoch"])
        await send(server.url, ["after"])  # live again, once
        await back.wait_for("msg-from-server", 3, where=lambda d: d["text"] == "after")
        # Resuming again from the old place replays nothing: this connection was sent all six
        # already (no push reaches a connection twice, however often it resumes).
        again = await back.resume(*since)
        assert again["missed"] == 0 and back.duplicates == 0
        assert texts(back) == [f"m{k}" for k in range(5)] + ["after"]
        assert (await back.resume())["missed"] == 0  # from its own position: nothing new
        await back.aclose()
        await server.aclose()

    lt.run(go())




def test_a_push_that_beats_the_resume_to_a_new_socket_waits_for_the_replay() -> None:
    """``connect(hold=True)`` (what ``Reconnecting`` does when it will resume): a live push that
    reaches the new socket before its ``resume`` is handed over after the replay, in order."""

    async def go() -> list[list[str]]:
        server = await start()
        since = await away(server.url)
        await send(server.url, ["m1", "m2", "m3"])
        orders = []
        for hold in (True, False):
            client = await EventClient.connect(server.url, name="back", hold=hold)
            await client.wait_for("position")
            await send(server.url, [f"live-{hold}"])
            await asyncio.sleep(0.1)  # the live push is there before the resume is sent
            await client.resume(*since)
            orders.append(texts(client))
            await client.aclose()
        await server.aclose()
        return orders

    held, not_held = lt.run(go())
    assert held == ["m1", "m2", "m3", "live-True"]
    assert not_held[0] == "live-False"  # without it, the newest first: what hold is for

def test_resuming_one_socket_over_and_over_sends_nothing_twice() -> None:
    """Resume amplification: one socket that resumes from an old offset again and again gets
    the missed pushes once; a bystander's round trip is not held up by it; an offset from the
    future is refused (it would silence the socket until then)."""

    async def go() -> None:
        server = await start()
        since = await away(server.url)
        await send(server.url, [f"m{k}" for k in range(100)])
        greedy = await EventClient.connect(server.url, name="greedy")
        answers = [await greedy.resume(*since) for _ in range(20)]
        assert [a["missed"] for a in answers] == [100] + [0] * 19
        assert texts(greedy) == [f"m{k}" for k in range(100)] and greedy.duplicates == 0
        sent = server.traffic.as_dict()["routes"]["send msg-from-server"]["requests"]
        assert sent <= 100 + 100  # live to the senders' sockets, plus one replay: never 20 of them
        with pytest.raises(AckError, match="future"):
            await greedy.request("resume", {"offset": f"{10**15}-0", "epoch": since[1]})
        await greedy.aclose()
        await server.aclose()

    lt.run(go())

def test_a_live_push_that_overtakes_the_replay_is_shown_after_it() -> None:
    """The new connection gets live pushes before its resume is handled: they wait for the replay."""

    async def go() -> None:
        server = await start()
        since = await away(server.url)
        await send(server.url, [f"m{k}" for k in range(3)])
        back = await EventClient.connect(server.url, name="pedro")
        resuming = asyncio.ensure_future(back.resume(*since))
        await asyncio.sleep(0)  # the resume is sent; its replay and answer are on their way
        # A push newer than all of them, as if applied (and pushed live) before the resume was handled:
        back.deliver({"event": "msg-from-server", "data": say("live"), "offset": "99999999999999-0", "epoch": since[1]})
        assert texts(back) == []  # held until the answer
        answer = await resuming
        assert answer["missed"] == 3 and texts(back) == ["m0", "m1", "m2", "live"]
        assert back.position == ("99999999999999-0", since[1])
        await back.aclose()
        await server.aclose()

    lt.run(go())


def test_a_client_that_heard_nothing_still_resumes_from_where_the_stream_stood() -> None:
    async def go() -> None:
        server = await start()
        await send(server.url, ["old"])
        since = await away(server.url)  # only the position frame: no message came
        await send(server.url, ["one", "two", "three"])
        back = await EventClient.connect(server.url)
        answer = await back.resume(*since)
        assert answer["missed"] == 3 and texts(back) == ["one", "two", "three"]
        await back.aclose()
        await server.aclose()

    lt.run(go())


def test_a_restarted_server_answers_too_old() -> None:
    async def go() -> None:
        server = await start()
        port = server.port
        await send(server.url, ["before the restart"])
        since = await away(server.url)
        await server.aclose()
        server = await start(port=port)
        back = await EventClient.connect(server.url)
        await back.wait_for("position")
        with pytest.raises(AckError) as refused:
            await back.resume(*since)
        assert refused.value.code == "too-old" and "epoch" in refused.value.message
        assert back.position is not None and back.position[1] != since[1]  # the new life, from connect on
        assert back.events("msg-from-server") == []
        await back.aclose()
        await server.aclose()

    lt.run(go())


def test_more_missed_than_the_minichat_keeps_is_too_old() -> None:
    async def go() -> None:
        server = await start()
        since = await away(server.url)
        await send(server.url, [f"m{k}" for k in range(1000)])
        back = await EventClient.connect(server.url)
        answer = await back.resume(*since, timeout=10)  # exactly the 1,000 kept: all of them
        assert answer["missed"] == 1000 and texts(back) == [f"m{k}" for k in range(1000)]
        await back.aclose()
        await send(server.url, ["one more"])
        late = await EventClient.connect(server.url)
        with pytest.raises(AckError) as refused:
            await late.resume(*since)
        assert refused.value.code == "too-old"
        assert late.events("msg-from-server") == []
        await late.aclose()
        await server.aclose()

    lt.run(go())


@pytest.mark.parametrize(
    "data",
    [None, "1-0", {"epoch": "x"}, {"offset": "abc", "epoch": "x"}, {"offset": "1-0-0", "epoch": "x"},
     {"offset": 3, "epoch": "x"}, {"offset": "1-0", "epoch": 5}, {"offset": "1-0", "epoch": ""},
     {"offset": "1-0", "epoch": "e" * 65}],
)
def test_a_malformed_resume_is_invalid_data_and_changes_nothing(data: Any) -> None:
    async def go() -> None:
        server = await start()
        since = await away(server.url)
        await send(server.url, ["missed"])
        back = await EventClient.connect(server.url)
        await back.wait_for("position")
        where = back.position
        with pytest.raises(AckError) as refused:
            await back.request("resume", data)
        assert refused.value.code == "invalid-data"
        assert back.position == where and back.events("msg-from-server") == []
        assert (await back.resume(*since))["missed"] == 1  # the connection still resumes properly
        await back.aclose()
        await server.aclose()

    lt.run(go())


# ----- apps whose pushes are their state --------------------------------------------------


async def vote(url: str) -> None:
    voter = await EventClient.connect(url)
    bands = await voter.wait_for("band-list")
    await voter.request("vote-band", bands[0]["id"])
    await voter.aclose()


async def call_ticket(url: str) -> None:
    desk = await EventClient.connect(url)
    await desk.request("request-ticket")
    await desk.request("next-desktop-ticket", {"agent": "ana", "desktop": 1})
    await desk.aclose()


async def place_marker(url: str) -> None:
    mapper = await EventClient.connect(url)
    await mapper.request("new-marker", {"id": "m1", "lng": 2.0, "lat": 41.0})
    await mapper.aclose()


STATEFUL: dict[str, tuple[str, Callable[[str], Awaitable[None]]]] = {
    "bands": ("band-list", vote),
    "tickets": ("assigned-tickets", call_ticket),
    "map": ("active-marker", place_marker),
}


@pytest.mark.parametrize("app", sorted(STATEFUL))
def test_resuming_a_stateful_app_after_missed_changes_sends_the_state_once(app: str) -> None:
    event, change = STATEFUL[app]

    async def go() -> None:
        server = await start(app)
        first = await EventClient.connect(server.url)
        await first.wait_for(event)
        since = first.position
        assert since is not None
        await first.aclose()
        await change(server.url)
        wire: list[dict] = []  # every frame as it came, before the client drops duplicates

        def keep(frame: Any) -> bool:
            wire.append(frame)
            return True

        back = await EventClient.connect(server.url, intercept=keep)
        await back.wait_for(event)  # the current state, on connect
        answer = await back.resume(*since)
        pushed = [frame for frame in wire if frame.get("event") == event]
        assert answer["missed"] == 1 and len(pushed) == 2  # the state once more for the resume...
        assert pushed[0] == pushed[1] and back.duplicates == 1  # ...the same: shown once
        assert len(back.events(event)) == 1
        assert (await back.resume())["missed"] == 0  # up to date: nothing sent
        assert len([frame for frame in wire if frame.get("event") == event]) == 2
        await back.aclose()
        await server.aclose()

    lt.run(go())


# ----- Reconnecting resumes on its own ----------------------------------------------------


def test_reconnecting_recovers_what_was_missed_through_a_cut_link() -> None:
    async def go() -> None:
        server = await start()
        port = server.port
        proxy = await FaultyProxy(server.url).start()
        got: list[str] = []
        user = Reconnecting(proxy.url, name="pedro", base=0.05, cap=0.2, seed=1, open_timeout=5)
        user.on("msg-from-server", lambda data: got.append(data["text"]))
        await user.start()
        await send(server.url, ["before"])
        await user.client.wait_for("msg-from-server", 3, where=lambda d: d["text"] == "before")
        proxy.blackhole()  # new connections hang until the link is back...
        proxy.cut()  # ...and this one is gone: the server keeps running
        await asyncio.sleep(0.2)
        assert not user.connected.is_set()
        await send(server.url, [f"m{k}" for k in range(4)])
        proxy.passthrough()
        await asyncio.wait_for(user.connected.wait(), 5)
        assert got == ["before"] + [f"m{k}" for k in range(4)]  # each once, in order, before connected
        assert (user.recovered, user.gaps, user.refused) == (4, 0, [])
        # A restarted server lost the history: the gap is said, then the new life goes on.
        await server.aclose()
        await asyncio.sleep(0.2)
        server = await start(port=port)
        await asyncio.wait_for(user.connected.wait(), 5)
        assert (user.recovered, user.gaps) == (4, 1)
        await send(server.url, ["after"])
        await user.client.wait_for("msg-from-server", 3, where=lambda d: d["text"] == "after")
        assert got[-1] == "after" and got.count("after") == 1
        await user.aclose()
        await proxy.aclose()
        await server.aclose()

    lt.run(go())


# ----- two nodes through Redis -------------------------------------------------------------


def test_a_client_resumes_on_another_node_with_exactly_what_it_missed(redis_server) -> None:
    redis_url = redis_server.url
    node_a = lt.serve("minichat", name="resume-node-a", broker=redis_url, node="a")
    node_b = lt.serve("minichat", name="resume-node-b", broker=redis_url, node="b")

    async def go() -> None:
        pedro = await EventClient.connect(node_a.url, name="pedro")
        await send(node_b.url, ["before"])  # through the log: node a pushes it to pedro
        await pedro.wait_for("msg-from-server", 5, where=lambda d: d["text"] == "before")
        since = pedro.position
        await pedro.aclose()
        await send(node_b.url, [f"m{k}" for k in range(6)])
        back = await EventClient.connect(node_b.url, name="pedro")
        assert since is not None
        answer = await back.resume(*since)
        assert answer["missed"] == 6 and texts(back) == [f"m{k}" for k in range(6)]
        await send(node_a.url, ["live"])  # and from then on, once, whichever node it came through
        await back.wait_for("msg-from-server", 5, where=lambda d: d["text"] == "live")
        await asyncio.sleep(0.1)
        assert texts(back) == [f"m{k}" for k in range(6)] + ["live"] and back.duplicates == 0
        await back.aclose()

    lt.run(go())
