"""Crowds: repeatable from a seed, nothing lost or duplicated, bytes agree with the server."""

from __future__ import annotations

from typing import ClassVar

import pytest

import labtools as lt
from labtools.experiments.cost import polling_cost
from labtools.measure.metrics import Traffic
from labtools.sim import crowd as crowds
from labtools.sim.conversation import Conversation
from labtools.sim.users import ClientSpec, CrowdClient


@pytest.fixture(scope="module")
def server() -> lt.ServerHandle:
    return lt.serve("polling", name="test-crowd")


def test_same_seed_same_schedule() -> None:
    a = crowds.make_schedule(50, rate=20, duration=3, seed=7)
    b = crowds.make_schedule(50, rate=20, duration=3, seed=7)
    c = crowds.make_schedule(50, rate=20, duration=3, seed=8)
    assert a == b and a != c
    assert 30 <= len(a) <= 90  # Poisson around 60
    assert all(s != r and 0 <= s < 50 and 0 <= r < 50 for _t, s, r in a)
    assert [t for t, _s, _r in a] == sorted(t for t, _s, _r in a)
    assert crowds._phases(10, 2.0, 1) == crowds._phases(10, 2.0, 1)
    assert all(0 <= p < 2.0 for p in crowds._phases(10, 2.0, 1))


@pytest.mark.parametrize("mode", ["poll", "long-poll", "sse"])
def test_every_message_arrives_once(server: lt.ServerHandle, mode: str) -> None:
    result = crowds.run_crowd(server, users=30, mode=mode, interval=0.3, wait=5, rate=30, duration=1.0, seed=11)
    assert result.schedule == crowds.make_schedule(30, 30, 1.0, 11)
    assert result.sent == len(result.schedule) > 10
    assert (result.delivered, result.lost, result.duplicated, result.errors) == (result.sent, 0, 0, 0)
    assert result.latency.summary()["count"] == result.sent
    # Counted at both ends of the same sockets: the bytes must agree exactly.
    assert result.server_bytes_in == result.client_bytes_out
    assert result.server_bytes_out == result.client_bytes_in
    assert result.server["total"]["requests"] == result.requests
    for route, counts in result.client_routes.items():
        server_route = result.server["routes"][route]
        assert server_route["bytesIn"] == counts["bytesOut"], route
        assert server_route["bytesOut"] == counts["bytesIn"], route
        assert server_route["requests"] == counts["requests"], route
    if mode == "poll":
        assert result.server["total"]["empty"] == result.empty > 0
        # Pedro hears of a message at his next poll: on the order of the 0.3 s interval, never at
        # once. (The median of some thirty waits drawn over one interval strays well below 0.15 s.)
        assert 0.05 <= result.latency.summary()["p50_ms"] / 1000 <= 0.35
    else:
        assert result.empty == 0
        assert result.held_max == 30
        assert result.latency.summary()["p99_ms"] < 250


def test_poll_rate_matches_users_over_interval(server: lt.ServerHandle) -> None:
    result = crowds.run_crowd(server, users=40, mode="poll", interval=0.25, rate=0.1, duration=1.5, seed=2)
    polls = result.requests_in_window - result.sent
    assert 40 / 0.25 * 1.5 * 0.85 <= polls <= 40 / 0.25 * 1.5 * 1.15
    assert result.bytes_per_poll > 100
    assert result.summary()["users"] == 40


def test_a_url_works_as_well_as_a_handle(server: lt.ServerHandle) -> None:
    result = crowds.run_crowd(server.url, users=5, rate=10, duration=0.5, interval=0.2, seed=4)
    assert result.lost == 0
    # Read over the wire, the server's delta includes the /stats request made after the run.
    assert result.server["total"]["requests"] == result.requests + 1


def test_modes_are_pluggable(server: lt.ServerHandle) -> None:
    class Echo:
        """A fake transport that delivers every message to its recipient directly."""

        registry: ClassVar[dict[str, ClientSpec]] = {}

        def __init__(self, spec: ClientSpec) -> None:
            self.spec = spec
            self.traffic = Traffic()

        async def start(self) -> None:
            Echo.registry[self.spec.user] = self.spec

        async def send(self, to: str, text: str) -> None:
            import time

            self.traffic.request("fake")
            Echo.registry[to].on_message({"text": text}, time.perf_counter())

        async def stop(self) -> None:
            pass

        async def aclose(self) -> None:
            pass

    crowds.MODES["echo-test"] = Echo
    try:
        result = crowds.run_crowd(server, users=4, mode="echo-test", rate=20, duration=0.5, seed=1)
        assert result.sent > 0 and result.lost == 0 and result.requests == result.sent
        assert isinstance(Echo(ClientSpec("", "x", print, print)), CrowdClient)
    finally:
        del crowds.MODES["echo-test"]
    with pytest.raises(ValueError, match="unknown mode"):
        crowds.run_crowd(server, mode="carrier-pigeon")


