"""What the lessons measure, as plain Python data a learner can inspect.

* ``Traffic``: requests by route, empty answers, bytes in and out (PROTOCOL.md's ``/stats``).
* ``Trace``: a timestamped list of who sent what to whom, for sequence diagrams.
* ``LatencyLog``: one delivery latency per delivered message, with percentiles.

Everything is mutated only on the labtools loop thread; read it from a cell through the
snapshot methods (``as_dict``, ``events``, ``summary``), which copy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, fields


@dataclass
class Counter:
    """Counts for one route (or the total)."""

    requests: int = 0
    empty: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def __add__(self, other: Counter) -> Counter:
        """Field-wise sum: many connections' counts seen as one."""
        if not isinstance(other, Counter):
            return NotImplemented
        return Counter(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def as_dict(self) -> dict[str, int]:
        """The PROTOCOL.md spelling: ``requests``, ``empty``, ``bytesIn``, ``bytesOut``."""
        return {
            "requests": self.requests,
            "empty": self.empty,
            "bytesIn": self.bytes_in,
            "bytesOut": self.bytes_out,
        }


@dataclass
class Traffic:
    """A server's or a client's counters: the total and one ``Counter`` per route."""

    total: Counter = field(default_factory=Counter)
    routes: dict[str, Counter] = field(default_factory=dict)

    def route(self, name: str) -> Counter:
        counter = self.routes.get(name)
        if counter is None:
            counter = self.routes[name] = Counter()
        return counter

    def request(self, name: str, *, empty: bool = False) -> None:
        """Count one request on route ``name`` (and in the total)."""
        counter = self.route(name)
        counter.requests += 1
        self.total.requests += 1
        if empty:
            counter.empty += 1
            self.total.empty += 1

    def bytes(self, name: str, *, inbound: int = 0, outbound: int = 0) -> None:
        """Attribute bytes to route ``name`` (the total is counted separately, at the socket)."""
        counter = self.route(name)
        counter.bytes_in += inbound
        counter.bytes_out += outbound

    def __add__(self, other: Traffic) -> Traffic:
        """Both totals and every route summed: a crowd's clients counted as one client."""
        if not isinstance(other, Traffic):
            return NotImplemented
        routes = dict(self.routes)
        for name, counter in other.routes.items():
            routes[name] = routes[name] + counter if name in routes else counter + Counter()
        return Traffic(self.total + other.total, {n: c + Counter() for n, c in routes.items()})

    @classmethod
    def sum(cls, traffics: Iterable[Traffic]) -> Traffic:
        """The sum of many ``Traffic``s (a fresh one for none), sharing no counter with them."""
        total = cls()
        for traffic in traffics:
            total = total + traffic
        return total

    def as_dict(self) -> dict:
        return {
            "total": self.total.as_dict(),
            "routes": {name: c.as_dict() for name, c in sorted(self.routes.items())},
        }

    def reset(self) -> None:
        """Every count back to zero. ``total`` is zeroed in place, never replaced: the event layer's
        server and its connections count bytes straight into the object they were given."""
        for name in (f.name for f in fields(self.total)):
            setattr(self.total, name, 0)
        self.routes = {}


@dataclass(frozen=True)
class TraceEvent:
    """One arrow of a sequence diagram: at ``t`` seconds, ``src`` sent ``label`` to ``dst``."""

    t: float
    src: str
    dst: str
    label: str


class Trace:
    """A timestamped record of messages between named parties (Pedro, server, Ana...)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.start = time.perf_counter()
        self.limit = limit
        self._events: list[TraceEvent] = []

    def record(self, src: str, dst: str, label: str) -> None:
        if len(self._events) < self.limit:
            self._events.append(TraceEvent(time.perf_counter() - self.start, src, dst, label))

    def events(self) -> list[TraceEvent]:
        return list(self._events)

    def clear(self) -> None:
        self.start = time.perf_counter()
        self._events.clear()


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class LatencyLog:
    """Delivery latencies in seconds: from the sender's send to the receiver's receipt."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def add(self, seconds: float) -> None:
        self.values.append(seconds)

    def summary(self) -> dict[str, float]:
        """Count, mean, p50, p90, p99 and max, in milliseconds."""
        v = self.values
        ms = 1000.0
        return {
            "count": len(v),
            "mean_ms": (sum(v) / len(v) * ms) if v else math.nan,
            "p50_ms": percentile(v, 50) * ms,
            "p90_ms": percentile(v, 90) * ms,
            "p99_ms": percentile(v, 99) * ms,
            "max_ms": (max(v) * ms) if v else math.nan,
        }
