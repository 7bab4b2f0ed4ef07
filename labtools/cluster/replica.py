"""An app's state on one node, kept the same as on every other node by applying one log in order.

An app that runs on several nodes is written as a *machine*: ``apply(command)`` changes its
state and says what to push to whom (``Applied``), deterministically, so that every node that
applies the same commands in the same order holds the same state and pushes the same frames.
A handler validates a frame at the edge and hands the command to ``Replica.submit``, which
appends it to the log and waits until this node has applied it: the acknowledgement carries
what *the log's order* decided (the ticket number, whether the band still existed).

Every push carries the entry's ``offset`` and the log's ``epoch`` (PROTOCOL.md, "Several nodes,
offsets and recovery"). A client that reconnects, to this node or another, emits ``resume``
with the last ones it got:

* a stateless app (minichat) replays the pushes it missed from the recent ``tail`` (the same
  entries the log keeps), in order, or answers ``too-old`` when they were trimmed;
* an app whose pushes are its state (bands, tickets, map) sends the current state once;
* another epoch (an embedded server restarted, Redis lost its data) is ``too-old``: the gap is
  said, never silently skipped.

A new connection of a stateless app is told where the stream stands (``position``), so that a
client that hears nothing before its connection drops can still resume from there.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import os
import secrets
import socket
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..events import Client, EventError, EventServer
from ..events.frames import dumps
from ..events.server import require
from .log import START, Log, MemoryLog, Offset, Opened, Unavailable, format_offset, parse_offset

#: Seconds a node waits to see its own entry come back from the log before telling the client
#: it does not know whether the change was made (the broker took it, then went away).
APPLY_TIMEOUT = 10.0
#: After a failed append, seconds to wait in case the broker took the entry but its reply was lost.
GRACE = 1.0
MAX_EPOCH = 64


@dataclass
class Push:
    """One frame to send after an entry is applied: to everyone, one room, or all but some."""

    event: str
    data: Any
    room: str | None = None  # only this room's members
    not_room: str | None = None  # everyone but this room's members
    not_origin: bool = False  # everyone but the client whose command it was (on its node)


@dataclass
class Applied:
    """What applying one command did: the acknowledgement's data and the frames to push."""

    result: Any = None
    pushes: list[Push] = field(default_factory=list)


class Machine(Protocol):
    """An app's state as a deterministic machine (``BandBoard``, ``TicketQueue``, ...)."""

    def apply(self, command: dict[str, Any]) -> Applied:
        """Change the state (or raise ``EventError`` and change nothing)."""
        ...

    def welcome(self) -> list[tuple[str, Any]]:
        """The frames a new connection gets: the current state (none for a stateless app)."""
        ...

    def snapshot(self) -> Any:
        """The state as JSON data (None: a stateless app, nothing to keep)."""
        ...

    def restore(self, data: Any) -> None: ...


