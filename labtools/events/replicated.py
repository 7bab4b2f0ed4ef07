"""A state machine kept the same on every node by applying one log in order (no I/O to clients).

An app that runs on several nodes is written as a *machine*: ``apply(command)`` changes its
state and says what to push to whom (``Applied``), deterministically, so that every node that
applies the same commands in the same order holds the same state. ``submit`` appends a command
to the log and waits until this node has applied it: the answer is what *the log's order*
decided (the ticket number, whether the band still existed, the message's id).

``recovery.Recovery`` adds what an event server needs on top (pushes with offsets, resume); the
polling server uses ``Replicated`` as it is, for its message store.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
from dataclasses import dataclass, field
from typing import Any, Protocol

from .frames import EventError
from .log import START, Log, Offset, Opened, Unavailable

#: Seconds a node waits to see its own entry come back from the log before telling the client
#: it does not know whether the change was made (the broker took it, then went away).
APPLY_TIMEOUT = 10.0
#: After a failed append, seconds to wait in case the broker took the entry but its reply was lost.
GRACE = 1.0


@dataclass
class Push:
    """One frame to send after an entry is applied: to everyone or one room, but ``exclude``.

    A push is made on each node as it applies the entry, so ``exclude`` is that node's own
    client (the sender, on the node it is connected to; None on the others).
    """

    event: str
    data: Any
    room: str | None = None  # only this room's members
    exclude: Any = None  # a client of this node that does not get it


@dataclass
class Applied:
    """What applying one command did: the answer to its sender, and the frames to push."""

    result: Any = None
    pushes: list[Push] = field(default_factory=list)


class Machine(Protocol):
    """An app's state as a deterministic machine (``BandBoard``, ``TicketQueue``, ...)."""

    def apply(self, command: dict[str, Any], origin: int | None) -> Applied:
        """Change the state (or raise ``EventError`` and change nothing). ``origin``: the id of
        the connection the command came from when it came from this node (else None)."""
        ...

    def snapshot(self) -> Any:
        """The state as JSON data (None: a stateless app, nothing to keep)."""
        ...

    def restore(self, data: Any) -> None: ...



class Replicated:
    """``machine`` over ``log``: commands in, applied in the log's order, answers out."""

    def __init__(self, machine: Machine, log: Log, *, node: str, snapshot_every: int = 500,
                 errors: list[str] | None = None) -> None:
        self.machine = machine
        self.log = log
        self.node = node
        self.snapshot_every = snapshot_every
        self.errors = errors if errors is not None else []
        self.stateless = machine.snapshot() is None
        self.offset: Offset = START
        self.applied = 0
        self._waiting: dict[int, asyncio.Future] = {}
        self._seq = itertools.count(1)
        self._saving: set[asyncio.Task] = set()

    async def join(self, *, tail: int = 0) -> Opened:
        """Open the log and restore the state it holds (a node that starts later catches up)."""
        initial = None if self.stateless else self.machine.snapshot()
        if self.stateless:
            opened = await self.log.open(initial, self._apply, tail=tail, gap=self.gap, report=self.errors.append)
        else:
            opened = await self.log.open(initial, self._apply, tail=tail, state_now=self.machine.snapshot,
                                         reset=self.reset, report=self.errors.append)
        if opened.state is not None:
            self.machine.restore(opened.state)
        self.offset = opened.offset
        self.joined(opened)
        await self.log.follow()
        return opened

    def joined(self, opened: Opened) -> None:
        """Called once the state is restored, before the log's later entries are applied."""

    def gap(self, offset: Offset) -> None:
        """A stateless app missed entries before ``offset`` (this node fell behind what the log
        keeps): nothing to restore, but what was missed must not pass in silence (``Recovery``)."""
        self.errors.append(f"fell behind the log: entries before {offset} were trimmed unread")

    def reset(self, state: Any) -> None:
        """The log restarted (Redis came back without its data) or this node fell behind what it
        keeps: take the state it holds now."""
        if state is not None:
            self.machine.restore(state)
        self.offset = START

    async def close(self) -> None:
        for waiting in self._waiting.values():
            waiting.cancel()
        for task in list(self._saving):
            with contextlib.suppress(Exception):
                await task
        await self.log.aclose()

    def submit_soon(self, origin: int | None, command: dict[str, Any]) -> asyncio.Future:
        """``submit`` without a coroutine to await: the future of what applying it gave.

        On a log that applies entries as they are appended (one process) this costs no task:
        the command is applied now and the future is already done. Otherwise the append runs
        as a task of its own, so that a caller that does not wait still gets it done.
        """
        if self.log.immediate:
            seq = next(self._seq)
            applied = self._waiting[seq] = asyncio.get_running_loop().create_future()
            try:
                self.log.append_now({"n": self.node, "s": seq, "c": origin, "cmd": command})
            finally:
                self._waiting.pop(seq, None)
            return applied
        return asyncio.ensure_future(self.submit(origin, command))

    async def submit(self, origin: int | None, command: dict[str, Any]) -> Any:
        """Append ``command`` to the log and return what applying it on this node gave.

        ``origin``: the id of the connection it came from (pushes may leave it out). Raises the
        ``EventError`` the machine raised (nothing changed), or ``unavailable`` when the broker
        could not take it, or when it did not come back in time.
        """
        if self.log.immediate:
            return await self.submit_soon(origin, command)
        seq = next(self._seq)
        applied = self._waiting[seq] = asyncio.get_running_loop().create_future()
        entry = {"n": self.node, "s": seq, "c": origin, "cmd": command}
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
        """Apply one entry of the log (every node, in order), then ``on_applied``."""
        mine = entry.get("n") == self.node
        waiting = self._waiting.get(entry.get("s")) if mine else None  # type: ignore[arg-type]
        origin = entry.get("c") if mine else None
        self.offset = offset
        try:
            applied = self.machine.apply(entry["cmd"], origin)
        except EventError as error:  # the same refusal on every node: nothing changed anywhere
            if waiting is not None and not waiting.done():
                waiting.set_exception(error)
            return
        except Exception as exc:  # a bug must not stop the log: this entry is skipped everywhere alike
            self.errors.append(f"apply {entry.get('cmd')!r}: {exc!r}")
            if waiting is not None and not waiting.done():
                waiting.set_exception(EventError("internal", "the server failed to apply this change"))
            return
        self.on_applied(offset, applied, origin)
        if waiting is not None and not waiting.done():
            waiting.set_result(applied.result)
        self.applied += 1
        if not self.stateless and self.applied % self.snapshot_every == 0:
            # A copy, frozen now: the save runs later, after more entries changed the live state.
            frozen = copy.deepcopy(self.machine.snapshot())
            task = asyncio.get_running_loop().create_task(self.log.save_snapshot(frozen, offset))
            self._saving.add(task)
            task.add_done_callback(self._saving.discard)

    def on_applied(self, offset: Offset, applied: Applied, origin: int | None) -> None:
        """What a node does once an entry is applied (``Recovery`` pushes; the default: nothing).

        ``origin``: the id of the connection the command came from, when it came from this node.
        """
