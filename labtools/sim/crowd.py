"""Crowds of simulated users.

``run_crowd(server, users=1000, mode="poll", interval=1.0, rate=5, duration=5, seed=1)`` starts
one simulated user per name, lets them send messages to each other (Poisson arrivals at ``rate``
messages per second, repeatable from ``seed``), keeps them listening in ``mode`` for
``duration`` seconds, drains until every message sent has arrived (or a bounded grace passed),
and returns a ``CrowdResult``: plain data for the cell to print and plot.

``MODES`` maps a mode's name to the factory of its users: ``"poll"``, ``"long-poll"`` and
``"sse"`` (``http_users``) and ``"websocket"`` (``ws_users``, against ``apps.relay``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from .. import runtime
from ..measure.metrics import LatencyLog, Traffic
from ..polling.client import HttpClient
from .http_users import long_poll_user, poll_user, sse_user
from .users import ClientFactory, ClientSpec
from .ws_users import WebSocketUser

MODES: dict[str, ClientFactory] = {
    "poll": poll_user,
    "long-poll": long_poll_user,
    "sse": sse_user,
    "websocket": WebSocketUser,
}


def make_schedule(users: int, rate: float, duration: float, seed: int) -> list[tuple[float, int, int]]:
    """Who sends to whom when: ``(seconds after the start, sender, recipient)``, repeatable.

    Poisson arrivals (exponential gaps of mean ``1/rate``); sender and recipient are distinct
    users drawn uniformly.
    """
    if users < 2 or rate <= 0:
        return []
    rng = random.Random(seed)
    schedule = []
    t = rng.expovariate(rate)
    while t < duration:
        sender = rng.randrange(users)
        recipient = rng.randrange(users - 1)
        recipient += recipient >= sender
        schedule.append((t, sender, recipient))
        t += rng.expovariate(rate)
    return schedule


def _phases(users: int, interval: float, seed: int) -> list[float]:
    """Each user's first poll, spread uniformly over one interval (repeatable from ``seed``)."""
    rng = random.Random(f"phases-{seed}")
    return [rng.random() * interval for _ in range(users)]


@dataclass
class CrowdResult:
    """What one crowd run measured: plain data (lists, dicts, numbers) to print and plot.

    Client-side numbers are counted at the clients' sockets; ``server`` is the change in the
    server's ``/stats`` over the run. ``timeline`` has one ``(t, messages)`` per answer (per SSE
    chunk), ``t`` in seconds from the start; ``held`` samples ``(t, open requests or streams)``.
    """

    users: int
    mode: str
    duration: float
    interval: float
    wait: float
    rate: float
    seed: int
    requests: int = 0
    requests_by_route: dict[str, int] = field(default_factory=dict)
    empty: int = 0
    client_bytes_in: int = 0
    client_bytes_out: int = 0
    client_routes: dict[str, dict[str, int]] = field(default_factory=dict)
    server: dict = field(default_factory=dict)
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    errors: int = 0
    latency: LatencyLog = field(default_factory=LatencyLog)
    request_times: LatencyLog = field(default_factory=LatencyLog)
    timeline: list[tuple[float, int]] = field(default_factory=list)
    held: list[tuple[float, int]] = field(default_factory=list)
    schedule: list[tuple[float, int, int]] = field(default_factory=list)
    elapsed: float = 0.0
    requests_in_window: int = 0

    @property
    def requests_per_second(self) -> float:
        """Requests the clients made per second during ``duration`` (set-up and drain excluded)."""
        return self.requests_in_window / self.duration

    @property
    def empty_fraction(self) -> float:
        """The share of answers that said "no new messages" (``[]``)."""
        return self.empty / self.requests if self.requests else math.nan

    @property
    def server_bytes_in(self) -> int:
        return self.server.get("total", {}).get("bytesIn", 0)

    @property
    def server_bytes_out(self) -> int:
        return self.server.get("total", {}).get("bytesOut", 0)

    @property
    def bytes_total(self) -> int:
        """Bytes on the wire both ways, as the clients counted them."""
        return self.client_bytes_in + self.client_bytes_out

    @property
    def bytes_per_poll(self) -> float:
        """Bytes (both ways, headers included) of one ``GET /messages`` on average."""
        route = self.client_routes.get("GET /messages")
        if not route or not route["requests"]:
            return math.nan
        return (route["bytesIn"] + route["bytesOut"]) / route["requests"]

    @property
    def held_max(self) -> int:
        return max((n for _t, n in self.held), default=0)

    def summary(self) -> dict[str, Any]:
        """The headline numbers, rounded for printing."""
        lat = self.latency.summary()
        return {
            "mode": self.mode,
            "users": self.users,
            "requests": self.requests,
            "requests/s": round(self.requests_per_second, 1),
            "empty %": round(100 * self.empty_fraction, 1) if self.requests else None,
            "KB on the wire": round(self.bytes_total / 1000, 1),
            "sent": self.sent,
            "delivered": self.delivered,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "latency p50 ms": round(lat["p50_ms"], 1) if lat["count"] else None,
            "latency p99 ms": round(lat["p99_ms"], 1) if lat["count"] else None,
            "held max": self.held_max,
        }

    def __repr__(self) -> str:
        s = self.summary()
        return (f"<CrowdResult {s['mode']} users={s['users']} requests={s['requests']} "
                f"sent={s['sent']} delivered={s['delivered']} lost={s['lost']}>")


