"""A private-message relay on the event layer: the WebSocket side of lesson 09's comparison of four transports.

The crowds of lessons 01-03 send each message to one named user over the REST chat. To run
the same workload over WebSockets the server has to deliver to one user rather than to
everyone, which is what rooms are for: each connection joins the room named after its user,
and a message is broadcast to that room only.

Events: ``join`` ``NAME`` (with an ``id``) puts the connection in user NAME's room;
``send`` ``{"to": NAME, "text": STR}`` (with an ``id``) pushes ``message``
``{"from", "to", "text"}`` to NAME's connections and is acknowledged with how many there were
(on this node: ``members`` of a room are the node's own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..events import Client, EventServer, require

MAX_NAME = 64
MAX_TEXT = 4000


def _room(user: str) -> str:
    return f"user:{user}"


@dataclass
class Session:
    """Who this connection joined as (None: not yet)."""

    user: str | None = None


def build() -> EventServer:
    server = EventServer("relay", session=Session)

    @server.on("join")
    def join(client: Client, user: Any) -> None:
        require(isinstance(user, str) and 0 < len(user) <= MAX_NAME, f"join takes a name of 1-{MAX_NAME} characters")
        if client.session.user is not None:
            client.leave(_room(client.session.user))
        client.session.user = user
        client.join(_room(user))

    @server.on("send")
    def send(client: Client, data: Any) -> int:
        user = client.session.user
        require(user is not None, "join before sending", code="unauthorized")
        require(isinstance(data, dict), 'send takes {"to": NAME, "text": STR}')
        to, text = data.get("to"), data.get("text")
        require(isinstance(to, str) and 0 < len(to) <= MAX_NAME, "'to' must be a user name")
        require(isinstance(text, str) and 0 < len(text) <= MAX_TEXT, f"'text' must be 1-{MAX_TEXT} characters")
        server.broadcast("message", {"from": user, "to": to, "text": text}, to=_room(to))
        return len(server.rooms.members(_room(to)))

    return server