def default_node() -> str:
    """A name for this node: host, process and a random suffix (a restarted process is new)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


def make_log(app: str, broker: str | None, *, keep: int) -> Log:
    """The embedded ``MemoryLog`` without a broker; a ``RedisLog`` (imported only then) with one."""
    if broker is None:
        return MemoryLog()
    from .redis_log import RedisLog

    return RedisLog(broker, app, keep=keep)


class Replica:
    """Runs ``machine`` on ``server`` over ``log``: submit, apply in order, push, resume."""

    def __init__(self, server: EventServer, machine: Machine, log: Log, *, node: str | None = None,
                 replay: int = 0, snapshot_every: int = 500) -> None:
        """``replay``: pushes kept for clients that resume (a stateless app's retention)."""
        self.server = server
        self.machine = machine
        self.log = log
        self.node = node or default_node()
        self.replay = replay
        self.snapshot_every = snapshot_every
        self.stateless = machine.snapshot() is None
        self.offset: Offset = START
        self.tail: deque[tuple[Offset, str, str]] = deque()  # (offset, event, frame text)
        self.floor: Offset = START  # the newest offset no longer kept: resuming from before it is too old
        self.ahead: dict[Client, Offset] = {}  # clients that saw more on another node than this one has applied
        self.applied = 0
        self._waiting: dict[int, asyncio.Future] = {}
        self._seq = itertools.count(1)
        self._saving: set[asyncio.Task] = set()
        server.starting(self.open)
        server.closed(self.close)
        server.connected(self.welcome)
        server.disconnected(lambda client: self.ahead.pop(client, None))
        server.on("resume")(self.resume)

    # ----- the log ------------------------------------------------------------------------

    async def open(self) -> None:
        initial = None if self.stateless else self.machine.snapshot()
        opened: Opened = await self.log.open(initial, self._apply, tail=self.replay,  # type: ignore[call-arg]
                                             **self._reset_hooks())
        if opened.state is not None:
            self.machine.restore(opened.state)
        for offset, entry in opened.tail:
            self._remember(offset, self.machine.apply(entry["cmd"]).pushes)
        self.offset = max(self.offset, opened.offset)
        if not opened.complete:  # older entries were trimmed: a client must have seen the oldest kept one
            self.floor = opened.tail[0][0] if opened.tail else self.offset

    def _reset_hooks(self) -> dict[str, Any]:
        """What a ``RedisLog`` needs to re-seed a Redis that lost its data (nothing for memory)."""
        if isinstance(self.log, MemoryLog):
            return {}
        return {"state_now": self.machine.snapshot, "reset": self._reset}

    def _reset(self, state: Any) -> None:
        """The log restarted (another epoch): take its state; the old tail's offsets mean nothing now."""
        if state is not None:
            self.machine.restore(state)
        self.tail.clear()
        self.ahead.clear()
        self.floor = START
        self.offset = START

    async def close(self) -> None:
        for waiting in self._waiting.values():
            waiting.cancel()
        for task in list(self._saving):
            with contextlib.suppress(Exception):
                await task
        await self.log.aclose()

    async def submit(self, client: Client, command: dict[str, Any]) -> Any:
        """Append ``command`` to the log and return what applying it on this node gave.

        Raises the ``EventError`` the machine raised (nothing changed), or ``unavailable`` when
        the broker could not take it, or when it did not come back in time.
        """
        seq = next(self._seq)
        applied = self._waiting[seq] = asyncio.get_running_loop().create_future()
        entry = {"n": self.node, "s": seq, "c": client.id, "cmd": command}
        try:
            try:
                await self.log.append(entry)
            except Unavailable as error:
                try:  # the broker may have taken it and lost only its reply: it then comes back
                    return await asyncio.wait_for(asyncio.shield(applied), GRACE)
                except TimeoutError:
                    raise EventError("unavailable", f"{error}; nothing was changed: try again") from None
            try:
                return await asyncio.wait_for(asyncio.shield(applied), APPLY_TIMEOUT)
            except TimeoutError:
                raise EventError("unavailable", "the broker took the change but this node lost sight of it: "
                                 "it may have been made; check before retrying") from None
        finally:
            self._waiting.pop(seq, None)

    def _apply(self, offset: Offset, entry: dict[str, Any]) -> None:
        """Apply one entry of the log (every node, in order) and push what it says."""
        mine = entry.get("n") == self.node
        waiting = self._waiting.get(entry.get("s")) if mine else None  # type: ignore[arg-type]
        origin = self.server.clients.get(entry.get("c")) if mine else None  # type: ignore[arg-type]
        self.offset = offset
        try:
            applied = self.machine.apply(entry["cmd"])
        except EventError as error:  # the same refusal on every node: nothing changed anywhere
            if waiting is not None and not waiting.done():
                waiting.set_exception(error)
            return
        except Exception as exc:  # a bug must not stop the log: this entry is skipped everywhere alike
            self.server.errors.append(f"apply {entry.get('cmd')!r}: {exc!r}")
            if waiting is not None and not waiting.done():
                waiting.set_exception(EventError("internal", "the server failed to apply this change"))
            return
        texts = [self._send(push, offset, origin) for push in applied.pushes]
        if self.replay:
            self._keep(offset, applied.pushes, texts)
        if waiting is not None and not waiting.done():
            waiting.set_result(applied.result)
        self.applied += 1
        if not self.stateless and self.applied % self.snapshot_every == 0:
            task = asyncio.get_running_loop().create_task(self.log.save_snapshot(self.machine.snapshot(), offset))
            self._saving.add(task)
            task.add_done_callback(self._saving.discard)

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
