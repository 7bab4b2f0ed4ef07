"""Slowing down password guessing: failures per account and per address, attempts per connection.

Why failures only: a person who types the right password is never slowed down, and the
course's own crowds (a hundred sign-ups from one process, one address) never fail. What is
throttled is guessing: after ``threshold`` failures for the same key, each further failure
closes that key for a window that doubles (``base``, 2×``base``, ...) up to ``longest``.
While closed, attempts are refused at once with ``rate-limited`` and ``retryAfter``, without
hashing, so a guesser gets a handful of tries per hour instead of several per second.

Why it always expires: a lockout that an attacker can start is a way to lock the real user
out. The window is bounded by ``longest`` and a key's record is forgotten ``forget`` seconds
after its last failure, so the real user is at worst delayed, never shut out. A success
clears the key.

Why loopback addresses are exempt from the per-address count: on Binder every connection
arrives through the notebook's proxy from 127.0.0.1, as do the lessons' crowds, so one
address there is everyone; counting its failures would let one learner's typos lock out the
class. Those users still have the per-account windows and the per-connection bucket.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from ...events import EventError


@dataclass
class _Record:
    failures: int
    last: float
    closed_until: float


class FailureThrottle:
    """Per-key failure counts with doubling, expiring windows (at most ``max_keys`` remembered)."""

    def __init__(
        self, what: str, *, threshold: int, base: float, longest: float, forget: float, max_keys: int = 100_000
    ) -> None:
        if threshold < 1 or base <= 0 or longest < base or forget < longest or max_keys < 1:
            raise ValueError("need threshold >= 1, 0 < base <= longest <= forget and max_keys >= 1")
        self.what = what
        self.threshold = threshold
        self.base = base
        self.longest = longest
        self.forget = forget
        self.max_keys = max_keys
        self._records: OrderedDict[str, _Record] = OrderedDict()  # least recently failed first

    def _record(self, key: str, now: float) -> _Record | None:
        record = self._records.get(key)
        if record is not None and now - record.last > self.forget:
            del self._records[key]
            return None
        return record

    def check(self, key: str) -> None:
        """Raise ``rate-limited`` while ``key``'s window is closed."""
        now = time.monotonic()
        record = self._record(key, now)
        if record is not None and record.closed_until > now:
            raise rate_limited(f"too many failed attempts for this {self.what}: wait before trying again",
                              record.closed_until - now)

    def failed(self, key: str) -> None:
        """Count a failure; from the ``threshold``-th on, close the key for a doubling window."""
        now = time.monotonic()
        record = self._record(key, now) or _Record(0, now, 0.0)
        record.failures += 1
        record.last = now
        beyond = record.failures - self.threshold
        if beyond >= 0:
            record.closed_until = now + min(self.longest, self.base * 2 ** min(beyond, 32))
        self._records[key] = record
        self._records.move_to_end(key)
        while len(self._records) > self.max_keys:
            self._records.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._records.pop(key, None)

    def failures(self, key: str) -> int:
        """Failures remembered for ``key`` (0 once forgotten)."""
        record = self._record(key, time.monotonic())
        return record.failures if record is not None else 0


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8 and ::1 (and anything that is not an IP, such as a Unix socket)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:  # a dual-stack listener
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def rate_limited(message: str, seconds: float) -> EventError:
    """``rate-limited``, with ``retryAfter`` rounded up to a tenth of a second (at least 0.1 s)."""
    return EventError("rate-limited", message, retry_after=max(0.1, math.ceil(seconds * 10) / 10))
