"""Wait until something holds: the one polling helper of the tests.

``wait_until`` for plain tests (it sleeps the calling thread), ``eventually`` for coroutines (it
awaits, so the loop it runs on keeps serving meanwhile). Both check ``predicate`` at once, then
every ``interval`` seconds, the last check at the deadline itself; if it never held they raise an
``AssertionError`` that says what was awaited and for how long, so a failing test reads
"waited 5.0 s for node2 to be DOWN" rather than "assert False".

Never call ``wait_until`` on the labtools loop's thread (inside a coroutine that ``lt.run``
runs): the sleep would block the very loop that has to make the predicate true.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["eventually", "wait_until"]


def _timed_out(what: str, within: float) -> AssertionError:
    return AssertionError(f"waited {within:g} s for {what}; it never held")


def wait_until(predicate: Callable[[], object], within: float = 5.0, interval: float = 0.02,
               what: str = "condition") -> None:
    """Return as soon as ``predicate()`` is true; raise ``AssertionError`` after ``within`` s."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() >= deadline:
            raise _timed_out(what, within)
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


async def eventually(predicate: Callable[[], object], within: float = 5.0, interval: float = 0.02,
                     what: str = "condition") -> None:
    """The coroutine form of ``wait_until``: awaits between checks instead of blocking the loop."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() >= deadline:
            raise _timed_out(what, within)
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
