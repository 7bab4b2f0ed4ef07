"""The ticket queue (PROTOCOL.md ``tickets``): requests that need an answer.

A kiosk takes a ticket and must print its number; a desk asks for the next ticket and must know
which one it got. Both are acknowledged requests (an emit with an ``id``), not fire-and-forget
emits. The public screen only listens: ``assigned-tickets`` (the last 13 calls, newest first)
on connect and after every call. ``GET /last`` serves the same list over plain HTTP.

Why no lock around ``call_next``: both ways of changing the queue are the server's changes
(``@server.change``), applied one at a time, in one order, on every node; and ``call_next``
does not await between taking the oldest ticket and marking it assigned, so two desks can never
get the same ticket, on one node or several.
``ack_delay`` (seconds) only slows the *answer*, after the state changed, to show
what a client timeout means: the ticket was issued, the client just never heard of it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import deque
from typing import Any

from ..events import Client, EventServer, require

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

    def take(self, ticket_id: str | None = None) -> dict[str, Any]:
        """A new ticket ``{"id", "number"}``; numbers count up from 1."""
        self.last_number += 1
        ticket = {"id": ticket_id or secrets.token_hex(8), "number": self.last_number}
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

    def snapshot(self) -> dict[str, Any]:
        return {"lastNumber": self.last_number, "waiting": list(self.waiting),
                "assigned": list(self.assigned), "assignedCount": self.assigned_count}

    def restore(self, data: dict[str, Any]) -> None:
        self.last_number = data["lastNumber"]
        self.waiting = deque(data["waiting"])
        self.assigned = deque(data["assigned"], maxlen=LAST_CALLS)
        self.assigned_count = data["assignedCount"]


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


def build(ack_delay: float = 0.0) -> EventServer[TicketQueue]:
    """The ticket queue, not started."""
    server = EventServer("tickets", TicketQueue(), page="tickets", recoverable=("assigned-tickets",))

    @server.change
    def take(queue: TicketQueue, ticket_id: str) -> dict[str, Any]:
        return queue.take(ticket_id)

    @server.change
    def call(queue: TicketQueue, desk: dict[str, Any]) -> dict[str, Any] | None:
        ticket = queue.call_next(desk["agent"], desk["desktop"])
        if ticket is not None:
            server.broadcast("assigned-tickets", queue.last())
        return ticket

    @server.welcome
    def send_last(client: Client) -> None:
        client.emit("assigned-tickets", server.state.last())

    async def answer(result: Any) -> Any:
        if ack_delay:
            await asyncio.sleep(ack_delay)
        return result

    @server.on("request-ticket")
    async def request_ticket(client: Client, data: Any) -> dict[str, Any]:
        return await answer(await server.update(take, secrets.token_hex(8), sender=client))

    @server.on("next-desktop-ticket")
    async def next_ticket(client: Client, data: Any) -> dict[str, Any] | None:
        agent, desktop = desk_of(data)
        return await answer(await server.update(call, {"agent": agent, "desktop": desktop}, sender=client))

    @server.route("/last")
    def last(request: Any) -> tuple[int, str, bytes]:
        body = json.dumps({"ok": True, "lastOnes": server.state.last()}, ensure_ascii=False).encode()
        return 200, "application/json", body

    return server
