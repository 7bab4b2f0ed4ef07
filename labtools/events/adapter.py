"""The server's adapter: the one place that decides how an event server reaches other nodes.

Socket.IO's name and shape: ``io.adapter(createAdapter(pub, sub))`` and the app's ``io.emit``,
rooms and acknowledgements keep working on ten nodes as on one. Here an adapter gives a server
two things, both named after the server's name:

* a ``Bus``: fire-and-forget messages between the nodes (broadcasts of events that are not
  recoverable, and an app's own small talk, such as the chat's presence);
* a ``Log``: the ordered, kept history that ``server.update`` changes and recoverable events
  travel through (``log``), so that every node applies the same changes in the same order.

``LocalAdapter`` is the default: one process, nothing else running. Its bus reaches no other
node and its log is a ``MemoryLog``. ``labtools.cluster.adapter.RedisAdapter`` is the same on
Redis (pub/sub and a Stream). An app never names its adapter: serving code attaches one
(``server.use``) after the app's ``build()``, so the app's code is the same on one node or many.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from typing import Any, Protocol

from .log import Log, MemoryLog

#: The bus channel an event server's broadcasts travel on. Wire form:
#: ``{"to": ROOM | null, "event": NAME, "text": FRAME}``, the frame already encoded by the node
#: that broadcast it, so that every node writes the same bytes without encoding them again.
BROADCASTS = "broadcast"

BusCallback = Callable[[dict[str, Any]], Any]


def default_node() -> str:
    """A node's name: host, process and a random suffix (a restarted process is a new node)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class Bus(Protocol):
    """Publish/subscribe between the nodes of one app (``LocalBus``; ``cluster.bus.RedisBus``).

    Fire and forget: a node not listening at that moment never gets the message, so what must
    not be lost travels through the log or a database, and the bus only rings a bell.
    """

    node: str
    #: Whether a message can reach another node at all (False: this process is the app).
    reaches_others: bool

    async def start(self) -> None: ...

    def post(self, channel: str, message: dict[str, Any]) -> None:
        """Publish soon, in order, without waiting."""
        ...

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        """Publish and wait until the broker took it (``ConnectionError`` when it did not)."""
        ...

    def subscribe(self, channel: str, callback: BusCallback) -> None:
        """Call ``callback(message)`` for each message *another* node publishes on ``channel``."""
        ...

    def on_reconnect(self, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` after the bus lost and regained the broker (re-read what may be missed)."""
        ...

    async def aclose(self) -> None: ...


class Adapter(Protocol):
    """What a server asks of its adapter when it starts: this node's name, a bus and a log."""

    node: str

    def bus(self, app: str) -> Bus: ...

    def log(self, app: str, *, keep: int) -> Log:
        """The ordered history of ``app``'s changes, keeping at least ``keep`` recent entries."""
        ...


class LocalBus:
    """The bus of an app that is one process: nobody to reach, nothing to hear.

    Apps use it exactly as they use Redis's: a message posted here reaches no other node
    because there is none, and a subscription is never called.
    """

    reaches_others = False

    def __init__(self, node: str) -> None:
        self.node = node

    async def start(self) -> None:
        """Nothing to connect to."""

    def post(self, channel: str, message: dict[str, Any]) -> None:
        """No other node to tell."""

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        """No other node to tell."""

    def subscribe(self, channel: str, callback: BusCallback) -> None:
        """No other node will publish."""

    def on_reconnect(self, callback: Callable[[], Any]) -> None:
        """Never disconnected."""

    async def aclose(self) -> None:
        """Nothing to close."""

    def __repr__(self) -> str:
        return f"<LocalBus node={self.node}>"


class LocalAdapter:
    """The default adapter: this process is the whole app (a ``LocalBus`` and a ``MemoryLog``)."""

    def __init__(self, node: str | None = None) -> None:
        self.node = node or default_node()

    def bus(self, app: str) -> LocalBus:
        return LocalBus(self.node)

    def log(self, app: str, *, keep: int) -> MemoryLog:
        return MemoryLog()

    def __repr__(self) -> str:
        return "<LocalAdapter: one process>"
