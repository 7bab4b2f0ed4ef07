"""The mini chat (PROTOCOL.md ``minichat``): every message goes to everyone, the sender included.

The whole app is one handler: what the seed's course calls the basic socket server
(``io.emit('msg-from-server', data)``). ``msg-from-server`` is declared recoverable: each push
carries its offset, so a client that reconnects says the last one it got and is sent what it
missed, on one node or on several (the server's business, lesson 11).
"""

from __future__ import annotations

import time
from typing import Any

from ..events import Client, EventServer, require

MAX_TEXT = 2000


def build() -> EventServer:
    """The mini chat, not started."""
    server = EventServer("minichat", page="minichat", recoverable=("msg-from-server",))

    @server.on("msg-to-server")
    async def message(client: Client, data: Any) -> None:
        require(isinstance(data, dict), 'msg-to-server takes {"text": STR}')
        text = data.get("text")
        require(
            isinstance(text, str) and len(text.strip()) > 0 and len(text) <= MAX_TEXT,
            f"'text' must be a non-empty string of at most {MAX_TEXT} characters",
        )
        reply: dict[str, Any] = {"text": text, "at": time.time()}
        name = data.get("name")
        if isinstance(name, str) and 0 < len(name) <= 40:
            reply["name"] = name
        if "sentAt" in data and isinstance(data["sentAt"], (int, float)):
            reply["sentAt"] = data["sentAt"]
        await server.broadcast("msg-from-server", reply)

    return server
