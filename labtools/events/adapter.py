"""What an ``EventServer`` needs of a bus to broadcast across nodes: the adapter's hook.

Socket.IO calls this part the *adapter*: the server's broadcasts go through it, and with the
Redis adapter a broadcast to everyone or to a room also reaches the sockets held by the other
nodes of the app. Here the bus itself lives in ``labtools.cluster.bus`` (same layer as
``events``, but a server must not depend on Redis to run alone), so the server only knows this
``Protocol``: anything with a node id, ``post`` and ``subscribe`` will do.

Wire form on the bus (channel ``BROADCASTS``): ``{"to": ROOM | null, "event": NAME, "text": FRAME}``,
the frame already encoded by the node that broadcast it, so that every node writes the same
bytes to its sockets without encoding them again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

#: The bus channel an event server's broadcasts travel on.
BROADCASTS = "broadcast"


class BroadcastBus(Protocol):
    """The part of ``labtools.cluster.bus.Bus`` an event server uses."""

    node: str

    async def start(self) -> None: ...

    def post(self, channel: str, message: dict[str, Any]) -> None: ...

    def subscribe(self, channel: str, callback: Callable[[dict[str, Any]], Any]) -> None: ...

    async def aclose(self) -> None: ...
