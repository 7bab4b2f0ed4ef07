"""Rooms: named groups of this node's sockets, with one owner (Socket.IO's in-memory adapter).

A room is how an app addresses a group without keeping lists of sockets itself: a client
``join``s ``"deltas"`` and ``server.broadcast(..., to="deltas")`` reaches it. ``Rooms`` is the
only object that changes membership, both ways at once (room -> members and client -> rooms),
so the two can never disagree; ``Client.join`` and ``Client.leave`` delegate to it, and a
closed connection leaves every room in one call.

Membership is this node's: with several nodes, each holds its own sockets' rooms, and a
broadcast to a room by name reaches the members on every node because every node writes it to
its own members (the server's adapter carries the broadcast, never the membership).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

#: A member: the event server's ``Client`` (anything hashable will do, for tests).
M = TypeVar("M", bound=Hashable)
NO_MEMBERS: frozenset = frozenset()


class Rooms(Generic[M]):
    """Who is in which room, on this node."""

    __slots__ = ("_members", "_rooms")

    def __init__(self) -> None:
        self._members: dict[str, set[M]] = {}
        self._rooms: dict[M, set[str]] = {}

    def join(self, member: M, room: str) -> None:
        self._members.setdefault(room, set()).add(member)
        self._rooms.setdefault(member, set()).add(room)

    def leave(self, member: M, room: str) -> None:
        members = self._members.get(room)
        if members is not None:
            members.discard(member)
            if not members:  # an empty room is forgotten: a client cannot make the server keep names
                del self._members[room]
        rooms = self._rooms.get(member)
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._rooms[member]

    def leave_all(self, member: M) -> None:
        """A closed connection leaves every room it was in."""
        for room in self._rooms.pop(member, ()):
            members = self._members[room]
            members.discard(member)
            if not members:
                del self._members[room]

    def members(self, room: str) -> Iterable[M]:
        """This node's members of ``room`` (a live view: copy it before changing rooms)."""
        return self._members.get(room, NO_MEMBERS)

    def rooms_of(self, member: M) -> frozenset[str]:
        return frozenset(self._rooms.get(member, NO_MEMBERS))

    def __contains__(self, room: str) -> bool:
        """Whether ``room`` has a member on this node."""
        return room in self._members

    def __len__(self) -> int:
        """How many rooms have members on this node."""
        return len(self._members)
