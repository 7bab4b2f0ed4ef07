"""Frames held until the end of a turn of the event loop: one write per socket per turn.

A write to a socket is a system call, and on a real network (or loopback) the costliest step
of sending a small frame. In one turn of the loop a socket is often sent several frames from
several places: in the chat, the acknowledgement of its user's message and the push of it,
written by that message's handler, and the push of the partner's message, written by the
partner's handler when both messages were stored by the same batch. Held until the turn ends,
they leave together: one system call instead of two or three.

The frames themselves wait in the ``Client`` (``out``; they count against its buffer bound);
``TurnWrites`` only remembers which clients hold some and writes them when the turn is over.
Order is kept: anything that must write to the socket directly (a close frame, a pong,
``Connection.send``) first flushes what the client holds.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Holder(Protocol):
    """What ``TurnWrites`` asks of a client (a ``Client``)."""

    out: list[bytes] | None

    def flush(self) -> None: ...


class TurnWrites:
    """The clients holding frames until this turn of the event loop ends, and the flush then."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: list[Holder] = []

    def hold(self, client: Holder) -> None:
        """``client`` holds frames (in ``out``): write them when this turn ends. A client held
        twice in one turn is written once (its second flush finds nothing)."""
        if not self._held:
            asyncio.get_running_loop().call_soon(self.flush)  # once per turn, not per frame
        self._held.append(client)

    def release(self, client: Holder) -> None:
        """A handler of ``client``'s, which held its frames while it ran, has finished: what it
        wrote leaves with whatever else the client is sent this turn."""
        if client.out:
            self.hold(client)
        else:
            client.flush()  # nothing held: the client is uncorked, and nothing is written

    def flush(self) -> None:
        """The turn has ended: one write per client (a client flushed meanwhile holds nothing)."""
        held, self._held = self._held, []
        for client in held:
            client.flush()
