"""The ticket queue (PROTOCOL.md ``tickets``): requests that need an answer.

A kiosk takes a ticket and must print its number; a desk asks for the next ticket and must know
which one it got. Both are acknowledged requests (an emit with an ``id``), not fire-and-forget
emits. The public screen only listens: ``assigned-tickets`` (the last 13 calls, newest first)
on connect and after every call. ``GET /last`` serves the same list over plain HTTP.

Why no lock around ``call_next``: every handler runs on one event loop and ``call_next`` does not
await between taking the oldest ticket and marking it assigned, so two desks can never get the
same ticket. ``ack_delay`` (seconds) only slows the *answer*, after the state changed, to show
what a client timeout means: the ticket was issued, the client just never heard of it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import deque
from typing import Any

from ..events import Client, EventClient, EventServer
from ..events.server import require

LAST_CALLS = 13
MAX_AGENT = 40
MAX_DESKTOP = 20


class TicketQueue:
    """Tickets waiting (oldest first) and tickets assigned (newest first)."""

    def __init__(self) -> None:
        self.last_number = 0
        self.waiting: deque[dict[str, Any]] = deque()
        self.assigned: deque[dict[str, Any]] = deque(maxlen=LAST_CALLS)
        self.assigned_count = 0

    def take(self) -> dict[str, Any]:
        """A new ticket ``{"id", "number"}``; numbers count up from 1."""
        self.last_number += 1
        ticket = {"id": secrets.token_hex(8), "number": self.last_number}
        self.waiting.append(ticket)
        return dict(ticket)

    def call_next(self, agent: str, desktop: str | int) -> dict[str, Any] | None:
        """The oldest waiting ticket, now carrying ``agent`` and ``desktop``; None if none waits."""
        if not self.waiting:
            return None
        ticket = {**self.waiting.popleft(), "agent": agent, "desktop": desktop}
        self.assigned.appendleft(ticket)
        self.assigned_count += 1
        return dict(ticket)

    def last(self) -> list[dict[str, Any]]:
        return [dict(t) for t in self.assigned]


def desk_of(data: Any) -> tuple[str, str | int]:
    """Validate ``{"agent": STR, "desktop": STR|INT}``: names not empty, desks short."""
    require(isinstance(data, dict), 'next-desktop-ticket takes {"agent": STR, "desktop": STR|INT}')
    agent, desktop = data.get("agent"), data.get("desktop")
    require(isinstance(agent, str) and 0 < len(agent.strip()) <= MAX_AGENT,
            f"'agent' is a non-empty string of at most {MAX_AGENT} characters")
    if isinstance(desktop, int) and not isinstance(desktop, bool):
        require(0 <= desktop < 10**6, "'desktop' is a small non-negative number")
        return agent.strip(), desktop
    require(isinstance(desktop, str) and 0 < len(desktop.strip()) <= MAX_DESKTOP,
            f"'desktop' is a number or a non-empty string of at most {MAX_DESKTOP} characters")
    return agent.strip(), desktop.strip()


def build(ack_delay: float = 0.0) -> EventServer:
    server = EventServer("tickets", page="tickets")
    queue = TicketQueue()
    server.state = queue  # type: ignore[attr-defined]  # for the lesson to look at

    async def answer(result: Any) -> Any:
        if ack_delay:
            await asyncio.sleep(ack_delay)
        return result

    @server.connected
    def welcome(client: Client) -> None:
        client.emit("assigned-tickets", queue.last())

    @server.on("request-ticket")
    async def request_ticket(client: Client, data: Any) -> dict[str, Any]:
        return await answer(queue.take())

    @server.on("next-desktop-ticket")
    async def next_ticket(client: Client, data: Any) -> dict[str, Any] | None:
        agent, desktop = desk_of(data)
        ticket = queue.call_next(agent, desktop)
        if ticket is not None:
            server.broadcast("assigned-tickets", queue.last())
        return await answer(ticket)

    @server.route("/last")
    def last(request: Any) -> tuple[int, str, bytes]:
        body = json.dumps({"ok": True, "lastOnes": queue.last()}, ensure_ascii=False).encode()
        return 200, "application/json", body

    return server


async def start(host: str = "127.0.0.1", port: int = 0, ack_delay: float = 0.0) -> EventServer:
    server = build(ack_delay)
    await server.start(host, port)
    return server


# ----- simulated clients ---------------------------------------------------------------------


async def desks_race(url: str, *, tickets: int = 200, desks: int = 20) -> dict[str, Any]:
    """A kiosk takes ``tickets`` tickets; ``desks`` desks then call them all at once.

    Returns the numbers issued and, per desk, the numbers it was given: every issued number
    must appear exactly once across the desks.
    """
    # One kiosk per 100 tickets keeps each socket under the server's per-client rate limit.
    kiosks = await asyncio.gather(*(EventClient.connect(url, name=f"kiosk-{k}") for k in range(tickets // 100 + 1)))
    agents = await asyncio.gather(*(EventClient.connect(url, name=f"desk-{d}") for d in range(1, desks + 1)))
    try:
        taken = await asyncio.gather(*(kiosks[i % len(kiosks)].request("request-ticket") for i in range(tickets)))
        issued = [t["number"] for t in taken]

        async def work(desk: int, client: EventClient) -> list[int]:
            got = []
            while (ticket := await client.request("next-desktop-ticket", {"agent": f"agent {desk}", "desktop": desk})):
                got.append(ticket["number"])
            return got

        calls = await asyncio.gather(*(work(d, c) for d, c in enumerate(agents, start=1)))
        return {"issued": issued, "by_desk": {d: got for d, got in enumerate(calls, start=1)}}
    finally:
        await asyncio.gather(*(c.aclose() for c in [*kiosks, *agents]))
