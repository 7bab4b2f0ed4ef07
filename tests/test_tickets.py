"""The ticket queue over real sockets: acknowledgements, concurrent desks, bad input, GET /last."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import pytest
from deployments import deployment_fixture

import labtools as lt
from labtools.events import AckError, EventClient
from labtools.sim import desks

#: The contract, on one node, on two nodes, and on two nodes behind the front door.
server = deployment_fixture("tickets", "test-tickets")


def get_last(handle: lt.ServerHandle) -> dict[str, Any]:
    with urllib.request.urlopen(handle.url + "last", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("application/json")
        return json.load(response)


def test_tickets_count_up_and_desks_get_the_oldest(server: lt.ServerHandle) -> None:
    async def scenario() -> None:
        kiosk, desk, screen = await asyncio.gather(*(EventClient.connect(server.url, name=n) for n in "kds"))
        try:
            assert await screen.wait_for("assigned-tickets") == []
            taken = [await kiosk.request("request-ticket") for _ in range(3)]
            assert [t["number"] for t in taken] == [1, 2, 3] and len({t["id"] for t in taken}) == 3
            first = await desk.request("next-desktop-ticket", {"agent": "Ana", "desktop": 2})
            assert first == {**taken[0], "agent": "Ana", "desktop": 2}
            shown = await screen.wait_for("assigned-tickets", where=lambda calls: len(calls) == 1)
            assert shown == [first]
            second = await desk.request("next-desktop-ticket", {"agent": "Pedro", "desktop": "B"})
            assert second["number"] == 2 and second["desktop"] == "B"
            await screen.wait_for("assigned-tickets", where=lambda calls: calls == [second, first])
        finally:
            await asyncio.gather(kiosk.aclose(), desk.aclose(), screen.aclose())

    lt.run(scenario())
    assert [t["number"] for t in get_last(server)["lastOnes"]] == [2, 1]


def test_no_ticket_waiting_is_acknowledged_with_null(server: lt.ServerHandle) -> None:
    async def scenario() -> Any:
        desk = await EventClient.connect(server.url)
        try:
            return await desk.request("next-desktop-ticket", {"agent": "Ana", "desktop": 1})
        finally:
            await desk.aclose()

    assert lt.run(scenario()) is None


def test_last_13_newest_first_on_connect_and_over_http(server: lt.ServerHandle) -> None:
    async def scenario() -> list[dict[str, Any]]:
        client = await EventClient.connect(server.url)
        try:
            for _ in range(20):
                await client.request("request-ticket")
            for desk in range(20):
                await client.request("next-desktop-ticket", {"agent": "Ana", "desktop": desk})
            late = await EventClient.connect(server.url)
            try:
                return await late.wait_for("assigned-tickets")
            finally:
                await late.aclose()
        finally:
            await client.aclose()

    on_connect = lt.run(scenario())
    assert [t["number"] for t in on_connect] == list(range(20, 7, -1))
    assert get_last(server) == {"ok": True, "lastOnes": on_connect}


def test_concurrent_desks_get_every_ticket_exactly_once(server: lt.ServerHandle) -> None:
    result = lt.run(desks.desks_race(server.url, tickets=300, desks=25), timeout=30)
    assert sorted(result["issued"]) == list(range(1, 301))
    called = [n for got in result["by_desk"].values() for n in got]
    assert sorted(called) == list(range(1, 301)), "a ticket was called twice or never"
    assert all(got == sorted(got) for got in result["by_desk"].values()), "each desk gets older tickets first"


BAD = [
    None,
    "Ana",
    [],
    {"agent": "", "desktop": 1},
    {"agent": "   ", "desktop": 1},
    {"agent": "Ana"},
    {"desktop": 1},
    {"agent": 5, "desktop": 1},
    {"agent": "Ana", "desktop": ""},
    {"agent": "Ana", "desktop": True},
    {"agent": "Ana", "desktop": -1},
    {"agent": "Ana", "desktop": 1.5},
    {"agent": "x" * 41, "desktop": 1},
]


@pytest.mark.parametrize("data", BAD, ids=[repr(d)[:30] for d in BAD])
def test_bad_desk_is_invalid_data_and_takes_no_ticket(server: lt.ServerHandle, data: Any) -> None:
    async def scenario() -> None:
        kiosk, bad, screen = await asyncio.gather(*(EventClient.connect(server.url) for _ in range(3)))
        try:
            await kiosk.request("request-ticket")
            with pytest.raises(AckError) as failure:
                await bad.request("next-desktop-ticket", data)
            assert failure.value.code == "invalid-data"
            await bad.emit("next-desktop-ticket", data)
            assert (await bad.next("error"))["code"] == "invalid-data"
            # The ticket still waits, nobody saw a call, and every socket still works.
            ticket = await bad.request("next-desktop-ticket", {"agent": "Ana", "desktop": 1})
            assert ticket["number"] == 1
            assert await screen.wait_for("assigned-tickets", where=lambda calls: len(calls) == 1)
            assert len(screen.events("assigned-tickets")) == 2 and not screen.errors and not kiosk.errors
        finally:
            await asyncio.gather(kiosk.aclose(), bad.aclose(), screen.aclose())

    lt.run(scenario())


def test_a_slow_acknowledgement_times_out_but_the_ticket_was_issued() -> None:
    slow = lt.serve("tickets", name="test-tickets-slow", ack_delay=0.3)

    async def scenario() -> tuple[int, int]:
        client = await EventClient.connect(slow.url)
        try:
            with pytest.raises(TimeoutError):
                await client.request("request-ticket", timeout=0.05)
            second = await client.request("request-ticket", timeout=2)
            return second["number"], slow.read(lambda queue: len(queue.waiting))
        finally:
            await client.aclose()

    assert lt.run(scenario()) == (2, 2)
