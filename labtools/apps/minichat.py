"""The mini chat (PROTOCOL.md ``minichat``): every message goes to everyone, the sender included.

The whole app is one handler: what the seed's course calls the basic socket server. It
broadcasts each message through the app's log (``log.broadcast``): with one process (the
default) it is pushed at once; with several (lesson 11) every process pushes it to its own
clients, in the log's order. Each push carries its offset, so a client that reconnects gets
what it missed.
"""

from __future__ import annotations

import time
from typing import Any

from ..cluster.replica import Broadcasts, Replica, make_log
from ..events import Client, EventServer
from ..events.server import require

MAX_TEXT = 2000
#: Messages kept for clients that reconnect; one that missed more is told ``too-old``.
KEEP = 1000
#: Entries the shared stream keeps: more than a client may resume, so that a node that falls a
#: few seconds behind under load catches up from the stream instead of losing its place.
STREAM_KEEP = 10 * KEEP


def build(broker: str | None = None, node: str | None = None) -> EventServer:
    """The mini chat; ``broker``: a Redis URL shared with other nodes (None: this process alone)."""
    server = EventServer("minichat", page="minichat")
    log = Replica(server, Broadcasts(), make_log("minichat", broker, keep=STREAM_KEEP), node=node, replay=KEEP)

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
        await log.broadcast(client, "msg-from-server", reply)

    return server
