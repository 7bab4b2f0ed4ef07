"""The running REST chat: its aiohttp application on a metered socket, and its message store
kept the same on every node (the server's business, never the handlers').

Why a module of its own: ``polling.server`` is the app (the handlers and ``build``), and reads
like the event apps do; how a post reaches the store in one order on every node is the server's
adapter's job, here as in ``EventServer``: the store is a machine of the adapter's log
(``events.replicated``), applied at once in one process (the default), and through Redis when
serving code attaches a ``RedisAdapter`` (``use``), so any node answers any poll.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..events.adapter import Adapter, LocalAdapter
from ..events.replicated import Replicated
from ..measure.metered_http import MeteredSite
from ..measure.metrics import Traffic
from .store import MessageStore

#: Where a handler finds the running server (``request.app[SERVER].update(...)``).
SERVER: web.AppKey[PollingServer] = web.AppKey("server")


class PollingServer(MeteredSite):
    """The running REST chat: ``url``, ``traffic``, and its ``state``: the ``MessageStore`` (a cell
    reads it with ``ServerHandle.read``, on the loop thread)."""

    def __init__(self, app: web.Application, traffic: Traffic, state: MessageStore, *, head_timeout: float,
                 max_connections: int) -> None:
        super().__init__(app, traffic, head_timeout=head_timeout, max_connections=max_connections)
        self.state = state
        app[SERVER] = self
        #: How this server reaches the other polling nodes (``use``); in-process by default.
        self.adapter: Adapter = LocalAdapter()
        self.replicated: Replicated | None = None

    def use(self, adapter: Adapter) -> None:
        """Make this server one node of the polling app through ``adapter`` (before ``start``)."""
        self.adapter = adapter

    async def update(self, post: dict[str, Any]) -> dict[str, Any]:
        """Store ``post`` on every node, in one order; the message as stored here (its id).

        Raises ``EventError("unavailable")`` when the log could not take it: nothing was stored.
        """
        assert self.replicated is not None, "start the server first"
        return await self.replicated.submit(None, post)

    async def start(self, host: str, port: int) -> None:
        """Join the store's log first (a node that starts later catches up), then listen."""
        self.replicated = Replicated(self.state, self.adapter.log("polling", keep=self.state.keep),
                                     node=self.adapter.node, snapshot_every=1000)
        await self.replicated.join()
        await super().start(host, port)

    async def aclose(self) -> None:
        await super().aclose()
        replicated, self.replicated = self.replicated, None
        if replicated is not None:
            await replicated.close()
