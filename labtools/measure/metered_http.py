"""Hosting an aiohttp application with every byte counted, per route, at the socket.

Each connection's protocol is wrapped: inbound bytes are counted in ``data_received``, outbound
ones by ``CountingTransport``. Per-route attribution works because HTTP/1.1 clients (ours and
browsers) send a connection's next request only after the previous answer: bytes that arrive
are held as "pending" until the request they belong to is routed, and bytes written belong to
the request being answered. The total is exact in any case; it is counted at the socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .metrics import Traffic
from .wire import ByteMeter, CountingTransport

UNROUTED = "(unrouted)"


class RouteMeter(ByteMeter):
    """One connection's meter, attributing its bytes to the route being served."""

    __slots__ = ("traffic", "route", "pending_in")

    def __init__(self, traffic: Traffic) -> None:
        super().__init__()
        self.traffic = traffic
        self.route: str | None = None
        self.pending_in = 0

    def inbound(self, n: int) -> None:
        self.bytes_in += n
        self.traffic.total.bytes_in += n
        self.pending_in += n

    def outbound(self, n: int) -> None:
        self.bytes_out += n
        self.traffic.total.bytes_out += n
        self.traffic.bytes(self.route or UNROUTED, outbound=n)

    def claim(self, route: str) -> None:
        """The bytes received so far belong to ``route``'s request."""
        self.route = route
        if self.pending_in:
            self.traffic.bytes(route, inbound=self.pending_in)
            self.pending_in = 0

    def close(self) -> None:
        """Bytes no request claimed (a request the parser rejected, say) still count."""
        if self.pending_in:
            self.traffic.bytes(self.route or UNROUTED, inbound=self.pending_in)
            self.pending_in = 0


class _MeteredProtocol(asyncio.Protocol):
    """Wraps aiohttp's request handler so the bytes it reads and writes are counted."""

    def __init__(self, inner: asyncio.Protocol, traffic: Traffic) -> None:
        self.inner = inner
        self.meter = RouteMeter(traffic)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(CountingTransport(transport, self.meter))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.meter.inbound(len(data))
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.meter.close()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def route_key(request: web.Request) -> str:
    """``"GET /messages"``: the method and the route's path, never the query string."""
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else UNROUTED
    return f"{request.method} {path}"


def meter_of(request: web.Request) -> RouteMeter | None:
    transport = request.transport
    meter = getattr(transport, "_meter", None)
    return meter if isinstance(meter, RouteMeter) else None


def metering_middleware(traffic: Traffic, is_empty: Callable[[web.StreamResponse], bool]):
    """Count each request on its route, and claim the bytes it read and wrote."""

    @web.middleware
    async def middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        key = route_key(request)
        meter = meter_of(request)
        if meter is not None:
            meter.claim(key)
        response: web.StreamResponse | None = None
        try:
            response = await handler(request)
            return response
        except web.HTTPException as exc:
            response = exc
            raise
        finally:
            traffic.request(key, empty=response is not None and is_empty(response))
            if meter is not None:
                meter.claim(key)  # a body read by the handler

    return middleware


class MeteredSite:
    """An aiohttp application listening on a real socket, its traffic counted."""

    def __init__(self, app: web.Application, traffic: Traffic) -> None:
        self.app = app
        self.traffic = traffic
        # handler_cancellation: a long poll or SSE handler whose client went away is cancelled
        # (and counted) at once instead of holding its store listener until its wait runs out.
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=2.0, handler_cancellation=True
        )
        self._server: asyncio.Server | None = None
        self.host = ""
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        await self._runner.setup()
        handler_factory = self._runner.server
        assert handler_factory is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _MeteredProtocol(handler_factory(), self.traffic),
            host,
            port,
            reuse_address=True,
            backlog=1024,  # a crowd of 1,000 connecting at once must not hit SYN retransmits (1 s)
        )
        sockname: Any = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._runner.cleanup()
        self._server = None
