"""The watch: a small WebSocket app of the course's own that shows a running server's traffic.

It is built like the lesson apps, an ``EventServer`` with a page, and has one job: every
``period`` it samples the watched server's counters and broadcasts the ``Sample`` as
``sample``; a page that connects is first sent the recent ``history``, so its charts start
full. Its events (server to page only; the page sends nothing):

* ``history`` ``{server, period, emptyCounted, samples: [Sample, ...]}``: on connect;
* ``sample`` ``Sample``: every period;
* ``stopped`` ``{reason}``: the watched server stopped, and so does the watch.

The sampling task belongs to the watch's server: started with it (``starting``), cancelled
with it (``closed``). It reads the counters on the labtools loop, where the watched server
changes them, never across threads. The watch's state, the recent samples, is a view of one
server in this kernel, shared with no other node: the task appends to it directly, with no
``@server.change``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import asdict

from .. import runtime
from ..events import Client, EventServer
from ..serving import ServerHandle
from .sampler import Sample, Sampler

PERIOD = 0.25  # seconds between samples: four a second
HISTORY = 480  # samples kept for a page that connects: the last two minutes


def build(watched: ServerHandle, *, name: str, period: float = PERIOD) -> EventServer[deque[Sample]]:
    """The watch of ``watched``, not started; ``name``: the name it is registered under."""
    sampler = Sampler(watched.server)
    server: EventServer[deque[Sample]] = EventServer(name, deque(maxlen=HISTORY), page="watch")
    sampling: asyncio.Task | None = None

    def running() -> bool:
        """Whether the watched server still runs: re-serving or stopping it unregisters it."""
        return runtime.services().get(watched.name) is watched.server

    async def sample_every_period() -> None:
        while running():
            sample = sampler.sample()
            server.state.append(sample)
            server.broadcast("sample", asdict(sample))
            await asyncio.sleep(period)
        server.broadcast("stopped", {"reason": f"{watched.name} stopped"})
        await runtime.unregister_and_close(name, server)

    @server.welcome
    def send_history(client: Client) -> None:
        client.emit("history", {"server": watched.name, "period": period, "emptyCounted": sampler.counts_empty,
                                "samples": [asdict(sample) for sample in server.state]})

    @server.starting
    async def start_sampling() -> None:
        nonlocal sampling
        sampling = asyncio.get_running_loop().create_task(sample_every_period())

    @server.closed
    async def stop_sampling() -> None:
        if sampling is not asyncio.current_task():  # the task that is closing the watch ends by itself
            await runtime.cancel(sampling)

    return server
