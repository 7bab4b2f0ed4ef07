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
from collections.abc import AsyncIterator
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


#: Seconds a crowd waits for its users' last requests to be answered before closing anyway.
SETTLE = 2.0
#: Seconds a crowd waits for the server to count the requests its clients made.
COUNT_WAIT = 2.0


class CrowdRun:
    """One crowd's moving parts: its users, its clock, what was sent and what arrived.

    ``crowd`` drives it step by step: ``start_users``, ``play`` (the schedule, while
    ``sampling``), ``drain``, ``stop_users``, ``close``, then ``collect`` into the result.
    """

    def __init__(self, url: str, result: CrowdResult, options: dict[str, Any]) -> None:
        self.result = result
        self.tag = secrets.token_hex(3)  # fresh names: old messages on the same server are not ours
        self.names = [f"{self.tag}-u{i}" for i in range(result.users)]
        self.sent_at: dict[str, float] = {}
        self.delivered: set[str] = set()
        self.t0 = time.perf_counter()
        self.requests_in_window = 0
        phases = _phases(result.users, result.interval, result.seed)
        self.clients = [
            MODES[result.mode](ClientSpec(url, name, self.on_message, self.on_answer, result.interval, result.wait,
                                          phase, dict(options)))
            for name, phase in zip(self.names, phases, strict=True)
        ]

    def on_message(self, message: dict, received_at: float) -> None:
        """A user got a message: the first copy is a delivery, a second one a duplicate."""
        key = message.get("text")
        started = self.sent_at.get(key)  # type: ignore[arg-type]
        if started is None:
            return
        if key in self.delivered:
            self.result.duplicated += 1
            return
        self.delivered.add(key)  # type: ignore[arg-type]
        self.result.latency.add(received_at - started)

    def on_answer(self, started: float, n: int, seconds: float) -> None:
        self.result.timeline.append((started - self.t0, n))
        if seconds:
            self.result.request_times.add(seconds)

    def requests_made(self) -> int:
        return sum(c.traffic.total.requests for c in self.clients)

    async def start_users(self) -> None:
        """Start everyone listening, then start the clock: set-up is not part of the run."""
        await asyncio.gather(*(c.start() for c in self.clients))
        self.t0 = time.perf_counter()
        self.result.timeline.clear()  # answers from before t0 (an SSE "connected") are set-up
        self.result.request_times = LatencyLog()

    @contextlib.asynccontextmanager
    async def sampling(self, every: float) -> AsyncIterator[None]:
        """Sample ``(t, requests or streams held open)`` every ``every`` seconds meanwhile."""

        async def sample() -> None:
            while True:
                held = sum(getattr(c, "in_flight", 0) for c in self.clients)
                self.result.held.append((time.perf_counter() - self.t0, held))
                await asyncio.sleep(every)

        sampler = asyncio.get_running_loop().create_task(sample())
        try:
            yield
        finally:
            await runtime.cancel(sampler)

    async def play(self) -> None:
        """Send the schedule's messages on time, open loop, until ``duration``; wait for the sends."""
        loop = asyncio.get_running_loop()
        at_start = self.requests_made()
        sends: list[asyncio.Task] = []
        for index, (at, sender, recipient) in enumerate(self.result.schedule):
            await _sleep_until(self.t0 + at)
            text = f"{self.tag}-m{index}"
            self.sent_at[text] = time.perf_counter()
            sends.append(loop.create_task(self.clients[sender].send(self.names[recipient], text)))
        await _sleep_until(self.t0 + self.result.duration)
        self.requests_in_window = self.requests_made() - at_start
        await asyncio.gather(*sends)
        self.result.sent = len(self.sent_at)

    async def drain(self, grace: float) -> None:
        """Wait until every message sent has arrived, or ``grace`` seconds passed."""
        limit = time.perf_counter() + grace
        while len(self.delivered) < self.result.sent and time.perf_counter() < limit:
            await asyncio.sleep(0.02)

    async def stop_users(self, settle: float = SETTLE) -> None:
        """Stop every user's schedule and wait (bounded) until no request is in flight, so that
        closing cuts no request or answer in half and both ends count the same bytes."""
        stops = asyncio.gather(*(c.stop() for c in self.clients), return_exceptions=True)
        # Past ``settle``, ``close`` still ends every connection cleanly (half-close, read to the end).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stops, settle)

    async def close(self) -> None:
        """Close every user's sockets; the run's clock stops here."""
        await asyncio.gather(*(c.aclose() for c in self.clients), return_exceptions=True)
        self.result.elapsed = time.perf_counter() - self.t0

    def collect(self) -> None:
        """The clients' counts, summed, into the result."""
        result = self.result
        result.delivered = len(self.delivered)
        result.lost = result.sent - result.delivered
        result.errors = sum(getattr(c, "errors", 0) for c in self.clients)
        total = Traffic.sum(c.traffic for c in self.clients)
        result.requests = total.total.requests
        result.requests_in_window = self.requests_in_window
        result.empty = total.total.empty
        result.client_bytes_in = total.total.bytes_in
        result.client_bytes_out = total.total.bytes_out
        result.client_routes = total.as_dict()["routes"]
        result.requests_by_route = {name: c["requests"] for name, c in result.client_routes.items()}


async def _sleep_until(when: float) -> None:
    delay = when - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def _server_caught_up(server_traffic: Traffic | None, target: int) -> None:
    """Held requests and streams are counted by the server when it sees their sockets close:
    wait (bounded) until it has counted ``target`` requests."""
    if server_traffic is None:
        await asyncio.sleep(0.2)  # a server elsewhere: give its counters a moment
        return
    deadline = time.perf_counter() + COUNT_WAIT
    while server_traffic.total.requests < target and time.perf_counter() < deadline:
        await asyncio.sleep(0.02)


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
    metered: bool = True,
    **options: Any,
) -> CrowdResult:
    """Run a crowd on the *running* loop (a benchmark's own loop, or the labtools loop).

    Cells use ``run_crowd`` (sync) or ``await arun_crowd(...)``, which run this on the labtools
    loop, next to the servers started with ``lt.serve``.

    ``metered=False``: the server keeps no counts to read (the relay has no ``/stats``), so the
    crowd neither asks for them nor waits for them to catch up; ``result.server`` is all zeros
    and the counts are the clients' own.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    url, server_traffic = resolve(server_or_url)
    result = CrowdResult(users, mode, duration, interval, wait, rate, seed)
    result.schedule = make_schedule(users, rate, duration, seed)
    run = CrowdRun(url, result, options)
    before = await _server_stats(url, server_traffic) if metered else Traffic().as_dict()
    try:
        await run.start_users()
        async with run.sampling(sample_every):
            await run.play()
            await run.drain(grace if grace is not None else interval * 1.5 + 1.0)
        await run.stop_users()
    finally:
        await run.close()
    after = before  # unmetered: nothing counted, so the delta is all zeros
    if metered:
        await _server_caught_up(server_traffic, before["total"]["requests"] + run.requests_made())
        after = await _server_stats(url, server_traffic)
    result.server = _delta(after, before)
    run.collect()
    return result


def run_crowd(server_or_url: Any, **kwargs: Any) -> CrowdResult:
    """Run a crowd on the labtools loop and wait for its result (arguments: see ``crowd``)."""
    return runtime.run(crowd(server_or_url, **kwargs))


async def arun_crowd(server_or_url: Any, **kwargs: Any) -> CrowdResult:
    """``run_crowd`` for top-level ``await`` in a cell: the crowd runs on the labtools loop."""
    return await runtime.arun(crowd(server_or_url, **kwargs))
