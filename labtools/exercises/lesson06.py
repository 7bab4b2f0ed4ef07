"""Lesson 06 (ticket queue): which events need an acknowledgement, and taking tickets over one socket."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from .. import runtime, serving
from .registry import exercise


def check_needs_ack(answer: Any) -> None:
    assert isinstance(answer, set | frozenset), "answer should be a set of event names, e.g. {'request-ticket'}"
    expected = {"request-ticket", "next-desktop-ticket"}
    missing, extra = expected - answer, answer - expected
    assert not missing, f"these need an answer back to the sender: {sorted(missing)}"
    assert not extra, f"these are broadcasts nobody answers: {sorted(extra)}"


@exercise("06.1", check_needs_ack)
def needs_ack_solution() -> set[str]:
    # Of request-ticket, next-desktop-ticket and assigned-tickets, the sender of the first two
    # must learn a result (its number, the ticket to serve); assigned-tickets is a broadcast.
    return {"request-ticket", "next-desktop-ticket"}


def check_take_tickets(answer: Any) -> None:
    assert inspect.iscoroutinefunction(answer), "answer should be an async function take_tickets(url, n) -> numbers"
    handle = serving.serve("tickets", name="check-06.2")
    try:
        got = runtime.run(answer(handle.url, 30), timeout=20)
        assert isinstance(got, list), f"take_tickets should return a list, got {type(got).__name__}"
        assert sorted(got) == list(range(1, 31)), f"expected the 30 numbers 1..30, got {got}"
        counted = runtime.call(lambda: handle.server.traffic.as_dict()["routes"].get("recv request-ticket"))
        assert counted is not None and counted["requests"] == 30, "send exactly 30 request-ticket"
    finally:
        handle.stop()


@exercise("06.2", check_take_tickets)
def take_tickets_solution() -> Callable[[str, int], Coroutine[Any, Any, list[int]]]:
    import asyncio

    from labtools.events import EventClient

    async def take_tickets(url: str, n: int) -> list[int]:
        client = await EventClient.connect(url)
        try:
            # n requests in flight at once over one socket: each answer finds its request by id.
            tickets = await asyncio.gather(*(client.request("request-ticket") for _ in range(n)))
            return [ticket["number"] for ticket in tickets]
        finally:
            await client.aclose()

    return take_tickets
