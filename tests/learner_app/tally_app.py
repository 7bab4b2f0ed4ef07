"""A learner's smallest shared app: a tally per name, its state a plain dataclass.

What a learner writes before they know what a snapshot is: no ``snapshot()``, no ``restore()``;
the server keeps the dataclass's fields as they are (``changes``). The same file runs on one
node or several.

* ``add NAME`` (acknowledged with NAME's new tally): everyone hears ``tally``;
* the whole tally as ``tally`` on connecting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from labtools.events import Client, EventServer, require


@dataclass
class Tally:
    counts: dict[str, int] = field(default_factory=dict)


def build() -> EventServer[Tally]:
    server = EventServer("tally", Tally())

    @server.change
    def add(tally: Tally, name: str) -> int:
        tally.counts[name] = tally.counts.get(name, 0) + 1
        server.broadcast("tally", {name: tally.counts[name]})
        return tally.counts[name]

    @server.welcome
    def send_tally(client: Client) -> None:
        client.emit("tally", server.state.counts)

    @server.on("add")
    async def add_one(client: Client, data: Any) -> int:
        require(isinstance(data, str) and 0 < len(data) <= 20, "add takes a name of 1 to 20 characters")
        return await server.update(add, data, sender=client)

    return server
