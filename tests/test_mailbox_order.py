"""The chat's mailbox pushes a node's own messages in id order without reading them back.

The handlers of one batch resume in the order their tasks were scheduled, which is not always id
order; ``Mailbox.stored`` holds a message that comes early until the end of the loop turn. Only
a gap still open then (another node's message) is read from the database (a catch-up).
"""

from __future__ import annotations

import asyncio
from typing import Any

import labtools
from labtools.apps.chat.mailbox import Mailbox
from labtools.apps.chat.session import ChatSession


class Socket:
    def __init__(self) -> None:
        self.session = ChatSession(uid="u")


class Pushes:
    """The server and the presence of one user ``u`` with one socket: what was pushed, in order."""

    def __init__(self) -> None:
        self.socket = Socket()
        self.pushed: list[int] = []
        self.errors: list[str] = []

    def sockets(self, uid: str) -> list[Any]:
        return [self.socket] if uid == "u" else []

    def send_text(self, targets: list[Any], event: str, text: str) -> int:
        self.pushed.append(int(text.split('"offset":"')[1].split('"')[0]))
        return len(targets)


class Rows:
    """The store: messages 1..N exist; ``after`` is the catch-up's read."""

    epoch = "e"

    def __init__(self, stored: int) -> None:
        self.stored = stored
        self.reads = 0

    async def last_id(self) -> int:
        return 0

    async def after(self, after: int, limit: int) -> list[dict[str, Any]]:
        self.reads += 1
        return [message(id) for id in range(after + 1, min(self.stored, after + limit) + 1)]


class Quiet:
    def post(self, channel: str, message: dict[str, Any]) -> None: ...
    def subscribe(self, channel: str, callback: Any) -> None: ...
    def on_reconnect(self, callback: Any) -> None: ...


def message(id: int) -> dict[str, Any]:
    return {"id": id, "from": "u", "to": "v", "message": f"m{id}", "createdAt": 0}


async def mailbox(stored: int) -> tuple[Mailbox, Pushes, Rows]:
    pushes, rows = Pushes(), Rows(stored)
    box = Mailbox(pushes, pushes, rows)  # type: ignore[arg-type]
    await box.open(Quiet())  # type: ignore[arg-type]
    return box, pushes, rows


def test_messages_of_one_batch_that_resume_out_of_order_are_pushed_in_order_without_a_read() -> None:
    async def scenario() -> tuple[list[int], int, int]:
        box, pushes, rows = await mailbox(stored=4)
        for id in (2, 3, 1, 4):  # 2 and 3 resume before 1, in one loop turn
            box.stored(message(id))
        await asyncio.sleep(0.01)
        assert not pushes.errors
        return pushes.pushed, rows.reads, box.catch_ups

    assert labtools.run(scenario()) == ([1, 2, 3, 4], 0, 0)


def test_a_gap_still_open_at_the_end_of_the_turn_is_read_from_the_database() -> None:
    """Message 1 was stored by another node (its bell has not come): 2 waits one turn, then the
    catch-up reads 1 and 2 and pushes each once, in order."""

    async def scenario() -> tuple[list[int], int]:
        box, pushes, rows = await mailbox(stored=2)
        box.stored(message(2))
        assert pushes.pushed == []
        await asyncio.sleep(0.05)
        assert not pushes.errors
        return pushes.pushed, rows.reads

    pushed, reads = labtools.run(scenario())
    assert pushed == [1, 2] and reads == 1
