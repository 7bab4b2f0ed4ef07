"""What every simulated user is, whatever its transport: a ``ClientSpec`` in, a ``CrowdClient`` out.

A crowd builds its users from a mode's factory (``crowd.MODES``); the HTTP users
(``http_users``) and the WebSocket users (``ws_users``) each implement ``CrowdClient``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..measure.metrics import Traffic


@dataclass
class ClientSpec:
    """Everything a mode's factory needs to build one simulated user."""

    url: str
    user: str
    on_message: Callable[[dict, float], None]
    """Call with each message delivered (a dict with at least ``text``) and ``perf_counter()``."""
    on_answer: Callable[[float, int, float], None]
    """Call per answer: ``(perf_counter() at the request, messages in it, seconds it took)``."""
    interval: float = 1.0
    wait: float = 20.0
    phase: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class CrowdClient(Protocol):
    """One simulated user, whatever the transport."""

    traffic: Traffic

    async def start(self) -> None:
        """Begin listening; return once the user is ready to receive."""

    async def send(self, to: str, text: str) -> None:
        """Send ``text`` to user ``to``."""

    async def stop(self) -> None:
        """Make no new request; return once none is in flight, except one the server holds
        open (a long poll, a stream), which ``aclose`` ends without losing a byte."""

    async def aclose(self) -> None:
        """Stop and close every socket (idempotent)."""


ClientFactory = Callable[[ClientSpec], CrowdClient]
