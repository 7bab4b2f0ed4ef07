"""The ``"websocket"`` crowd mode: lesson 09 runs lessons 01-03's chat workload over WebSockets.

``run_crowd(relay, mode="websocket", ...)`` drives the same Poisson schedule of private messages
as ``"poll"``, ``"long-poll"`` and ``"sse"``, against ``apps.relay`` (start it with
``lt.serve("relay")``). Each simulated user is an ``EventClient``: one connection, opened once; the
server pushes each message the moment it arrives.

What counts as a request here: the WebSocket upgrade and each frame the user sends (``join``,
then one ``send`` per message). Pushes from the server are not requests: nobody asked for them,
which is the point of the lesson. Bytes are counted at the socket, as for the HTTP modes.
"""

from __future__ import annotations

import time

from ..events import AckError, EventClient
from ..measure.metrics import Counter, Traffic
from .users import ClientSpec


class WebSocketUser:
    """One simulated user of the relay: joins its room, sends with acknowledgements, listens."""

    def __init__(self, spec: ClientSpec) -> None:
        self.spec = spec
        self.client: EventClient | None = None
        self.errors = 0

    @property
    def in_flight(self) -> int:
        """Connections held open at the server: the socket, while it is open."""
        return 0 if self.client is None or self.client.closed else 1

    @property
    def traffic(self) -> Traffic:
        """The upgrade plus one request per emitted frame, and every byte the socket carried."""
        traffic = Traffic()
        if self.client is None:
            return traffic
        source = self.client.traffic
        traffic.total = Counter(bytes_in=source.total.bytes_in, bytes_out=source.total.bytes_out)
        traffic.route("GET / (WebSocket upgrade)").requests = 1
        for name, counter in source.routes.items():
            if name.startswith("send "):
                traffic.route(f"emit {name.removeprefix('send ')}").requests = counter.requests
        traffic.total.requests = sum(c.requests for c in traffic.routes.values())
        return traffic

    async def start(self) -> None:
        on_message = self.spec.on_message
        self.client = await EventClient.connect(self.spec.url, name=self.spec.user)
        self.client.on("message", lambda data: on_message(data, time.perf_counter()))
        await self.client.request("join", self.spec.user)  # acknowledged once the room is joined

    async def send(self, to: str, text: str) -> None:
        if self.client is None:
            raise RuntimeError("start() first")
        try:
            await self.client.request("send", {"to": to, "text": text})
        except (AckError, ConnectionError, TimeoutError):
            self.errors += 1

    async def stop(self) -> None:
        """Nothing to wait for: every ``send`` is awaited to its acknowledgement, pushes are not
        requests, and ``aclose`` is the WebSocket closing handshake."""

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()
