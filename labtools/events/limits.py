"""What one client may cost an event server, and what all of them may buffer together.

The numbers are PROTOCOL.md's (its appended "Limits of every WebSocket server"); a lesson at
scale raises them with ``EventServer(limits=Limits(...))``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

MIB = 1_048_576
MAX_FRAME = MIB
SLOW_CLIENT_BUFFER = 4 * MIB


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may cost the server, and what all of them may buffer together.

    ``frames_per_second``/``frame_burst``: frames accepted from one client (control frames and
    each handler's ``cost`` included). ``bytes_per_second``/``byte_burst``: text accepted from one
    client, taken before the text is parsed (parsing 1 MiB costs tens of milliseconds).
    ``client_buffer``: unsent bytes a client may leave on the server before it is cut;
    ``read_pause``: above this, the server stops reading from that client (so it cannot make
    the server write more) until the client catches up. ``total_buffer``: unsent bytes across
    all clients; beyond it the clients with the largest backlogs are cut. ``max_frame``: the
    largest text frame accepted (1009 closes the connection beyond it).
    """

    frames_per_second: float = 100
    frame_burst: float = 200
    bytes_per_second: float = MIB / 4
    byte_burst: float = 2 * MAX_FRAME
    client_buffer: int = SLOW_CLIENT_BUFFER
    read_pause: int = 64 * 1024
    total_buffer: int = 64 * MIB
    max_frame: int = MAX_FRAME

    def __post_init__(self) -> None:
        for field in fields(self):
            if not getattr(self, field.name) > 0:
                raise ValueError(f"Limits.{field.name} must be positive")
        if self.byte_burst < self.max_frame:
            raise ValueError("Limits.byte_burst must hold one frame of max_frame bytes")
        if not self.read_pause < self.client_buffer <= self.total_buffer:
            raise ValueError("Limits need read_pause < client_buffer <= total_buffer")


class TokenBucket:
    """``burst`` units at once, refilled at ``per_second``: frames, or bytes of text."""

    __slots__ = ("burst", "per_second", "tokens", "stamp")

    def __init__(self, burst: float, per_second: float) -> None:
        self.burst = burst
        self.per_second = per_second
        self.tokens = burst
        self.stamp = time.monotonic()

    def wait(self, amount: float) -> float:
        """Seconds until ``amount`` units are available (0.0: now); takes nothing."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.per_second)
        self.stamp = now
        return max(0.0, (amount - self.tokens) / self.per_second)

    def take(self, amount: float) -> None:
        """Spend ``amount`` units; the balance may go negative (a debt the refill pays back)."""
        self.tokens -= amount
