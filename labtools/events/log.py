"""The log every node of an app applies in the same order: offsets, and the embedded ``MemoryLog``.

Why a log and not only a broadcast: when several processes serve one app, each keeps its own
copy of the state (the votes, the ticket queue, the markers). If each applied changes in the
order they reached *it*, two nodes could disagree (two desks each given "the oldest ticket").
Appending every change to one ordered log, and having every node apply the log in that order,
makes every copy the same (state-machine replication). The log's positions are the *offsets*
the clients see: a client that reconnects says the last one it got, and is sent what followed.

Two logs have one shape (``Log``): ``MemoryLog`` here, for one process with nothing installed,
and ``RedisLog`` (``labtools.cluster.redis_log``), a Redis Stream shared by every node.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

#: A position in a log: Redis Stream ids ``MS-SEQ`` compared as pairs of integers.
Offset = tuple[int, int]
START: Offset = (0, 0)

#: ``apply(offset, entry)``: called once per entry, in log order, on the loop.
Apply = Callable[[Offset, dict[str, Any]], None]


class Unavailable(Exception):
    """The log could not take an entry (the broker is unreachable): nothing was applied."""


def format_offset(offset: Offset) -> str:
    """The wire form of an offset: ``"MS-SEQ"``."""
    return f"{offset[0]}-{offset[1]}"


def parse_offset(text: Any) -> Offset | None:
    """``"12-0"`` -> ``(12, 0)``; None for anything else (refused at the edge, before any look-up)."""
    if not isinstance(text, str) or len(text) > 41:
        return None
    first, dash, second = text.partition("-")
    if not (dash and first.isascii() and first.isdigit() and second.isascii() and second.isdigit()):
        return None
    offset = (int(first), int(second))
    return offset if max(offset) < 2**64 else None


@dataclass
class Opened:
    """Where a node starts: ``state`` as of ``offset``, and the ``tail`` of entries up to that
    offset still in the log (for replaying to clients that resume); ``complete`` when nothing
    older than the tail was ever trimmed (so the tail goes back to the epoch's beginning)."""

    state: Any
    offset: Offset
    tail: list[tuple[Offset, dict[str, Any]]] = field(default_factory=list)
    complete: bool = True


class Log(Protocol):
    """What a replica needs of a log (see ``MemoryLog`` and ``cluster.redis_log.RedisLog``)."""

    epoch: str
    #: True when ``append_now`` applies an entry as it is appended (one process: no I/O to wait for).
    immediate: bool

    async def open(self, initial: Any, apply: Apply, *, tail: int = 0, state_now: Callable[[], Any] | None = None,
                   reset: Callable[[Any], None] | None = None, gap: Callable[[Offset], None] | None = None,
                   report: Callable[[str], None] | None = None) -> Opened:
        """Connect and say where to start (``initial`` when the log has no state yet), with up
        to ``tail`` recent entries. ``state_now`` and ``reset`` (a stateful app) or ``gap`` (a
        stateless one) are called when the history under a node is lost or it fell behind;
        ``report`` is told of entries skipped because they do not decode."""
        ...

    async def follow(self) -> Offset:
        """From the start ``open`` gave, call ``apply`` for every later entry, in order, for ever;
        returns once the entries already there are applied (the offset reached)."""
        ...

    async def append(self, entry: dict[str, Any]) -> None:
        """Add ``entry`` at the end; every node's ``apply`` sees it. Raises ``Unavailable``."""
        ...

    def append_now(self, entry: dict[str, Any]) -> None:
        """``append`` for an ``immediate`` log: applied before it returns (others: never called)."""
        ...

    def save_snapshot(self, state: Any, offset: Offset) -> Awaitable[None]:
        """Keep ``state`` as of ``offset`` (the entry just applied) so that a node starting later
        need not replay it all."""
        ...

    async def aclose(self) -> None: ...


class MemoryLog:
    """The embedded default: one process, entries applied the moment they are appended.

    Its epoch is new at every start: after a restart the history is gone, and a client that
    resumes is told so (``too-old``) instead of silently missing what it never got.
    """

    immediate = True

    def __init__(self) -> None:
        self.epoch = secrets.token_hex(6)
        self._apply: Apply | None = None
        self._count = 0

    async def open(self, initial: Any, apply: Apply, *, tail: int = 0, state_now: Callable[[], Any] | None = None,
                   reset: Callable[[Any], None] | None = None, gap: Callable[[Offset], None] | None = None,
                   report: Callable[[str], None] | None = None) -> Opened:
        """Start empty. ``state_now``, ``reset``, ``gap`` and ``report`` are never called: one
        process holds the only copy, applied as it is appended (no decoding), so it never loses
        or falls behind its history."""
        self._apply = apply
        return Opened(initial, START)

    async def follow(self) -> Offset:
        """Nothing to catch up: entries are applied as they are appended."""
        return (self._count, 0)

    async def append(self, entry: dict[str, Any]) -> None:
        self.append_now(entry)

    def append_now(self, entry: dict[str, Any]) -> None:
        assert self._apply is not None, "open() the log first"
        self._count += 1
        self._apply((self._count, 0), entry)

    async def save_snapshot(self, state: Any, offset: Offset) -> None:
        """Nothing to keep: one process has the only copy."""

    async def aclose(self) -> None:
        self._apply = None
