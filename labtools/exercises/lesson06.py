"""Lesson 06 (ticket queue): which events need an acknowledgement, taking tickets over one socket,
and a coat check of the learner's own that answers every request."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from .. import runtime
from ..apps.tickets import TicketQueue
from ..events import EventClient
from ..events.frames import decode_emit, encode_ack
from .registry import AppUnderCheck, drive, exercise, file_exercise, learner_file


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


#: 06.3: three people check this many coats each, all at once.
PEOPLE, COATS_EACH = ("ana", "pedro", "luis"), 8


def hook_number(ack: Any, what: str) -> int:
    """The number in a ``check-coat`` acknowledgement ``{"number": N}``."""
    assert ack is not None, (
        f'{what} was acknowledged with no data (None): the handler returns {{"number": N}}, and what it returns is '
        "the acknowledgement (an emit to the client is not)"
    )
    assert isinstance(ack, dict) and type(ack.get("number")) is int, (
        f'{what} should be acknowledged with {{"number": N}}, N an int, not {ack!r}'
    )
    return ack["number"]


async def every_coat_answered(app: AppUnderCheck) -> None:
    """Coats checked at once get numbers of their own; each number brings its coat back, once."""
    people = [await app.client(name) for name in PEOPLE]
    plan = [(person, f"{person.name}'s coat #{k}") for person in people for k in range(1, COATS_EACH + 1)]
    acks = await asyncio.gather(*(app.ask(person, "check-coat", {"coat": coat}, f"check-coat {coat!r}")
                                  for person, coat in plan))
    numbers = [hook_number(ack, f"check-coat {coat!r}") for (_person, coat), ack in zip(plan, acks, strict=True)]
    twice = sorted(number for number, times in Counter(numbers).items() if times > 1)
    assert not twice, (
        f"{len(plan)} coats checked at once got the same number more than once ({twice[:5]}): each check-coat gets "
        "a number of its own. Count in the server's state, read and bumped in one change (server.update), "
        "not per connection"
    )
    assert sorted(numbers) == list(range(1, len(plan) + 1)), (
        f"the {len(plan)} coats should get the numbers 1 to {len(plan)}, got {sorted(numbers)}"
    )
    for (person, coat), number in reversed(list(zip(plan, numbers, strict=True))):
        back = await app.ask(person, "collect", {"number": number}, f"collect {{'number': {number}}}")
        assert isinstance(back, dict) and back.get("coat") == coat, (
            f"collect {{'number': {number}}} should be acknowledged with {{'coat': {coat!r}}}, the coat given that "
            f"number, not {back!r}"
        )
    ana = people[0]
    await app.refused(ana, "collect", {"number": numbers[0]}, f"a second collect of number {numbers[0]} (its coat "
                      "was collected already)")
    await app.refused(ana, "collect", {"number": 100 * len(plan)}, f"collect of number {100 * len(plan)}, never given,")
    await app.refused(ana, "check-coat", {"coat": ""}, "check-coat with an empty 'coat'")
    after = hook_number(await app.ask(ana, "check-coat", {"coat": "a hat"}, "check-coat 'a hat'"), "check-coat 'a hat'")
    assert after == len(plan) + 1, (
        f"after {len(plan)} coats the next number is {len(plan) + 1}, got {after}: a number is never given twice, "
        "even once its coat is collected"
    )


def check_my_coat_check(answer: Any) -> None:
    drive(learner_file(answer, "my_coat_check.py"), every_coat_answered)


file_exercise("06.3", check_my_coat_check, name="my_coat_check.py", solution="06_my_coat_check.py")
