"""Lesson 06 (ticket queue): which events need an acknowledgement, and taking tickets over one socket."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from .. import runtime
from ..apps.tickets import TicketQueue
from ..events import EventClient
from ..events.frames import decode_emit, encode_ack
from .registry import exercise


def check_needs_ack(answer: Any) -> None:
    assert isinstance(answer, set | frozenset), (
        f"answer should be a set of event names, e.g. {{'request-ticket'}}, not {answer!r}"
    )
    expected = {"request-ticket", "next-desktop-ticket"}
    missing, extra = expected - answer, answer - expected
    assert not missing, f"these need an answer back to the sender: {sorted(missing)}"
    assert not extra, f"these are broadcasts nobody answers: {sorted(extra)}"


@exercise("06.1", check_needs_ack, value=True)
def needs_ack() -> set[str]:
    # Of request-ticket, next-desktop-ticket and assigned-tickets, the sender of the first two
    # must learn a result (its number, the ticket to serve); assigned-tickets is a broadcast.
    return {"request-ticket", "next-desktop-ticket"}


#: 06.2 takes N tickets from a ticket server that holds every acknowledgement for ACK_DELAY
#: seconds (each in its own task) and counts the requests in flight: received, not yet answered.
#: Requests awaited one after another are in flight one at a time; all at once, N at a time.
N, ACK_DELAY, TIMEOUT = 10, 0.4, 15.0


class HeldTickets:
    """A ticket server for the check: ``request-ticket`` acknowledged after ``ACK_DELAY`` s."""

    def __init__(self) -> None:
        self.queue = TicketQueue()
        self.sockets = self.requests = self.in_flight = self.most_in_flight = 0
        self.without_id = 0
        self.tasks: set[asyncio.Task] = set()

    async def handle(self, connection: ServerConnection) -> None:
        self.sockets += 1
        async for message in connection:
            emit, _error = decode_emit(message if isinstance(message, str) else "")
            if emit is None or emit.event != "request-ticket":
                continue
            self.requests += 1
            if emit.id is None:
                self.without_id += 1
                continue
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            task = asyncio.get_running_loop().create_task(self.answer(connection, emit.id, self.queue.take()))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def answer(self, connection: ServerConnection, id: int, ticket: dict[str, Any]) -> None:
        await asyncio.sleep(ACK_DELAY)
        self.in_flight -= 1
        with contextlib.suppress(ConnectionClosed):
            await connection.send(encode_ack(id, ticket))


async def take_from_held_tickets(answer: Callable[[str, int], Awaitable[Any]]) -> tuple[Any, HeldTickets]:
    """Run ``answer(url, N)`` against a fresh ``HeldTickets`` server; return its result and the server."""
    held = HeldTickets()
    async with serve(held.handle, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        try:
            got = await asyncio.wait_for(answer(f"http://127.0.0.1:{port}/", N), TIMEOUT)
        finally:
            for task in list(held.tasks):
                task.cancel()
    return got, held


def check_take_tickets(answer: Any) -> None:
    assert inspect.iscoroutinefunction(answer), (
        "answer should be the function itself, defined with `async def take_tickets(url, n)` "
        f"(answer = take_tickets, without calling it), not {answer!r}"
    )
    try:
        got, held = runtime.run(take_from_held_tickets(answer), timeout=TIMEOUT + 5)
    except TimeoutError as error:
        raise AssertionError(
            f"take_tickets(url, {N}) did not return within {TIMEOUT:.0f} s: send each request-ticket with an id "
            "and await its acknowledgement (client.request, not client.emit)"
        ) from error
    except Exception as error:
        raise AssertionError(f"take_tickets(url, {N}) raised {type(error).__name__}: {error}") from error
    assert isinstance(got, list), f"take_tickets should return a list of numbers, got {type(got).__name__}"
    assert all(isinstance(number, int) and not isinstance(number, bool) for number in got), (
        f"return the tickets' numbers (ticket['number'] of each acknowledgement), not {got[:2]}..."
    )
    assert sorted(got) == list(range(1, N + 1)), f"expected the {N} numbers 1..{N}, got {got}"
    assert held.sockets == 1, (
        f"take_tickets opened {held.sockets} sockets: open one, send all {N} requests over it (each "
        "acknowledgement finds its request by id), then close it"
    )
    assert held.requests == N, f"send exactly {N} request-ticket, not {held.requests}"
    assert held.most_in_flight == N, (
        f"at most {held.most_in_flight} of the {N} requests were in flight at once (sent, not yet answered): "
        "awaiting each request before sending the next makes them wait one after another. Start them all, "
        "then await them together (asyncio.gather)"
    )


@exercise("06.2", check_take_tickets, imports="import asyncio\n\nfrom labtools.events import EventClient")
async def take_tickets(url: str, n: int) -> list[int]:
    client = await EventClient.connect(url)
    try:
        # n requests in flight at once over one socket: each answer finds its request by id.
        tickets = await asyncio.gather(*(client.request("request-ticket") for _ in range(n)))
        return [ticket["number"] for ticket in tickets]
    finally:
        await client.aclose()
