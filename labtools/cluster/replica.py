"""An event server's app, replicated: pushes with offsets, and recovery for clients that reconnect.

``Replicated`` keeps the app's machine the same on every node; ``Replica`` pushes what each
applied entry says to this node's own clients, every push carrying the entry's ``offset`` and
the log's ``epoch`` (PROTOCOL.md, "Several nodes, offsets and recovery"). A client that
reconnects, to this node or another, emits ``resume`` with the last ones it got:

* a stateless app (minichat) replays the pushes it missed from the recent ``tail`` (the same
  entries the log keeps), in order, or answers ``too-old`` when they were trimmed;
* an app whose pushes are its state (bands, tickets, map) sends the current state once;
* another epoch (an embedded server restarted, Redis lost its data) is ``too-old``: the gap is
  said, never silently skipped.

A new connection of a stateless app is told where the stream stands (``position``), so that a
client that hears nothing before its connection drops can still resume from there.
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from collections.abc import Awaitable, Iterable
from typing import Any

from ..events import Client, EventError, EventServer
from ..events.frames import dumps
from ..events.server import require
from .log import START, Log, Offset, Opened, format_offset, parse_offset
from .replicated import Applied, Machine, Push, Replicated, make_log

__all__ = ["Applied", "Broadcasts", "Push", "Replica", "make_log"]

MAX_EPOCH = 64
CLOSE_FELL_BEHIND = 1013  # "try again later": the node missed entries its clients must get elsewhere


class Broadcasts:
    """The machine of an app with no state, only messages to everyone (the mini chat): each
    entry is one event pushed to every client, on every node, in the log's order."""

    def apply(self, command: dict[str, Any]) -> Applied:
        return Applied(pushes=[Push(command["event"], command["data"])])

    def welcome(self) -> list[tuple[str, Any]]:
        return []

    def snapshot(self) -> None:
        return None

    def restore(self, data: Any) -> None:
        """Nothing to restore: the messages themselves are the log."""