def test_arun_crowd_from_another_loop(server: lt.ServerHandle) -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    # A loop of its own, in a thread of its own (the browser fixture may own this thread's loop).
    coro = crowds.arun_crowd(server, users=4, rate=5, duration=0.4, interval=0.2, seed=5)
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(asyncio.run, coro).result(timeout=30)
    assert result.lost == 0


def test_conversation_traces_the_story(server: lt.ServerHandle) -> None:
    conversation = Conversation(server, interval=0.3)
    trace = conversation.play([(0.1, "Pedro", "Ana", "Hola Ana"), (0.5, "Ana", "Pedro", "Hola Pedro")], until=1.2)
    assert [m["text"] for m in conversation.received("Ana")] == ["Hola Ana"]
    assert [m["text"] for m in conversation.received("Pedro")] == ["Hola Pedro"]
    polls, empty = conversation.polls("Pedro")
    assert polls >= 3 and 1 <= empty < polls
    labels = [e.label for e in trace.events()]
    assert "[] no new messages" in labels and "POST /messages 'Hola Ana'" in labels
    assert any(e.src == "server" and e.dst == "Ana" and "Hola Ana" in e.label for e in trace.events())
    # Re-running the story on the same server starts from what is stored now.
    again = Conversation(server, interval=0.3)
    again.play([], until=0.4)
    assert again.received("Ana") == []


def test_cost_model() -> None:
    row = polling_cost(10**7, 2.0, 300)
    assert row["requests/s"] == 5_000_000
    assert row["bytes/s"] == 1.5e9
    assert row["mean latency s"] == 1.0


@pytest.mark.parametrize("mode", ["poll", "long-poll", "sse"])
def test_client_and_server_bytes_agree_exactly_crowd_after_crowd(server: lt.ServerHandle, mode: str) -> None:
    # Fast polls and a busy schedule: at the end of a run some request is nearly always on the
    # wire. The crowd stops its users and lets that request finish (or half-closes a held one)
    # before it closes, so not one byte is counted by one end only.
    for seed in range(4):
        result = crowds.run_crowd(server, users=100, mode=mode, interval=0.02, wait=5, rate=100, duration=0.5,
                                  seed=seed, grace=3)
        assert result.lost == 0 and result.errors == 0, (mode, seed)
        assert (result.client_bytes_out, result.client_bytes_in) == (result.server_bytes_in,
                                                                      result.server_bytes_out), (mode, seed)
        assert result.server["total"]["requests"] == result.requests, (mode, seed)


def test_an_unmetered_server_is_neither_asked_nor_waited_for(server: lt.ServerHandle, monkeypatch) -> None:
    """``metered=False`` (the relay, which has no ``/stats``): no ``/stats`` request, no wait for
    counts that will never come (it waited its whole ``COUNT_WAIT`` before, every run), and
    ``result.server`` all zeros in the usual shape; the clients still count their own."""
    async def never(*_args: object) -> None:
        raise AssertionError("waited for an unmetered server's counts")

    monkeypatch.setattr(crowds, "_server_caught_up", never)
    before = server.server.traffic.route("GET /stats").requests
    result = crowds.run_crowd(server.url, users=10, mode="poll", interval=0.2, rate=20, duration=0.3, seed=2,
                              metered=False)
    assert result.lost == 0 and result.requests > 0 and result.client_bytes_out > 0
    assert server.server.traffic.route("GET /stats").requests == before
    assert result.server == {"total": {"requests": 0, "empty": 0, "bytesIn": 0, "bytesOut": 0}, "routes": {}}
    assert result.server_bytes_in == result.server_bytes_out == 0


def test_traffic_adds_up() -> None:
    a, b = Traffic(), Traffic()
    a.request("GET /messages", empty=True)
    a.bytes("GET /messages", inbound=10, outbound=20)
    a.total.bytes_in, a.total.bytes_out = 10, 20
    b.request("GET /messages")
    b.request("POST /messages")
    b.bytes("POST /messages", inbound=5)
    b.total.bytes_in = 5
    total = Traffic.sum([a, b])
    assert total.as_dict() == {
        "total": {"requests": 3, "empty": 1, "bytesIn": 15, "bytesOut": 20},
        "routes": {"GET /messages": {"requests": 2, "empty": 1, "bytesIn": 10, "bytesOut": 20},
                   "POST /messages": {"requests": 1, "empty": 0, "bytesIn": 5, "bytesOut": 0}},
    }
    total.route("GET /messages").requests += 100  # the sum shares no counter with its parts
    assert a.routes["GET /messages"].requests == 1 and b.routes["GET /messages"].requests == 1
    assert Traffic.sum([]).as_dict() == Traffic().as_dict()
