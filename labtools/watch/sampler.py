"""What the watch reads of a running server: its counters, turned into rates.

Every server of the course already counts what crosses its socket (``Traffic``: requests,
empty answers, bytes in and out). The watch only reads those totals, once a period, on the
labtools loop (where the server changes them), and divides what changed by the time that
passed. Nothing here does I/O, so a fake clock tests it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields

from ..events import EventServer
from ..measure.metered_http import MeteredSite
from ..measure.metrics import Counter
from ..polling.site import PollingServer
from ..serving import Server


@dataclass(frozen=True)
class Sample:
    """One period of a server's traffic, as its page draws it."""

    t: float  # seconds since the watch started
    requests: float  # requests per second (for a WebSocket server: upgrades and frames received)
    empty: float | None  # the share of those answers that were empty ("no new messages"); None: not counted
    bytes: float  # bytes per second, in and out, counted at the socket
    connections: int | None  # sockets open now; None: the server does not say
    wasted: int  # empty answers since the watch started


def open_connections(server: Server) -> int | None:
    """The sockets ``server`` holds open now: the HTTP server's gate counts them, the event
    server keeps them in a set."""
    if isinstance(server, MeteredSite):
        return server.gate.open
    if isinstance(server, EventServer):
        return len(server.connections)
    return None


def change(now: Counter, before: Counter) -> Counter:
    """What each counter gained; a counter lower than before was reset (``reset_stats``), so
    all of its value is new."""
    def gained(field: str) -> int:
        a, b = getattr(now, field), getattr(before, field)
        return a - b if a >= b else a

    return Counter(*(gained(f.name) for f in fields(Counter)))


class Sampler:
    """Reads ``server``'s counters each time it is asked for a ``sample``."""

    def __init__(self, server: Server, clock: Callable[[], float] = time.monotonic) -> None:
        self.server = server
        self.clock = clock
        #: Only the polling server answers "no new messages"; a WebSocket server pushes news only.
        self.counts_empty = isinstance(server, PollingServer)
        self.started = self.then = clock()
        self.before = self.totals()
        self.wasted = 0

    def totals(self) -> Counter:
        """A copy of the server's totals now (``Counter() + total``: a new object)."""
        return Counter() + self.server.traffic.total

    def sample(self) -> Sample:
        """The rates since the last sample, and what is open now."""
        now, totals = self.clock(), self.totals()
        seconds = max(now - self.then, 1e-6)
        new = change(totals, self.before)
        self.then, self.before = now, totals
        self.wasted += new.empty
        share = new.empty / new.requests if self.counts_empty and new.requests else None
        return Sample(
            t=round(now - self.started, 3),
            requests=new.requests / seconds,
            empty=share,
            bytes=(new.bytes_in + new.bytes_out) / seconds,
            connections=open_connections(self.server),
            wasted=self.wasted,
        )
