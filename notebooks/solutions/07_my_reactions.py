"""My reactions (lesson 07, build it yourself): a reaction reaches everyone but its sender.

* ``react`` ``{"name": NAME, "emoji": EMOJI}`` (a name of 1 to 20 characters, an emoji of
  ``EMOJIS``): every *other* client receives ``reaction`` ``{"name": NAME, "emoji": EMOJI}``;
  the sender receives nothing back, since its own page shows its reaction already;
* anything else is refused (``invalid-data``), and nobody receives anything.
"""

from __future__ import annotations

from typing import Any

from labtools.events import Client, EventServer, require

EMOJIS = ("👏", "😂", "😮", "🔥", "🎉")
MAX_NAME = 20


def build() -> EventServer:
    server = EventServer("my-reactions")

    @server.on("react")
    def react(client: Client, data: Any) -> None:
        require(isinstance(data, dict), 'react takes {"name": NAME, "emoji": EMOJI}')
        name, emoji = data.get("name"), data.get("emoji")
        require(isinstance(name, str) and 0 < len(name) <= MAX_NAME, f"'name' is 1 to {MAX_NAME} characters")
        require(emoji in EMOJIS, f"'emoji' is one of {' '.join(EMOJIS)}")
        server.broadcast("reaction", {"name": name, "emoji": emoji}, exclude=client)

    return server
