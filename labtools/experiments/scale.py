"""Lesson 09's measurement: what N WebSocket clients cost one server, measured from the kernel.

``measure_websocket(server, clients=1000, rate=10, seconds=3)`` connects ``clients`` clients to
a minichat server (best in a process of its own: ``processes.spawn("minichat")``, so that the
server's CPU and memory are its own and not the kernel's), lets ``senders`` of them send
``rate`` messages per second in all (open loop: the schedule does not wait for the server),
and every client receives every message (PROTOCOL.md's minichat). It reports

* deliveries per second, lost and duplicated deliveries;
* p50 / p99 latency from send to receipt (the sender stamps ``time.monotonic()``);
* the server's CPU µs per delivery and CPU seconds per second (from its process counters);
* the server's RSS per idle connection: (RSS with N idle clients − RSS with none) / N;
* what the load generator (this kernel) spent: its CPU seconds per second and RSS per client,
  which says when the *kernel* and not the server is the limit.

Clients: ``client="raw"`` (the default) are lean asyncio protocols that speak just enough
WebSocket (the upgrade, unmasked server frames, pongs): a few KB and a few µs per delivery
each. ``client="event"`` uses the course's ``EventClient`` (a ``websockets`` connection, a
reader task, a record of every frame): fine for hundreds, heavy for thousands.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import psutil
from websockets.frames import Frame, Opcode

from .. import httphead, processes, runtime
from ..events import EventClient
from ..sim.crowd import crowd
from .cost import Point

CONNECT_AT_ONCE = 64


async def open_loop(rate: float, total: int, send: Callable[[int], Awaitable[None]]) -> None:
    """``send(k)`` for ``k`` in ``range(total)``, message ``k`` due at ``k / rate`` seconds from now.

    Open loop: the schedule does not wait for the server (a late loop sends what is due at once),
    so a slow server shows as latency and loss, not as a politely slower load.
    """
    loop = asyncio.get_running_loop()
    start, k = loop.time(), 0
    while k < total:
        delay = start + k / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        now = loop.time()
        while k < total and start + k / rate <= now:
            await send(k)
            k += 1


class RawClient(asyncio.Protocol):
    """Just enough of a WebSocket client: the upgrade, unmasked server frames, pongs."""

    def __init__(self, host: str, port: int, latencies: list[float]) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        self.request = (
            f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.latencies = latencies
        self.buffer = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.received = 0
        self.bytes_in = 0
        self.record = False
        self.transport: asyncio.Transport | None = None

    @classmethod
    async def connect(cls, host: str, port: int, latencies: list[float]) -> RawClient:
        loop = asyncio.get_running_loop()
        _transport, client = await loop.create_connection(lambda: cls(host, port, latencies), host, port)
        await client.upgraded
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed during the handshake"))

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        buffer = self.buffer
        buffer += data
        if not self.upgraded.done() and not self.upgrade(buffer):
            return
        pos, size = 0, len(buffer)
        while size - pos >= 2:
            opcode, length, head = buffer[pos] & 0x0F, buffer[pos + 1] & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buffer[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buffer[pos + 2 : pos + 10], "big"), 10
            if size - pos < head + length:
                break
            rsv1 = buffer[pos] & 0x40
            payload = buffer[pos + head : pos + head + length]
            pos += head + length
            if opcode == 1:
                self.on_text(self.inflate(payload) if rsv1 else payload)
            elif opcode == 9:
                self.send_frame(Opcode.PONG, bytes(payload))
            elif opcode == 8:
                self.send_frame(Opcode.CLOSE, bytes(payload[:2]))
        del buffer[:pos]

    def inflate(self, payload: bytearray) -> bytearray:
        raise ConnectionError("a compressed frame on a connection without per-message deflate")

    def upgrade(self, buffer: bytearray) -> bool:
        """Consume the server's answer to the upgrade once it is whole; True if it was a 101."""
        try:
            end = httphead.head_end(buffer)
            if end < 0:
                return False
            status = httphead.parse_status_line(httphead.parse_head(buffer[:end]).start_line)
        except httphead.HeadError as exc:
            self.upgraded.set_exception(ConnectionError(str(exc)))
            return False
        if status.status != 101:
            self.upgraded.set_exception(ConnectionError(f"{status.status} {status.reason}"))
            return False
        del buffer[:end]
        self.upgraded.set_result(None)
        return True

    def on_text(self, payload: bytearray) -> None:
        now = time.monotonic()
        self.received += 1
        if self.record:
            start = payload.rfind(b'"sentAt":')
            if start >= 0:
                start += 9
                end = min(i for i in (payload.find(b"}", start), payload.find(b",", start)) if i >= 0)
                self.latencies.append(now - float(payload[start:end]))

    def send_frame(self, opcode: Opcode, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(Frame(opcode, payload).serialize(mask=True, extensions=[]))

    async def send_text(self, text: str) -> None:
        self.send_frame(Opcode.TEXT, text.encode())

    async def aclose(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class DeflateClient(RawClient):
    """A ``RawClient`` that asks for per-message deflate and inflates what the server compressed
    (one decompressor per connection, kept between messages as the extension requires)."""

    def __init__(self, host: str, port: int, latencies: list[float]) -> None:
        super().__init__(host, port, latencies)
        self.request = self.request.replace(
            b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        )
        self.decompressor = zlib.decompressobj(-15)

    def inflate(self, payload: bytearray) -> bytearray:
        return bytearray(self.decompressor.decompress(bytes(payload) + b"\x00\x00\xff\xff"))


class EventLoad:
    """The same role as ``RawClient``, played by the course's ``EventClient``."""

    def __init__(self, client: EventClient, latencies: list[float]) -> None:
        self.client = client
        self.latencies = latencies
        self.received = 0
        self.bytes_in = 0  # not counted: EventClient's own traffic counters are per socket
        self.record = False
        client.on("msg-from-server", self.on_message)

    @classmethod
    async def connect(cls, host: str, port: int, latencies: list[float]) -> EventLoad:
        return cls(await EventClient.connect(f"ws://{host}:{port}/", name="load", record=False), latencies)

    def on_message(self, data: Any) -> None:
        self.received += 1
        if self.record and isinstance(data, dict) and "sentAt" in data:
            self.latencies.append(time.monotonic() - data["sentAt"])

    async def send_text(self, text: str) -> None:
        await self.client.send_raw(text)

    async def aclose(self) -> None:
        await self.client.aclose()


@dataclass
class ScaleResult:
    """What ``measure_websocket`` measured (one row of lesson 09's table)."""

    clients: int
    client_kind: str
    rate: float
    seconds: float
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    deliveries_per_s: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    server_cpu_s_per_s: float = float("nan")
    server_cpu_us_per_delivery: float = float("nan")
    server_rss_empty: int = 0
    server_rss_idle: int = 0
    server_kb_per_idle_conn: float = float("nan")
    kernel_cpu_s_per_s: float = float("nan")
    kernel_kb_per_client: float = float("nan")
    connect_s: float = 0.0
    bytes_per_delivery: float = float("nan")  # bytes the clients received per message delivered
    server_kb_per_conn_after: float = float("nan")  # RSS per connection after the broadcast

    def point(self) -> Point:
        """This measurement as a point for ``cost.calibrate``."""
        return Point(
            connections=self.clients,
            rss_bytes=self.server_rss_idle,
            deliveries_per_s=self.deliveries_per_s,
            cpu_s_per_s=self.server_cpu_s_per_s,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _percentile_ms(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * q / 100))] * 1000


def _cpu(process: psutil.Process) -> float:
    return processes.cpu_seconds(process)


def _target(server: Any) -> tuple[str, int, psutil.Process | None]:
    """(host, port, the server's process) of a ChildServer, a ServerHandle or a URL."""
    url = server if isinstance(server, str) else server.url
    host_port = url.split("//", 1)[-1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    pid = getattr(server, "pid", None)
    if pid is None and not isinstance(server, str):
        pid = os.getpid()  # a server on the labtools loop: its costs are mixed with the clients'
    return host, int(port), psutil.Process(pid) if pid else None


async def ameasure_websocket(
    server: Any,
    clients: int = 1000,
    rate: float = 10.0,
    seconds: float = 3.0,
    *,
    senders: int = 10,
    client: str = "raw",
    settle: float = 1.0,
    grace: float = 3.0,
) -> ScaleResult:
    """``measure_websocket`` on the labtools loop."""
    kinds = {"raw": RawClient, "event": EventLoad, "deflate": DeflateClient}
    if client not in kinds:
        raise ValueError(f"client={client!r}: one of {sorted(kinds)}")
    kind = kinds[client]
    host, port, process = _target(server)
    me = psutil.Process()
    result = ScaleResult(clients, client, rate, seconds)
    latencies: list[float] = []
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    load: list[Any] = []

    async def one() -> Any:
        async with gate:
            return await kind.connect(host, port, latencies)

    try:
        # Warm the server's code paths (first connection, first broadcast) before the baseline.
        warm = [await kind.connect(host, port, latencies)]
        await warm[0].send_text(_message("warm-up"))
        await asyncio.sleep(0.3)
        await warm[0].aclose()
        await asyncio.sleep(0.5)
        if process is not None:
            result.server_rss_empty = process.memory_info().rss
        my_rss0 = me.memory_info().rss
        started = time.monotonic()
        load = list(await asyncio.gather(*(one() for _ in range(clients))))
        result.connect_s = time.monotonic() - started
        await asyncio.sleep(settle)
        if process is not None:
            result.server_rss_idle = process.memory_info().rss
            result.server_kb_per_idle_conn = (result.server_rss_idle - result.server_rss_empty) / clients / 1024
        result.kernel_kb_per_client = (me.memory_info().rss - my_rss0) / clients / 1024

        # The broadcast: open loop, ``rate`` messages per second from ``senders`` clients.
        talkers = load[: max(1, min(senders, clients))]
        before = [c.received for c in load]
        bytes_before = sum(c.bytes_in for c in load)
        for c in load:
            c.record = True
        loop = asyncio.get_running_loop()
        cpu0 = _cpu(process) if process is not None else 0.0
        my_cpu0 = _cpu(me)
        start = loop.time()
        total = max(1, round(rate * seconds))

        async def send(k: int) -> None:
            await talkers[k % len(talkers)].send_text(_message(f"message {k}"))

        await open_loop(rate, total, send)
        expected = total * len(load)
        deadline = loop.time() + grace
        while loop.time() < deadline:
            if sum(c.received for c in load) - sum(before) >= expected:
                break
            await asyncio.sleep(0.02)
        elapsed = loop.time() - start
        for c in load:
            c.record = False
        counts = [c.received - b for c, b in zip(load, before, strict=True)]
        result.sent = total
        result.delivered = sum(counts)
        result.lost = sum(max(0, total - n) for n in counts)
        result.duplicated = sum(max(0, n - total) for n in counts)
        result.deliveries_per_s = result.delivered / elapsed
        if result.delivered:
            result.bytes_per_delivery = (sum(c.bytes_in for c in load) - bytes_before) / result.delivered
        result.p50_ms = _percentile_ms(latencies, 50)
        result.p99_ms = _percentile_ms(latencies, 99)
        result.kernel_cpu_s_per_s = (_cpu(me) - my_cpu0) / elapsed
        if process is not None:
            result.server_cpu_s_per_s = (_cpu(process) - cpu0) / elapsed
            if result.delivered:
                result.server_cpu_us_per_delivery = (_cpu(process) - cpu0) / result.delivered * 1e6
            result.server_kb_per_conn_after = (process.memory_info().rss - result.server_rss_empty) / clients / 1024
    finally:
        await asyncio.gather(*(c.aclose() for c in load), return_exceptions=True)
    return result


def _message(text: str) -> str:
    return json.dumps({"event": "msg-to-server", "data": {"text": text, "sentAt": time.monotonic()}})


def measure_websocket(
    server: Any = None,
    clients: int = 1000,
    rate: float = 10.0,
    seconds: float = 3.0,
    *,
    senders: int = 10,
    client: str = "raw",
    settle: float = 1.0,
    grace: float = 3.0,
) -> ScaleResult:
    """Measure a minichat ``server`` (a ``ChildServer``, a ``ServerHandle`` or a URL) under
    ``clients`` clients and ``rate`` broadcasts per second for ``seconds``; see the module.

    With ``server=None`` a minichat is spawned in a child process for the run and stopped after:
    use a fresh server for the memory figure, since a process reuses the memory that earlier
    connections freed without giving it back (RSS does not shrink).
    The open-file limit is raised first (each client is a socket in this kernel). A delivery
    counts as lost when it has not arrived ``grace`` seconds after the last send: past the
    saturation point (or on a machine whose cores are busy with something else) "lost" means
    "too late", and both CPU columns show the share of a core each process actually got.
    """
    processes.raise_file_limit()
    if server is None:
        child = processes.spawn("minichat", name="measure-websocket")
        try:
            return measure_websocket(
                child, clients, rate, seconds, senders=senders, client=client, settle=settle, grace=grace
            )
        finally:
            child.stop()
    return runtime.run(
        ameasure_websocket(server, clients, rate, seconds, senders=senders, client=client, settle=settle, grace=grace)
    )


# ----- servers of the lesson's own, in child processes ------------------------------------------


async def astart_server(what: str, *, compression: str = "off", name: str = "") -> processes.ChildServer:
    """Start ``python -m labtools.experiments.scale_server WHAT`` and wait for its URL (not registered).

    The child ends with this process, as every child of ``processes`` does (a death signal on
    Linux, and its stdin: a pipe only this process holds).
    """
    return await processes.start_module(
        "labtools.experiments.scale_server", [what, "--compression", compression], app=what,
        name=name or f"scale:{what}",
    )


def spawn_server(what: str, *, compression: str = "off", name: str | None = None) -> processes.ChildServer:
    """``what`` (``broadcast`` or an app's name, ``relay`` included) in a child process, registered
    like ``processes.spawn``: re-running replaces it, ``lt.stop_all`` stops it."""
    name = name or f"scale:{what}"

    async def make() -> processes.ChildServer:
        return await astart_server(what, compression=compression, name=name)

    return runtime.run(runtime.register(name, make))


def measure_compression(
    clients: int = 300,
    rate: float = 10.0,
    seconds: float = 2.0,
    settings: tuple[str, ...] = ("off", "on", "no-context-takeover"),
    *,
    settle: float = 1.0,
) -> list[ScaleResult]:
    """The same broadcast with per-message deflate off, on, and on without context takeover.

    Each setting runs on a fresh plain ``websockets`` broadcast server in a child process
    (``scale_server broadcast``), measured by ``measure_websocket`` with clients that ask for
    deflate and inflate what they receive: bytes per delivery (counted at the clients' sockets),
    the server's CPU µs per delivery and its RSS per connection, idle and after the broadcast.
    """
    processes.raise_file_limit()
    results = []
    for setting in settings:
        child = spawn_server("broadcast", compression=setting, name="measure-compression")
        try:
            result = measure_websocket(child, clients, rate, seconds, client="deflate", settle=settle)
        finally:
            child.stop()
        result.client_kind = f"deflate {setting}"
        results.append(result)
    return results


@dataclass
class TransportResult:
    """One transport at one size, the server in a child process (``measure_transport``)."""

    mode: str
    users: int
    crowd: Any  # the CrowdResult
    server_cpu_s: float
    server_rss_before: int
    server_rss_peak: int

    @property
    def server_cpu_ms_per_message(self) -> float:
        return self.server_cpu_s / self.crowd.delivered * 1e3 if self.crowd.delivered else float("nan")

    @property
    def server_kb_per_user(self) -> float:
        """The server's RSS growth during the run (peak − before) per user, in KiB (1,024 bytes)."""
        return (self.server_rss_peak - self.server_rss_before) / self.users / 1024

    def row(self) -> dict[str, Any]:
        c = self.crowd
        lat = c.latency.summary()
        return {
            "mode": self.mode,
            "users": self.users,
            "requests/s": c.requests_per_second,
            "KB/s": c.bytes_total / c.elapsed / 1000 if c.elapsed else float("nan"),
            "server CPU ms/message": self.server_cpu_ms_per_message,
            "server KB/user": self.server_kb_per_user,
            "p50 ms": lat["p50_ms"] if lat["count"] else float("nan"),
            "p99 ms": lat["p99_ms"] if lat["count"] else float("nan"),
            "server CPU s/s": self.server_cpu_s / c.elapsed if c.elapsed else float("nan"),
            "server CPU s": self.server_cpu_s,
            "requests": c.requests,
            "bytes/poll": c.bytes_per_poll,
            "sent": c.sent,
            "lost": c.lost,
            "errors": c.errors,
        }


async def ameasure_transport(server: processes.ChildServer, mode: str, users: int, **workload: Any) -> TransportResult:
    """``measure_transport`` on the labtools loop."""
    ps = psutil.Process(server.pid)
    rss0 = ps.memory_info().rss
    peak = rss0

    async def sample() -> None:
        nonlocal peak
        while True:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, ps.memory_info().rss)
            await asyncio.sleep(0.05)

    sampler = asyncio.get_running_loop().create_task(sample())
    cpu0 = server.cpu_seconds()
    try:
        # The relay has no /stats: its counts are the clients' own.
        result = await crowd(server.url, users=users, mode=mode, metered=mode != "websocket", **workload)
    finally:
        await runtime.cancel(sampler)
    return TransportResult(mode, users, result, server.cpu_seconds() - cpu0, rss0, peak)


def measure_transport(server: processes.ChildServer, mode: str, users: int, **workload: Any) -> TransportResult:
    """One ``crowd`` run (lessons 01-04's private-message workload) against ``server`` in a child
    process: the server's CPU seconds and its RSS growth are its own, read from its process.
    HTTP modes need the ``polling`` app (``processes.spawn("polling")``), ``"websocket"`` the
    ``relay`` (``spawn_server("relay")``)."""
    return runtime.run(ameasure_transport(server, mode, users, **workload))