def resolve(server_or_url: Any) -> tuple[str, Traffic | None]:
    """The URL to use, and the server's live ``Traffic`` when it runs in this process."""
    if isinstance(server_or_url, str):
        return server_or_url, None
    inner = getattr(server_or_url, "server", server_or_url)
    return server_or_url.url, getattr(inner, "traffic", None)


async def _server_stats(url: str, traffic: Traffic | None) -> dict:
    if traffic is not None:
        return traffic.as_dict()
    client = HttpClient(url)  # over the wire: the delta then includes one /stats request
    try:
        return await client.get_json("/stats")
    finally:
        await client.aclose()


def _delta(after: dict, before: dict) -> dict:
    def sub(a: dict, b: dict) -> dict:
        return {k: a.get(k, 0) - b.get(k, 0) for k in a}

    routes = {name: sub(c, before.get("routes", {}).get(name, {})) for name, c in after.get("routes", {}).items()}
    return {"total": sub(after["total"], before.get("total", {})),
            "routes": {k: v for k, v in routes.items() if any(v.values())}}


async def crowd(
    server_or_url: Any,
    *,
    users: int = 100,
    mode: str = "poll",
    interval: float = 1.0,
    wait: float = 20.0,
    rate: float = 5.0,
    duration: float = 5.0,
    seed: int = 1,
    grace: float | None = None,
    sample_every: float = 0.1,
    **options: Any,
) -> CrowdResult:
    """Run a crowd on the *running* loop (a benchmark's own loop, or the labtools loop).

    Cells use ``run_crowd`` (sync) or ``await arun_crowd(...)``, which run this on the labtools
    loop, next to the servers started with ``lt.serve``.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    url, server_traffic = resolve(server_or_url)
    result = CrowdResult(users, mode, duration, interval, wait, rate, seed)
    result.schedule = make_schedule(users, rate, duration, seed)
    tag = secrets.token_hex(3)  # fresh names: old messages on the same server are not ours
    names = [f"{tag}-u{i}" for i in range(users)]
    sent_at: dict[str, float] = {}
    delivered: set[str] = set()
    t0 = time.perf_counter()

    def on_message(message: dict, received_at: float) -> None:
        key = message.get("text")
        started = sent_at.get(key)  # type: ignore[arg-type]
        if started is None:
            return
        if key in delivered:
            result.duplicated += 1
            return
        delivered.add(key)  # type: ignore[arg-type]
        result.latency.add(received_at - started)

    def on_answer(started: float, n: int, seconds: float) -> None:
        result.timeline.append((started - t0, n))
        if seconds:
            result.request_times.add(seconds)

    phases = _phases(users, interval, seed)
    clients = [
        MODES[mode](ClientSpec(url, names[i], on_message, on_answer, interval, wait, phases[i], dict(options)))
        for i in range(users)
    ]
    before = await _server_stats(url, server_traffic)
    sampler: asyncio.Task | None = None
    try:
        await asyncio.gather(*(c.start() for c in clients))
        t0 = time.perf_counter()
        result.timeline.clear()  # answers from before t0 (an SSE "connected") are set-up
        result.request_times = LatencyLog()

        async def sample() -> None:
            while True:
                held = sum(getattr(c, "in_flight", 0) for c in clients)
                result.held.append((time.perf_counter() - t0, held))
                await asyncio.sleep(sample_every)

        sampler = asyncio.get_running_loop().create_task(sample())
        requests_at_start = sum(c.traffic.total.requests for c in clients)
        sends: list[asyncio.Task] = []
        loop = asyncio.get_running_loop()
        for index, (at, sender, recipient) in enumerate(result.schedule):
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            text = f"{tag}-m{index}"
            sent_at[text] = time.perf_counter()
            sends.append(loop.create_task(clients[sender].send(names[recipient], text)))
        delay = t0 + duration - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        requests_in_window = sum(c.traffic.total.requests for c in clients) - requests_at_start
        if sends:
            await asyncio.gather(*sends)
        result.sent = len(sent_at)
        limit = time.perf_counter() + (grace if grace is not None else interval * 1.5 + 1.0)
        while len(delivered) < result.sent and time.perf_counter() < limit:
            await asyncio.sleep(0.02)
    finally:
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)
    result.elapsed = time.perf_counter() - t0
    made = sum(c.traffic.total.requests for c in clients)
    if server_traffic is not None:
        # Held requests and streams are counted by the server when it sees their sockets close:
        # wait (bounded) until it has counted every request the clients made.
        target = before["total"]["requests"] + made
        deadline = time.perf_counter() + 2.0
        while server_traffic.total.requests < target and time.perf_counter() < deadline:
            await asyncio.sleep(0.02)
    else:
        await asyncio.sleep(0.2)
    result.server = _delta(await _server_stats(url, server_traffic), before)
    result.delivered = len(delivered)
    result.lost = result.sent - result.delivered
    result.errors = sum(getattr(c, "errors", 0) for c in clients)
    total = Traffic()
    for client in clients:
        t = client.traffic
        total.total.requests += t.total.requests
        total.total.empty += t.total.empty
        total.total.bytes_in += t.total.bytes_in
        total.total.bytes_out += t.total.bytes_out
        for name, c in t.routes.items():
            r = total.route(name)
            r.requests += c.requests
            r.empty += c.empty
            r.bytes_in += c.bytes_in
            r.bytes_out += c.bytes_out
    result.requests = total.total.requests
    result.requests_in_window = requests_in_window
    result.empty = total.total.empty
    result.client_bytes_in = total.total.bytes_in
    result.client_bytes_out = total.total.bytes_out
    result.client_routes = total.as_dict()["routes"]
    result.requests_by_route = {name: c["requests"] for name, c in result.client_routes.items()}
    return result


def run_crowd(server_or_url: Any, **kwargs: Any) -> CrowdResult:
    """Run a crowd on the labtools loop and wait for its result (arguments: see ``crowd``)."""
    return runtime.run(crowd(server_or_url, **kwargs))


async def arun_crowd(server_or_url: Any, **kwargs: Any) -> CrowdResult:
    """``run_crowd`` for top-level ``await`` in a cell: the crowd runs on the labtools loop."""
    return await runtime.arun(crowd(server_or_url, **kwargs))
