"""The story of lesson 01: Pedro and Ana on the REST chat, every request written into a trace."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .. import runtime
from ..measure.metrics import Trace, Traffic
from ..polling.client import HttpClient, send
from .crowd import resolve
from .http_users import Poller


class Conversation:
    """Pedro and Ana on the REST chat, every request and answer written into a ``Trace``.

    Each person polls with ``setInterval`` (``Poller``); ``say`` posts a message. The trace is
    what ``plots.sequence_diagram`` draws: Pedro → server → Ana, with the empty polls in between.
    """

    def __init__(self, server_or_url: Any, people: tuple[str, ...] = ("Pedro", "Ana"), interval: float = 1.0) -> None:
        self.url, _ = resolve(server_or_url)
        self.trace = Trace()
        self.traffic = Traffic()
        self.interval = interval
        self.pollers = {
            name: Poller(self.url, name, interval=interval, traffic=self.traffic, trace=self.trace,
                         phase=i * interval / 2)
            for i, name in enumerate(people)
        }
        self._senders: dict[str, HttpClient] = {}

    async def astart(self) -> None:
        # Start from what is stored now: a re-run cell does not replay the previous story.
        for poller in self.pollers.values():
            latest = await poller.poll_all()
            poller.received.clear()
            if latest:
                poller.since = latest[-1]["id"]
        self.trace.clear()
        self.traffic.reset()
        for poller in self.pollers.values():
            await poller.start()

    async def asay(self, sender: str, to: str, text: str) -> dict:
        client = self._senders.setdefault(sender, HttpClient(self.url, self.traffic))
        self.trace.record(sender, "server", f"POST /messages {text!r}")
        message = await send(client, sender, to, text)
        self.trace.record("server", sender, f"201 Created (id {message['id']})")
        return message

    async def aclose(self) -> None:
        for poller in self.pollers.values():
            await poller.aclose()
        for client in self._senders.values():
            await client.aclose()

    async def ascript(self, lines: list[tuple[float, str, str, str]], until: float) -> None:
        """Play ``(at seconds, sender, to, text)`` lines, then keep polling until ``until``."""
        start = time.perf_counter()
        for at, sender, to, text in lines:
            await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
            await self.asay(sender, to, text)
        await asyncio.sleep(max(0.0, start + until - time.perf_counter()))

    def play(self, lines: list[tuple[float, str, str, str]], until: float) -> Trace:
        """Start polling, play the script, stop: the sync API for a cell. Returns the trace."""

        async def main() -> None:
            await runtime.register("conversation", self._started)
            try:
                await self.ascript(lines, until)
            finally:
                await runtime.unregister_and_close("conversation", self)

        runtime.run(main())
        return self.trace

    async def _started(self) -> Conversation:
        await self.astart()
        return self

    def received(self, name: str) -> list[dict]:
        """The messages ``name`` received by polling."""
        return list(self.pollers[name].received)

    def polls(self, name: str) -> tuple[int, int]:
        """``(polls, empty polls)`` by ``name``: how often the answer was "no new messages"."""
        events = [e for e in self.trace.events()
                  if e.src == "server" and e.dst == name and not e.label.startswith("201")]
        return len(events), sum(1 for e in events if e.label.startswith("[]"))
