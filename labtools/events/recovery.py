"""Pushes with offsets, and recovery for clients that reconnect: the server's log at work.

A server with changes (``@server.change``) or recoverable events (``recoverable=(...)``) runs a
``Recovery``: its ``Changes`` over the adapter's log (``replicated.Replicated``), applied in the
log's order on every node, each node pushing what an entry says to its own clients. Every push
of a recoverable event carries the entry's ``offset`` and the log's ``epoch`` (PROTOCOL.md,
"Several nodes, offsets and recovery"). A client that reconnects, to this node or another,
emits ``resume`` with the last ones it got:

* a stateless app (no ``state``: the mini chat) replays the pushes it missed from the recent
  ``tail`` (the last ``REPLAY`` entries), in order, or answers ``too-old`` when they were trimmed;
* an app with state (bands, tickets, map) sends its welcome again (``@server.welcome``: the
  current state), once;
* another epoch (an embedded server restarted, Redis lost its data) is ``too-old``: the gap is
  said, never silently skipped.

A new connection of a stateless app is told where the stream stands (``position``), so that a
client that hears nothing before its connection drops can still resume from there.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .changes import Changes
from .connection import Client
from .frames import EventError, dumps, require
from .log import START, Log, Offset, Opened, format_offset, parse_offset
from .replicated import Applied, Push, Replicated
from .rooms import Rooms

MAX_EPOCH = 64
#: An offset's first part is a time in ms (Redis Stream ids): one more than a minute ahead of
#: this clock was sent by no server, and would make the socket skip every push until then.
FUTURE_MS = 60_000
CLOSE_FELL_BEHIND = 1013  # "try again later": the node missed entries its clients must get elsewhere
#: Seconds over which a node that fell behind closes its clients (so they do not all come back at once).
GAP_SPREAD = 2.0
#: Pushes a stateless app keeps for clients that resume; one that missed more is told ``too-old``.
REPLAY = 1000
#: Entries the shared log keeps: more than a client may resume, so that a node that falls a few
#: seconds behind under load catches up from the log instead of losing its place.
LOG_KEEP = 10 * REPLAY


class SendText(Protocol):
    """``EventServer.send_text``: one encoded frame to some clients (``at_once``: a broadcast)."""

    def __call__(self, targets: Iterable[Client], event: str, text: str, *, at_once: bool = False) -> int: ...


class Recovery(Replicated):
    """An event server's changes over ``log``: apply in order, push with offsets, resume."""

    def __init__(self, changes: Changes, log: Log, *, node: str, clients: dict[int, Client], rooms: Rooms[Client],
                 send: SendText, recoverable: frozenset[str],
                 welcome: Callable[[Client], int], errors: list[str]) -> None:
        """``clients`` and ``rooms``: this node's connections; ``send(targets, event, text)``
        writes a frame to some of them (``EventServer.send_text``); ``welcome(client)`` sends the
        app's welcome (its state) and says how many frames that was: sent again on resume."""
        super().__init__(changes, log, node=node, errors=errors)
        self.clients = clients
        self.rooms = rooms
        self.send = send
        self.recoverable = recoverable
        self.app_welcome = welcome
        self.replay = REPLAY if self.stateless else 0
        self.tail: deque[tuple[Offset, str, str]] = deque()  # (offset, event, frame text)
        self.floor: Offset = START  # the newest offset no longer kept: resuming from before it is too old
        self.ahead: dict[Client, Offset] = {}  # clients that saw more on another node than this one has applied
        self.cut: set[Client] = set()  # clients being closed after a gap: nothing more is pushed to them

    async def open(self) -> None:
        await self.join(tail=self.replay)

    def joined(self, opened: Opened) -> None:
        """Keep the log's recent entries for replay, in order, before any later one is pushed."""
        for offset, entry in opened.tail:
            self._remember(offset, self.machine.apply(entry["cmd"], None).pushes)
        if not opened.complete:  # older entries were trimmed: a client must have seen the oldest kept one
            self.floor = opened.tail[0][0] if opened.tail else self.offset

    def gap(self, offset: Offset) -> None:
        """This node missed entries before ``offset``: its clients missed them too. Nobody may
        resume from before it here (``too-old``), and every client is closed with 1013 (try
        again later) so that it reconnects and resumes, perhaps on a node that has them all.

        Nothing from after the gap reaches them first (``cut``: their last offset stays before
        it), and the closes are spread over ``GAP_SPREAD`` seconds: ten thousand clients told
        to come back at the same instant would come back at the same instant."""
        super().gap(offset)
        self.tail.clear()
        self.floor = offset
        clients = list(self.clients.values())
        self.cut.update(clients)
        loop = asyncio.get_running_loop()
        for index, client in enumerate(clients):
            loop.call_later(GAP_SPREAD * index / len(clients), client.close, CLOSE_FELL_BEHIND,
                            "this node fell behind: reconnect and resume")

    def reset(self, state: Any) -> None:
        """The state was restored from the log (another epoch, or this node fell behind what it
        keeps): the old tail's offsets mean nothing now."""
        super().reset(state)
        self.tail.clear()
        self.ahead.clear()
        self.floor = START

    def forget(self, client: Client) -> None:
        self.ahead.pop(client, None)
        self.cut.discard(client)

    def on_applied(self, offset: Offset, applied: Applied, origin: int | None) -> None:
        for push in applied.pushes:
            text = self._send(push, offset)
            if self.replay and push.room is None and push.event in self.recoverable:
                self._keep(offset, push.event, text)

    # ----- pushing ------------------------------------------------------------------------

    def frame(self, event: str, data: Any, offset: Offset | None = None) -> str:
        """A push of ``event``: with an offset and the epoch when the event is recoverable."""
        if event not in self.recoverable:
            return dumps({"event": event, "data": data})
        at = self.offset if offset is None else offset
        return dumps({"event": event, "data": data, "offset": format_offset(at), "epoch": self.log.epoch})

    def _send(self, push: Push, offset: Offset) -> str:
        text = self.frame(push.event, push.data, offset)
        targets: Iterable[Client] = self.clients.values() if push.room is None else self.rooms.members(push.room)
        if push.exclude is not None or self.ahead or self.cut:
            cut = self.cut
            targets = [c for c in targets if c is not push.exclude and c not in cut and self._not_seen(c, offset)]
        self.send(targets, push.event, text, at_once=True)  # a broadcast: written at once
        return text

    def _not_seen(self, client: Client, offset: Offset) -> bool:
        seen = self.ahead.get(client)
        if seen is None:
            return True
        if seen >= offset:  # it got this one on another node already
            return False
        del self.ahead[client]
        return True

    def _keep(self, offset: Offset, event: str, text: str) -> None:
        self.tail.append((offset, event, text))
        while len(self.tail) > self.replay:
            self.floor = self.tail.popleft()[0]

    def _remember(self, offset: Offset, pushes: list[Push]) -> None:
        """Keep an entry applied before this node started, for replay only (it is not pushed)."""
        for push in pushes:
            if push.room is None and push.event in self.recoverable:
                self._keep(offset, push.event, self.frame(push.event, push.data, offset))

    # ----- connections --------------------------------------------------------------------

    def welcome(self, client: Client) -> int:
        """A new connection gets the app's welcome (or, stateless, where the stream stands);
        returns how many frames that was."""
        sent = 0
        if self.stateless:
            client.since = self.offset  # every push after this one reaches it live
            position = {"offset": format_offset(self.offset), "epoch": self.log.epoch}
            sent = self.send([client], "position", dumps({"event": "position", "data": position, **position}))
        return sent + self.app_welcome(client)

    def resume(self, client: Client, data: Any) -> dict[str, Any]:
        """``resume {"offset", "epoch"}``: send what ``client`` missed, then say how many."""
        require(isinstance(data, dict), 'resume takes {"offset": STR, "epoch": STR}')
        offset, epoch = parse_offset(data.get("offset")), data.get("epoch")
        require(offset is not None, "'offset' must be an offset this server sent (\"MS-SEQ\")")
        require(isinstance(epoch, str) and 0 < len(epoch) <= MAX_EPOCH, "'epoch' must be the epoch this server sent")
        assert offset is not None
        require(offset[0] <= time.time() * 1000 + FUTURE_MS, "'offset' is from the future: no server sent it")
        if epoch != self.log.epoch:
            raise EventError("too-old", "the server's history restarted since (another epoch): "
                             "what you missed cannot be filled; start from the current state")
        if self.stateless:
            missed = self._replay(client, offset)
        elif offset < self.offset:
            missed = self.app_welcome(client)
        else:
            missed = 0
        position = max(offset, self.offset)
        return {"missed": missed, "offset": format_offset(position), "epoch": self.log.epoch}

    def _replay(self, client: Client, offset: Offset) -> int:
        """Send ``client`` the kept pushes after ``offset`` that this connection was not sent
        already, in order; ``too-old`` if some are gone.

        What this connection got live (after ``client.since``) or by an earlier ``resume`` is
        never sent again: resuming the same socket over and over replays nothing twice, so
        the replays one connection can cause are bounded by what the server keeps.
        """
        if offset > self.offset:  # another node is ahead of this one: skip what it already got
            self.ahead[client] = offset
            return 0
        if offset < self.floor:
            raise EventError("too-old", "the messages after that offset are no longer kept (the server keeps the "
                             f"last {self.replay}): some are missing; start from the current state")
        until = self.offset if client.since is None else client.since
        if offset >= until:
            return 0
        offsets = [kept[0] for kept in self.tail]
        start, stop = bisect.bisect_right(offsets, offset), bisect.bisect_right(offsets, until)
        missed = list(itertools.islice(self.tail, start, stop))
        for _offset, event, text in missed:
            self.send([client], event, text)
        client.since = offset
        return len(missed)

