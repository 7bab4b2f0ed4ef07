"""Lesson 10 (when things go wrong): exercises and their solutions."""

from __future__ import annotations

from typing import Any

from .registry import call, exercise, not_a_function, number


def check_window(answer: Any) -> None:
    assert callable(answer), not_a_function(answer, "retry_window(attempt, base, cap)")
    cases = [(0, 0.1, 5.0, 0.1), (1, 0.1, 5.0, 0.2), (3, 0.1, 5.0, 0.8), (5, 0.1, 5.0, 3.2), (6, 0.1, 5.0, 5.0),
             (20, 0.1, 5.0, 5.0), (2, 0.25, 5.0, 1.0), (4, 1.0, 2.0, 2.0)]
    for attempt, base, cap, high in cases:
        got = call(answer, attempt, base, cap)
        assert isinstance(got, tuple) and len(got) == 2 and all(number(x) for x in got), (
            f"return a pair of numbers (low, high), not {got!r}"
        )
        low, top = got
        assert low == 0, (
            f"retry_window({attempt}, {base}, {cap}) starts at {low!r}: full jitter draws from 0, so that some "
            "clients retry at once and the others spread over the whole window"
        )
        if abs(top - base * 2 ** (attempt + 1)) < 1e-9 and abs(top - high) > 1e-9:
            raise AssertionError(f"retry_window({attempt}, ...) ends at {top!r}: the first retry (attempt 0) waits "
                                 f"up to base itself, base * 2**attempt")
        assert abs(top - high) < 1e-9, (
            f"retry_window({attempt}, {base}, {cap}) should end at {high!r}, not {top!r}: base * 2**attempt, "
            "but never more than cap"
        )


@exercise("10.1", check_window)
def retry_window(attempt: int, base: float, cap: float) -> tuple[float, float]:
    # Full jitter: the wait before retry `attempt` is uniform between these two numbers.
    return (0.0, min(cap, base * 2**attempt))


RECONNECT = {1001: True, 1006: True, 1011: True, 1012: True, 1013: True,
             1000: False, 1003: False, 1008: False, 1009: False, 4001: False, 4000: False, 4999: False}


def check_reconnect(answer: Any) -> None:
    assert callable(answer), not_a_function(answer, "should_reconnect(code)")
    for code, expected in RECONNECT.items():
        got = call(answer, code)
        assert isinstance(got, bool) or got != expected, f"return a bool (True or False), not {got!r}"
        if expected:
            why = ("the server went away or failed, or the network did: the same client may well be welcome in a "
                   "moment, so try again (with backoff)")
        elif code >= 4000:
            why = ("4000-4999 are the app's own codes, and the course's apps use them to say 'do not come back' "
                   "(the chat's 4001: one socket too many for this user)")
        else:
            why = ("the server closed on purpose, because of what this client sent or is: reconnecting would only "
                   "repeat it")
        assert got is expected, f"should_reconnect({code}) should be {expected}, not {got!r}: {why}"


@exercise("10.2", check_reconnect)
def should_reconnect(code: int) -> bool:
    # Going away, abnormal closure (no close frame), internal error, service restart, try again later.
    return code in (1001, 1006, 1011, 1012, 1013)


def check_spread(answer: Any) -> None:
    assert number(answer), f"answer with a number of attempts, not {answer!r}"
    assert answer != 1000, (
        "1000 in one 100 ms slot is the herd without jitter: with full jitter each client picks its own "
        "moment in the 2 s window"
    )
    assert answer != 500, "the window starts at 0: full jitter spreads the attempts over all of the 2 s"
    assert abs(answer - 50) < 1e-9, (
        f"{answer}? 1,000 attempts spread evenly over 2 s are 500 a second, and a slot is a tenth of a second"
    )


@exercise("10.3", check_spread, value=True)
def attempts_per_slot() -> float:
    # 1,000 clients, each waiting uniform(0, 2 s) before its retry: attempts per 100 ms, on average.
    return 1000 / (2.0 / 0.1)
