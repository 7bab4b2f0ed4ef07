"""Delivering stored messages (``personal-message`` pushes with offsets), and ``resume``.

Why the store stays SQLite, one file shared by the nodes of one machine: the nodes of a course
deployment run on one machine (the point is several processes behind a front door, not several
machines), and SQLite in WAL mode lets many processes read while one writes; a writer waits
for the lock (``busy_timeout``) rather than failing. SQLite admits one write transaction at a
time, and ids are drawn inside it, so ids increase in commit order across processes: when a
node sees id N committed, every smaller id is committed too. That makes the database itself the
log of messages, with the id as the offset, and nothing else has to be kept in Redis. (Nodes on
several machines would need a database server, e.g. PostgreSQL, with the same two properties.)

So the bus only rings the bell (*"new message, id N"*); it never carries the message. The mailbox
keeps a delivery cursor and, when a bell rings, reads ``WHERE id > cursor ORDER BY id`` and
pushes each message to its own sockets of the sender and the recipient, in id order. A bell that
is lost (pub/sub is fire-and-forget) costs nothing: the next bell, a heartbeat (which carries its
node's cursor, ``cluster_presence``) or the catch-up after a reconnection reads the same rows.
The node where a message was stored pushes it at once when nothing older is missing (always so
on one node, where every message is stored here and answered in commit order), and skips it when
a catch-up read it first: a message reaches a socket at most once. One node runs the same code:
its bell reaches no one, and no bell ever rings for it.

Why the message id is the offset: "what did I miss?" is then "what is stored after the last id
I was sent?", one indexed query, with nothing else to keep. The epoch (``Store.epoch``, drawn
once per database) names that numbering: a client holding an offset of another database is told
``too-old`` instead of being sent a wrong answer.

Why each socket remembers where its live pushes began (``ChatSession.covered``): a socket
receives, live, every message of its user with an id above the delivery cursor at the moment it
authenticated. A ``resume`` then only needs what lies between the client's offset and that
point; anything above it came (or will come) live. So no push reaches one socket twice, even
when a message is committed while the replay is being read, and no lock is needed. Pushes go
out in id order, so a client that keeps the last offset it received has seen everything below.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from ... import runtime
from ...events import Bus, Client, EventError, EventServer, require
from ...events.frames import Json, dumps
from .presence import Presence
from .store import MAX_ID, Store

#: The most messages one ``resume`` replays; a longer gap is ``too-old`` (load history instead).
MAX_RESUME = 1000
#: Rows read by one catch-up query (then the next ones, until none is left).
CATCH_UP_ROWS = 1000
#: The bus channel of the bells: ``{"id": N}``, the id of a message just stored.
BELLS = "messages"
OFFSET = re.compile(r"[0-9]{1,19}", re.ASCII)
BAD_OFFSET = f"'offset' must be a message id as a decimal string (0 to {MAX_ID})"
TOO_MANY = (f"more than {MAX_RESUME} messages were missed: load the history of each conversation "
            "(history with 'after') instead")
FUTURE = "'offset' is past every message stored: no server sent it"
OTHER_EPOCH = ("that offset belongs to another life of this chat's database (another epoch): "
               "load the history of each conversation again")


def parse_offset(value: Any) -> int:
    """An offset as an integer, checked before any query: a decimal string from 0 to 2^63 - 1."""
    require(isinstance(value, str) and OFFSET.fullmatch(value) is not None and int(value) <= MAX_ID, BAD_OFFSET)
    return int(value)


class Mailbox:
    """Delivers stored messages to this node's sockets, each once, in id order, with offsets.

    ``cursor`` is the largest id delivered (or known to concern nobody here).
    """

    bus: Bus  # set by ``open``: the server's bus exists only once it starts

    def __init__(self, server: EventServer, presence: Presence, store: Store) -> None:
        self.server = server
        self.presence = presence
        self.store = store
        self.cursor = 0
        self.epoch = ""
        self._epoch = '""'
        self.replayed = 0
        self.catch_ups = 0
        self._catching: asyncio.Task | None = None
        #: Messages this node stored that came before an older one (``stored``): for one loop turn.
        self._held: dict[int, tuple[dict[str, Any], Json | None]] = {}
        self._again = False
        self._closed = False

    async def open(self, bus: Bus) -> None:
        """Start after what the database holds (older messages are for ``resume`` and ``history``),
        and listen for the bells of the other nodes."""
        self.epoch = self.store.epoch
        self._epoch = dumps(self.epoch)  # as every push carries it: encoded once
        self.cursor = await self.store.last_id()
        self.bus = bus
        bus.subscribe(BELLS, self._bell)
        bus.on_reconnect(self.wake)

    async def close(self) -> None:
        self._closed = True
        await runtime.cancel(self._catching)

    def frame(self, message: dict[str, Any], encoded: Json | None = None) -> str:
        """PROTOCOL.md's push with its two top-level additions: ``offset`` and ``epoch``.

        ``encoded``: the message as JSON already (the handler's acknowledgement carries the
        same text): spliced in, not encoded again."""
        data = encoded if encoded is not None else dumps(message)
        return f'{{"event":"personal-message","data":{data},"offset":"{message["id"]}","epoch":{self._epoch}}}'

    def attached(self, client: Client) -> None:
        """A socket became a user's: it gets, live, every message above the cursor from now on."""
        session = client.session
        session.covered = session.offset = self.cursor

    # ----- delivering ---------------------------------------------------------------------

    def stored(self, message: dict[str, Any], encoded: Json | None = None) -> None:
        """A message this node just stored (new, not a retry): ring the other nodes; push it here
        now unless an older message is still to be pushed. ``encoded``: see ``frame``.

        The handlers of one batch resume in the order their tasks were scheduled, which is not
        always id order (a handler whose task had not started when its batch was written runs
        before those waiting for it). A message that arrives early is held until the end of this
        loop turn, by which the older ones of its batch have come; only a gap that is still open
        then (another node's message) is read from the database (``wake``). Measured before this,
        under the peers' load (P=100): one push in six went through a catch-up read, encoded again."""
        id = message["id"]
        self.bus.post(BELLS, {"id": id})
        if id != self.cursor + 1:
            if not self._held:
                asyncio.get_running_loop().call_soon(self._gap_still_open)
            self._held[id] = (message, encoded)
            return
        self.deliver(message, encoded)
        held = self._held
        while held and self.cursor + 1 in held:
            self.deliver(*held.pop(self.cursor + 1))

    def _gap_still_open(self) -> None:
        """The turn is over and messages are still held: what lies before them is read from the
        database, which holds them too (the catch-up pushes each one once, in id order)."""
        if any(id > self.cursor for id in self._held):
            self.wake()
        self._held.clear()

    def deliver(self, message: dict[str, Any], encoded: Json | None = None) -> None:
        """Push ``message`` to the sender's and the recipient's sockets on this node."""
        id = message["id"]
        if id <= self.cursor:  # delivered already (a catch-up was faster)
            return
        self.cursor = id
        # A socket whose client said in ``resume`` that it holds this id already (it was sent
        # it by a node ahead of this one) is skipped: nothing reaches a connection twice.
        targets = [client for client in {*self.presence.sockets(message["from"]), *self.presence.sockets(message["to"])}
                   if client.session.offset < id]
        if targets:
            for client in targets:
                client.session.offset = id
            self.server.send_text(targets, "personal-message", self.frame(message, encoded))

    def _bell(self, message: dict[str, Any]) -> None:
        last = message.get("id")
        if type(last) is int and last > self.cursor:
            self.wake()

    def wake(self) -> None:
        """Read what is stored past the cursor (again, if a read is under way: it may be too early)."""
        if self._closed:
            return
        if self._catching is not None:
            self._again = True
            return
        self._catching = asyncio.get_running_loop().create_task(self._catch_up())

    async def _catch_up(self) -> None:
        try:
            while True:
                self._again = False
                self.catch_ups += 1
                rows = await self.store.after(self.cursor, CATCH_UP_ROWS)
                for message in rows:
                    self.deliver(message)  # skips what the cursor has passed meanwhile
                if len(rows) < CATCH_UP_ROWS and not self._again:
                    return
        except Exception as error:  # the store closing under it; the next bell tries again
            self.server.errors.append(f"catch-up: {error!r}")
        finally:
            self._catching = None

    # ----- resume -------------------------------------------------------------------------

    async def resume(self, client: Client, uid: str, data: Any) -> dict[str, Any]:
        """Replay, in order, what this socket missed since ``offset``; acknowledge how much and where."""
        require(isinstance(data, dict), 'resume takes {"offset": STR, "epoch": STR}')
        offset = parse_offset(data.get("offset"))
        epoch = data.get("epoch")
        require(isinstance(epoch, str) and 0 < len(epoch) <= 64, "'epoch' must be the epoch string sent with an offset")
        if epoch != self.epoch:
            raise EventError("too-old", OTHER_EPOCH)
        session = client.session
        if offset > max(session.offset, self.cursor) and offset > await self.store.last_id():
            raise EventError("invalid-data", FUTURE)
        missed: list[dict[str, Any]] = []
        if offset < session.covered:
            missed = await self.store.since(uid, offset, session.covered, MAX_RESUME + 1)
            if len(missed) > MAX_RESUME:
                raise EventError("too-old", TOO_MANY)
            session.covered = offset
        for message in missed:
            self.server.send_text([client], "personal-message", self.frame(message))
        self.replayed += len(missed)
        # A client ahead of this node (it was sent more by another node) stays where it is: the
        # pushes up to its offset, when this node catches up, are not sent to it (``deliver``).
        latest = max(offset, session.offset, missed[-1]["id"] if missed else 0)
        session.offset = latest
        return {"missed": len(missed), "offset": str(latest), "epoch": self.epoch}