class Replica(Replicated):
    """Runs ``machine`` on ``server`` over ``log``: submit, apply in order, push, resume."""

    def __init__(self, server: EventServer, machine: Machine, log: Log, *, node: str | None = None,
                 replay: int = 0, snapshot_every: int = 500) -> None:
        """``replay``: pushes kept for clients that resume (a stateless app's retention)."""
        super().__init__(machine, log, node=node, snapshot_every=snapshot_every, errors=server.errors)
        self.server = server
        self.replay = replay
        self.tail: deque[tuple[Offset, str, str]] = deque()  # (offset, event, frame text)
        self.floor: Offset = START  # the newest offset no longer kept: resuming from before it is too old
        self.ahead: dict[Client, Offset] = {}  # clients that saw more on another node than this one has applied
        server.starting(self.open)
        server.closed(self.close)
        server.connected(self.welcome)
        server.disconnected(lambda client: self.ahead.pop(client, None))
        server.on("resume")(self.resume)

    async def open(self) -> None:
        await self.join(tail=self.replay)

    def joined(self, opened: Opened) -> None:
        """Keep the log's recent entries for replay, in order, before any later one is pushed."""
        for offset, entry in opened.tail:
            self._remember(offset, self.machine.apply(entry["cmd"]).pushes)
        if not opened.complete:  # older entries were trimmed: a client must have seen the oldest kept one
            self.floor = opened.tail[0][0] if opened.tail else self.offset

    def gap(self, offset: Offset) -> None:
        """This node missed entries before ``offset``: its clients missed them too. Nobody may
        resume from before it here (``too-old``), and every client is closed with 1013 (try
        again later) so that it reconnects and resumes, perhaps on a node that has them all."""
        super().gap(offset)
        self.tail.clear()
        self.floor = offset
        for client in list(self.server.clients.values()):
            self.server.close_soon(client, CLOSE_FELL_BEHIND, "this node fell behind: reconnect and resume")

    def reset(self, state: Any) -> None:
        """The state was restored from the log (another epoch, or this node fell behind what it
        keeps): the old tail's offsets mean nothing now."""
        super().reset(state)
        self.tail.clear()
        self.ahead.clear()
        self.floor = START

    def submit(self, client: Client, command: dict[str, Any]) -> Awaitable[Any]:  # type: ignore[override]
        """Append ``command`` (from ``client``) to the log; what applying it on this node gave."""
        return super().submit(client.id, command)

    async def broadcast(self, client: Client, event: str, data: Any) -> None:
        """Emit ``event`` to every client of every node (a ``Broadcasts`` app), through the log."""
        await self.submit(client, {"event": event, "data": data})

    def on_applied(self, offset: Offset, applied: Applied, origin: int | None) -> None:
        client = self.server.clients.get(origin) if origin is not None else None
        texts = [self._send(push, offset, client) for push in applied.pushes]
        if self.replay:
            self._keep(offset, applied.pushes, texts)

    # ----- pushing ------------------------------------------------------------------------

    def frame(self, event: str, data: Any, offset: Offset) -> str:
        return dumps({"event": event, "data": data, "offset": format_offset(offset), "epoch": self.log.epoch})

    def _send(self, push: Push, offset: Offset, origin: Client | None) -> str:
        server = self.server
        text = self.frame(push.event, push.data, offset)
        targets: Iterable[Client] = server.rooms.get(push.room, ()) if push.room else server.clients.values()
        if push.not_room is not None or (push.not_origin and origin is not None) or self.ahead:
            targets = [c for c in targets if self._wants(c, push, origin, offset)]
        server.send_text(targets, push.event, text)
        return text

    def _wants(self, client: Client, push: Push, origin: Client | None, offset: Offset) -> bool:
        if push.not_room is not None and push.not_room in client.rooms:
            return False
        if push.not_origin and client is origin:
            return False
        seen = self.ahead.get(client)
        if seen is None:
            return True
        if seen >= offset:  # it got this one on another node already
            return False
        del self.ahead[client]
        return True

    def _keep(self, offset: Offset, pushes: list[Push], texts: list[str]) -> None:
        for push, text in zip(pushes, texts, strict=True):
            if push.room is None and push.not_room is None:
                self.tail.append((offset, push.event, text))
        while len(self.tail) > self.replay:
            self.floor = self.tail.popleft()[0]

    def _remember(self, offset: Offset, pushes: list[Push]) -> None:
        """Keep an entry applied before this node started, for replay only (it is not pushed)."""
        self._keep(offset, pushes, [self.frame(p.event, p.data, offset) for p in pushes])

    # ----- connections --------------------------------------------------------------------

    def welcome(self, client: Client) -> None:
        """A new connection gets the state (or, stateless, where the stream stands)."""
        for event, data in self._current():
            self.server.send_text([client], event, self.frame(event, data, self.offset))

    def _current(self) -> list[tuple[str, Any]]:
        if self.stateless:
            return [("position", {"offset": format_offset(self.offset), "epoch": self.log.epoch})]
        return self.machine.welcome()

    def resume(self, client: Client, data: Any) -> dict[str, Any]:
        """``resume {"offset", "epoch"}``: send what ``client`` missed, then say how many."""
        require(isinstance(data, dict), 'resume takes {"offset": STR, "epoch": STR}')
        offset, epoch = parse_offset(data.get("offset")), data.get("epoch")
        require(offset is not None, "'offset' must be an offset this server sent (\"MS-SEQ\")")
        require(isinstance(epoch, str) and 0 < len(epoch) <= MAX_EPOCH, "'epoch' must be the epoch this server sent")
        assert offset is not None
        if epoch != self.log.epoch:
            raise EventError("too-old", "the server's history restarted since (another epoch): "
                             "what you missed cannot be filled; start from the current state")
        if self.stateless:
            missed = self._replay(client, offset)
        elif offset < self.offset:
            missed = len(self._current())
            self.welcome(client)
        else:
            missed = 0
        position = max(offset, self.offset)
        return {"missed": missed, "offset": format_offset(position), "epoch": self.log.epoch}

    def _replay(self, client: Client, offset: Offset) -> int:
        """Send ``client`` the kept pushes after ``offset``, in order; ``too-old`` if some are gone."""
        if offset > self.offset:  # another node is ahead of this one: skip what it already got
            self.ahead[client] = offset
            return 0
        if offset < self.floor:
            raise EventError("too-old", "the messages after that offset are no longer kept (the server keeps the "
                             f"last {self.replay}): some are missing; start from the current state")
        start = bisect.bisect_right([kept[0] for kept in self.tail], offset)
        missed = list(itertools.islice(self.tail, start, None))
        for _offset, event, text in missed:
            self.server.send_text([client], event, text)
        return len(missed)
