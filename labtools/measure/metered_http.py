"""Hosting an aiohttp application with every byte counted, per route, at the socket.

Each connection's protocol is wrapped: inbound bytes are counted in ``data_received``, outbound
ones by ``CountingTransport``. Per-route attribution works because HTTP/1.1 clients (ours and
browsers) send a connection's next request only after the previous answer: bytes that arrive
are held as "pending" until the request they belong to is routed, and bytes written belong to
the request being answered. The total is exact in any case; it is counted at the socket.

The same protocol layer guards the server's sockets: a connection must send a complete request
head within ``head_timeout`` seconds of its first byte (or of connecting), else it is closed, so
half-sent requests (slowloris) cannot pile up; and at most ``max_connections`` are open at once,
beyond which a newcomer gets ``503`` and is closed at once, so the process never runs out of
file descriptors and a bystander's ``/stats`` still answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

try:
    import resource
except ImportError:  # not on Unix: no file-descriptor limit to read
    resource = None  # type: ignore[assignment]

from .metrics import Traffic
from .wire import ByteMeter, CountingTransport

UNROUTED = "(unrouted)"
#: Seconds a connection has to send a whole request head (slowloris defence).
HEAD_TIMEOUT = 10.0
_REFUSAL_BODY = b"too many connections; try again later\n"
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY)
)


def default_max_connections() -> int:
    """A quarter of this process's file descriptors: the in-process crowds' client ends of the
    same connections need as many again, and the rest is left for files, the kernel, pipes."""
    if resource is None:
        return 1024
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, soft // 4) if soft != resource.RLIM_INFINITY else 65536


MAX_CONNECTIONS = default_max_connections()


class RouteMeter(ByteMeter):
    """One connection's meter, attributing its bytes to the route being served."""

    __slots__ = ("traffic", "route", "pending_in", "busy", "on_head")

    def __init__(self, traffic: Traffic, on_head: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.traffic = traffic
        self.route: str | None = None
        self.pending_in = 0
        self.busy = False  # between a request's complete head and the end of its handler
        self.on_head = on_head

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

    def begin(self, route: str) -> None:
        """A request's head is complete and routed: claim its bytes, tell the connection."""
        self.busy = True
        self.claim(route)
        if self.on_head is not None:
            self.on_head()

    def finish(self) -> None:
        """The handler is done; the next bytes start a new request."""
        self.busy = False

    def close(self) -> None:
        """Bytes no request claimed (a request the parser rejected, say) still count."""
        if self.pending_in:
            self.traffic.bytes(self.route or UNROUTED, inbound=self.pending_in)
            self.pending_in = 0


class ConnectionGate:
    """Counts a site's open connections and admits at most ``limit``."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"max_connections must be at least 1, not {limit}")
        self.limit = limit
        self.open = 0
        self.refused = 0

    def admit(self) -> bool:
        if self.open >= self.limit:
            self.refused += 1
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1


class _MeteredProtocol(asyncio.Protocol):
    """Wraps aiohttp's request handler: counts the bytes it reads and writes, enforces the
    head deadline, and refuses a connection beyond the gate's limit."""

    def __init__(self, inner: asyncio.Protocol, traffic: Traffic, gate: ConnectionGate, head_timeout: float) -> None:
        self.inner = inner
        self.meter = RouteMeter(traffic, on_head=self._head_arrived)
        self.gate = gate
        self.head_timeout = head_timeout
        self.admitted = False
        self.transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        counting = CountingTransport(transport, self.meter)
        self.transport = counting  # type: ignore[assignment]
        if not self.gate.admit():
            counting.write(REFUSAL)
            counting.close()
            return
        self.admitted = True
        self._arm()
        self.inner.connection_made(counting)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.meter.inbound(len(data))
        if not self.admitted:
            return
        if not self.meter.busy and self._deadline is None:
            self._arm()  # the first bytes of a new request on a kept-alive connection
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if not self.admitted:
            return None
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.meter.close()
        self._disarm()
        if self.admitted:
            self.admitted = False
            self.gate.release()
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()

    def _arm(self) -> None:
        self._deadline = asyncio.get_running_loop().call_later(self.head_timeout, self._head_late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_arrived(self) -> None:
        self._disarm()

    def _head_late(self) -> None:
        """No complete head in time: a half-sent request holds a socket for nothing."""
        self._deadline = None
        if self.transport is not None and not self.meter.busy:
            self.transport.abort()


def route_key(request: web.Request) -> str:
    """``"GET /messages"``: the method and the route's path, never the query string."""
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else UNROUTED
    return f"{request.method} {path}"


def meter_of(request: web.Request) -> RouteMeter | None:
    transport = request.transport
    meter = getattr(transport, "_meter", None)
    return meter if isinstance(meter, RouteMeter) else None


def metering_middleware(traffic: Traffic, is_empty: Callable[[web.StreamResponse], bool], uncounted: str = ""):
    """Count each request on its route, and claim the bytes it read and wrote (but ``uncounted``'s)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        if request.path == uncounted:  # the front door's health checks are not the lesson's traffic
            return await handler(request)
        key = route_key(request)
        meter = meter_of(request)
        if meter is not None:
            meter.begin(key)
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
                meter.finish()

    return middleware


class MeteredSite:
    """An aiohttp application listening on a real socket, its traffic counted."""

    def __init__(
        self,
        app: web.Application,
        traffic: Traffic,
        *,
        head_timeout: float = HEAD_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        if head_timeout <= 0:
            raise ValueError(f"head_timeout must be positive, not {head_timeout}")
        self.app = app
        self.traffic = traffic
        self.head_timeout = head_timeout
        self.gate = ConnectionGate(max_connections)
        # handler_cancellation: a long poll or SSE handler whose client went away is cancelled
        # (and counted) at once instead of holding its store listener until its wait runs out.
        # lingering_time: after an early answer (413, 408), the rest of a body is read and dropped
        # for at most the head deadline, then the connection closes.
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=2.0, handler_cancellation=True,
            lingering_time=head_timeout,
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
            lambda: _MeteredProtocol(handler_factory(), self.traffic, self.gate, self.head_timeout),
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
