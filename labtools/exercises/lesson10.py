"""Lesson 10 (when things go wrong): exercises and their solutions."""

from __future__ import annotations

from typing import Any

from ..events import client as events_client
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


# Why a client should or should not come back after each close code, grouped (the hint a wrong
# answer gets names the group it got wrong; the rule itself is events.client.should_reconnect).
def why_reconnect(code: int) -> str:
    if events_client.should_reconnect(code):
        return ("the server went away or failed, or the network did, or a proxy lost the server, or the server "
                "asked for a moment: the same client may well be welcome soon, so try again (with backoff)")
    if code >= 3000:
        return ("3000-3999 are codes registered by libraries and 4000-4999 the app's own codes: the course's apps "
                "use them to say 'do not come back' (the chat's 4001: one socket too many for this user)")
    if code in (1000, 1005):
        return "the server closed on purpose (1005: its close frame carried no code): coming back would be closed again"
    if code == 1015:
        return "the TLS handshake failed (a certificate): a new try fails the same way"
    if code == 1004:
        return "1004 is reserved and means nothing: after any code not on the list, stay closed"
    return "the close was caused by what this client sent or lacks: reconnecting would only repeat it"


def check_reconnect(answer: Any) -> None:
    assert callable(answer), not_a_function(answer, "should_reconnect(code)")
    wrong: dict[str, list[int]] = {}
    for code in events_client.CLIENT_VISIBLE:
        got = call(answer, code)
        expected = events_client.should_reconnect(code)
        assert isinstance(got, bool) or got != expected, f"return a bool (True or False), not {got!r}"
        if got is not expected:
            wrong.setdefault(why_reconnect(code), []).append(code)
    if wrong:
        why, codes = max(wrong.items(), key=lambda item: len(item[1]))
        total = sum(len(c) for c in wrong.values())
        expected = events_client.should_reconnect(codes[0])
        raise AssertionError(f"should_reconnect({codes[0]}) should be {expected}: {why} ({total} of the "
                             f"{len(events_client.CLIENT_VISIBLE)} codes 1000-1015 and 3000-4999 are wrong)")


@exercise("10.2", check_reconnect)
def should_reconnect(code: int) -> bool:
    # Going away, closed without a close frame (network, crash), internal error, service restart,
    # try again later, bad gateway: temporary, and not this client's doing. Anything else: stay closed.
    return code in (1001, 1006, 1011, 1012, 1013, 1014)


def check_spread(answer: Any) -> None:
    assert number(answer), f"answer with a number of attempts, not {answer!r}"
    assert answer != 1000, (
        "1000 in one 100 ms slot is the herd without jitter: with full jitter each client picks its own "
        "moment in the 2 s window"
    )
    assert answer != 500, (
        "500 is per second (1,000 attempts spread evenly over 2 s): the question asks per 100 ms slot, a tenth "
        "of a second"
    )
    assert abs(answer - 50) < 1e-9, (
        f"{answer}? 1,000 attempts spread evenly over 2 s are 500 a second, and a slot is a tenth of a second"
    )


@exercise("10.3", check_spread, value=True)
def attempts_per_slot() -> float:
    # 1,000 clients, each waiting uniform(0, 2 s) before its retry: attempts per 100 ms, on average.
    return 1000 / (2.0 / 0.1)
