"""A learner's own app, as lesson 11 asks for one: rooms, and a counter and a poll per room.

Written with the public event layer only (``labtools.events``): its state, its changes and its
handlers. Nothing here says how many processes serve it: the same file runs as one server
(``lt.serve("rooms_app.py:build")``) or as several nodes (``nodes=2``, ``--broker URL``).

* ``join {"room", "name"}`` (acknowledged with the room's counter and poll): the others in the
  room hear ``joined``, the one who joined does not;
* ``say {"room", "text"}``: everyone in the room hears ``said``, the speaker included;
* ``bump {"room", "tag"}`` (acknowledged with the new count): the room hears ``count``;
* ``vote {"room", "choice"}`` (acknowledged with the poll): the room hears ``poll``;
* ``state`` (acknowledged with the whole board), and the board as ``state`` on connecting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labtools.events import Client, EventServer, require

CHOICES = ("yes", "no", "maybe")
MAX_ROOM = 30
MAX_TEXT = 500


@dataclass
class Board:
    """Every room's counter and poll, and the tag of every change in the order it was applied."""

    counts: dict[str, int] = field(default_factory=dict)
    polls: dict[str, dict[str, int]] = field(default_factory=dict)
    applied: list[str] = field(default_factory=list)

    def room(self, room: str) -> dict[str, Any]:
        return {"room": room, "count": self.counts.get(room, 0), "poll": self.poll(room)}

    def poll(self, room: str) -> dict[str, int]:
        return dict(self.polls.get(room, dict.fromkeys(CHOICES, 0)))

    def snapshot(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "polls": {r: dict(p) for r, p in self.polls.items()},
                "applied": list(self.applied)}

    def restore(self, data: dict[str, Any]) -> None:
        self.counts = dict(data["counts"])
        self.polls = {r: dict(p) for r, p in data["polls"].items()}
        self.applied = list(data["applied"])


@dataclass
class Member:
    """What the server remembers of one connection: the name it joined with."""

    name: str = "someone"


def room_of(data: Any) -> str:
    require(isinstance(data, dict), "send an object with a 'room'")
    room = data.get("room")
    require(isinstance(room, str) and 0 < len(room) <= MAX_ROOM, f"'room' is a name of 1 to {MAX_ROOM} characters")
    return room


def build() -> EventServer[Board]:
    server = EventServer("rooms", Board(), page=Path("page"), session=Member)

    @server.change
    def bump(board: Board, data: dict[str, str]) -> int:
        room = data["room"]
        board.counts[room] = board.counts.get(room, 0) + 1
        board.applied.append(data["tag"])
        server.broadcast("count", {"room": room, "count": board.counts[room]}, to=room)
        return board.counts[room]

    @server.change
    def vote(board: Board, data: dict[str, str]) -> dict[str, int]:
        room, choice = data["room"], data["choice"]
        require(choice in CHOICES, f"'choice' is one of {', '.join(CHOICES)}")
        poll = board.polls.setdefault(room, dict.fromkeys(CHOICES, 0))
        poll[choice] += 1
        board.applied.append(data["tag"])
        server.broadcast("poll", {"room": room, "poll": dict(poll)}, to=room)
        return dict(poll)

    @server.welcome
    def send_board(client: Client) -> None:
        client.emit("state", server.state.snapshot())

    @server.on("join")
    def join(client: Client, data: Any) -> dict[str, Any]:
        room = room_of(data)
        name = data.get("name")
        if isinstance(name, str) and 0 < len(name) <= 40:
            client.session.name = name
        client.join(room)
        server.broadcast("joined", {"room": room, "name": client.session.name}, to=room, exclude=client)
        return server.state.room(room)

    @server.on("say")
    def say(client: Client, data: Any) -> dict[str, str]:
        room = room_of(data)
        require(room in client.rooms, f"join {room!r} before speaking in it")
        text = data.get("text")
        require(isinstance(text, str) and 0 < len(text) <= MAX_TEXT, f"'text' is 1 to {MAX_TEXT} characters")
        server.broadcast("said", {"room": room, "name": client.session.name, "text": text}, to=room)
        return {"room": room}

    @server.on("bump")
    async def bump_counter(client: Client, data: Any) -> dict[str, int]:
        room = room_of(data)
        tag = data.get("tag")
        require(isinstance(tag, str) and 0 < len(tag) <= 40, "'tag' names the change (1 to 40 characters)")
        return {"count": await server.update(bump, {"room": room, "tag": tag}, sender=client)}

    @server.on("vote")
    async def cast_vote(client: Client, data: Any) -> dict[str, int]:
        room = room_of(data)
        tag = data.get("tag")
        require(isinstance(tag, str) and 0 < len(tag) <= 40, "'tag' names the change (1 to 40 characters)")
        return await server.update(vote, {"room": room, "choice": data.get("choice"), "tag": tag}, sender=client)

    @server.on("state")
    def state(client: Client, data: Any) -> dict[str, Any]:
        return server.state.snapshot()

    return server
