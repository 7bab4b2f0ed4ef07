"""A private-message relay on the event layer: the WebSocket side of lesson 04's comparison.

The crowds of lessons 01-03 send each message to one named user over the REST chat. To run
the same workload over WebSockets the server has to deliver to one user rather than to
everyone, which is what rooms are for: each connection joins the room named after its user,
and a message is broadcast to that room only.

Events: ``join`` ``NAME`` (with an ``id``) puts the connection in user NAME's room;
``send`` ``{"to": NAME, "text": STR}`` (with an ``id``) pushes ``message``
``{"from", "to", "text"}`` to NAME's connections and is acknowledged with how many there were.
"""

from __future__ import annotations

from typing import Any

from ..events import Client, EventServer
from ..events.server import require

MAX_NAME = 64
MAX_TEXT = 4000


def _room(user: str) -> str:
    return f"user:{user}"


def build() -> EventServer:
    server = EventServer("relay")

    @server.on("join")
    def join(client: Client, user: Any) -> None:
        require(isinstance(user, str) and 0 < len(user) <= MAX_NAME, f"join takes a name of 1-{MAX_NAME} characters")
        previous = client.state.get("user")
        if previous is not None:
            client.leave(_room(previous))
        client.state["user"] = user
        client.join(_room(user))

    @server.on("send")
    def send(client: Client, data: Any) -> int:
        user = client.state.get("user")
        require(user is not None, "join before sending", code="unauthorized")
        require(isinstance(data, dict), 'send takes {"to": NAME, "text": STR}')
        to, text = data.get("to"), data.get("text")
        require(isinstance(to, str) and 0 < len(to) <= MAX_NAME, "'to' must be a user name")
        require(isinstance(text, str) and 0 < len(text) <= MAX_TEXT, f"'text' must be 1-{MAX_TEXT} characters")
        return server.broadcast("message", {"from": user, "to": to, "text": text}, to=_room(to))

    return server
