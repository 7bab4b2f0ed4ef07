"""Pushing ``personal-message`` with offsets, and ``resume``: recovering what a socket missed.

Why the message id is the offset: the database already numbers every message in the order
it was committed, so "what did I miss?" is "what is stored after the last id I was sent?",
one indexed query, with nothing else to keep. The epoch (``Store.epoch``, drawn once per
database) names that numbering: a client holding an offset of another database is told
``too-old`` instead of being sent a wrong answer.

Why each socket remembers where its live pushes began (``covered``): a socket receives, live,
every message of its user with an id above the node's delivery cursor at the moment it
authenticated. A ``resume`` then only needs what lies between the client's offset and that
point; anything above it came (or will come) live. So no push reaches one socket twice, even
when a message is committed while the replay is being read, and no lock is needed.

Why in id order: a client keeps the last offset it received, so a socket must never be sent a
newer message before an older one it has not seen yet. With one node, messages are pushed in
the order their commits answer (group commit answers a batch in order). With several nodes,
``nodes.SharedMailbox`` keeps the same promise with a delivery cursor.
"""

from __future__ import annotations

import re
from typing import Any

from ...events import Client, EventError, EventServer
from ...events.frames import dumps
from ...events.server import require
from .presence import Presence
from .store import MAX_ID, Store

#: The most messages one ``resume`` replays; a longer gap is ``too-old`` (load history instead).
MAX_RESUME = 1000
OFFSET = re.compile(r"[0-9]{1,19}", re.ASCII)
BAD_OFFSET = f"'offset' must be a message id as a decimal string (0 to {MAX_ID})"
TOO_MANY = (f"more than {MAX_RESUME} messages were missed: load the history of each conversation "
            "(history with 'after') instead")
OTHER_EPOCH = ("that offset belongs to another life of this chat's database (another epoch): "
               "load the history of each conversation again")


def parse_offset(value: Any) -> int:
    """An offset as an integer, checked before any query: a decimal string from 0 to 2^63 - 1."""
    require(isinstance(value, str) and OFFSET.fullmatch(value) is not None and int(value) <= MAX_ID, BAD_OFFSET)
    return int(value)


class Mailbox:
    """Delivers stored messages to this node's sockets, each once, in id order, with offsets.

    ``cursor`` is the largest id delivered (or known to concern nobody here). This class is the
    one-node mailbox: every message is stored here, so it is pushed as soon as it is stored.
    """

    def __init__(self, server: EventServer, presence: Presence, store: Store) -> None:
        self.server = server
        self.presence = presence
        self.store = store
        self.cursor = 0
        self.epoch = ""
        self.replayed = 0

    async def open(self) -> None:
        """Start after what the database holds: older messages are for ``resume`` and ``history``."""
        self.epoch = self.store.epoch
        self.cursor = await self.store.last_id()

    async def close(self) -> None:
        """Nothing runs in the background with one node."""

    def frame(self, message: dict[str, Any]) -> str:
        """PROTOCOL.md's push with its two top-level additions: ``offset`` and ``epoch``."""
        return dumps({"event": "personal-message", "data": message, "offset": str(message["id"]), "epoch": self.epoch})

    def attached(self, client: Client) -> None:
        """A socket became a user's: it gets, live, every message above the cursor from now on."""
        client.state["covered"] = self.cursor
        client.state["offset"] = self.cursor

    def stored(self, message: dict[str, Any]) -> None:
        """A message this node just stored (new, not a retry): deliver it."""
        self.deliver(message)

    def deliver(self, message: dict[str, Any]) -> None:
        """Push ``message`` to the sender's and the recipient's sockets on this node."""
        id = message["id"]
        if id <= self.cursor:  # delivered already (a catch-up was faster)
            return
        self.cursor = id
        targets = {*self.presence.sockets(message["from"]), *self.presence.sockets(message["to"])}
        if targets:
            for client in targets:
                client.state["offset"] = id
            self.server.send_text(targets, "personal-message", self.frame(message))

    async def resume(self, client: Client, uid: str, data: Any) -> dict[str, Any]:
        """Replay, in order, what this socket missed since ``offset``; acknowledge how much and where."""
        require(isinstance(data, dict), 'resume takes {"offset": STR, "epoch": STR}')
        offset = parse_offset(data.get("offset"))
        epoch = data.get("epoch")
        require(isinstance(epoch, str) and 0 < len(epoch) <= 64, "'epoch' must be the epoch string sent with an offset")
        if epoch != self.epoch:
            raise EventError("too-old", OTHER_EPOCH)
        covered = client.state["covered"]
        missed: list[dict[str, Any]] = []
        if offset < covered:
            missed = await self.store.since(uid, offset, covered, MAX_RESUME + 1)
            if len(missed) > MAX_RESUME:
                raise EventError("too-old", TOO_MANY)
            client.state["covered"] = offset
        for message in missed:
            self.server.send_text([client], "personal-message", self.frame(message))
        self.replayed += len(missed)
        latest = max(offset, client.state["offset"], missed[-1]["id"] if missed else 0)
        client.state["offset"] = latest
        return {"missed": len(missed), "offset": str(latest), "epoch": self.epoch}
