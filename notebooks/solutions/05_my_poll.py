"""My poll (lesson 05, build it yourself): one question, a count per option, shared by everyone.

* on connecting, a client receives ``poll`` ``{"question": STR, "counts": {OPTION: INT, ...}}``;
* ``vote`` with an option's name (a str) is acknowledged with the poll after that vote, and
  everyone, the voter included, receives the same ``poll``;
* a vote for anything that is not an option is refused (``invalid-data``) and counts nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from labtools.events import Client, EventServer, require

QUESTION = "Tabs or spaces?"  # ask your own question...
OPTIONS = ("tabs", "spaces", "whatever the linter says")  # ...with your own options


@dataclass
class Poll:
    """The shared state: one count per option, the same for every client."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OPTIONS, 0))

    def as_data(self) -> dict[str, Any]:
        """The ``poll`` payload: the question and a copy of the counts."""
        return {"question": QUESTION, "counts": dict(self.counts)}


def build() -> EventServer[Poll]:
    server = EventServer("my-poll", Poll())

    @server.change
    def vote(poll: Poll, option: str) -> dict[str, Any]:
        """Count one vote; everyone (the voter too) receives the new poll; return it."""
        poll.counts[option] += 1  # nothing awaited between reading and writing: no vote is lost
        server.broadcast("poll", poll.as_data())
        return poll.as_data()

    @server.welcome
    def send_poll(client: Client) -> None:
        """A client that connects receives the poll as it is."""
        client.emit("poll", server.state.as_data())

    @server.on("vote")
    async def cast(client: Client, option: Any) -> dict[str, Any]:
        """Refuse an option that is not in OPTIONS, then apply the change in one order everywhere."""
        require(isinstance(option, str) and option in OPTIONS, f"vote for one of {', '.join(OPTIONS)}")
        return await server.update(vote, option, sender=client)

    return server
