"""Lesson 01 (polling): the arithmetic of setInterval, checked."""

from __future__ import annotations

import math
from typing import Any

from .registry import call, exercise, not_a_function, number


def check_requests_per_second(answer: Any) -> None:
    assert number(answer), f"answer should be a number of requests per second, not {answer!r}"
    assert not math.isclose(answer, 2000), "2,000 is users × interval; every user asks once per interval: divide"
    assert not math.isclose(answer, 0.5), "0.5 is interval / users: it is users / interval requests per second"
    assert math.isclose(answer, 500), f"1,000 users asking every 2 s make 500 requests per second, not {answer}"


@exercise("01.1", check_requests_per_second, value=True)
def requests_per_second() -> float:
    users, interval = 1_000, 2.0
    return users / interval  # every user asks once per interval, messages or not


def check_daily_bytes(answer: Any) -> None:
    assert callable(answer), not_a_function(answer, "daily_bytes(users, interval, bytes_per_poll)")
    cases = [((1, 1.0, 100), 8_640_000), ((1_000, 2.0, 250), 10_800_000_000), ((10**7, 1.0, 300), 2.592e14)]
    for args, expected in cases:
        got = call(answer, *args)
        assert number(got), f"daily_bytes{args} should return a number, got {got!r}"
        hint = "(users / interval polls per second × bytes per poll × 86,400 s in a day)"
        if any(math.isclose(got * unit, expected, rel_tol=1e-9) for unit in (3600, 60)):  # 24 h or 1,440 min
            hint = "a day is 86,400 seconds (24 × 60 × 60), not hours or minutes"
        elif math.isclose(got, expected * _interval_squared(args), rel_tol=1e-9):
            hint = "users / interval polls per second: divide by the interval, do not multiply"
        assert math.isclose(got, expected, rel_tol=1e-9), (
            f"daily_bytes{args} should be {expected:,.0f} bytes, got {got:,.0f}: {hint}"
        )


def _interval_squared(args: tuple[float, float, float]) -> float:
    return args[1] ** 2


@exercise("01.2", check_daily_bytes)
def daily_bytes(users: float, interval: float, bytes_per_poll: float) -> float:
    return users / interval * bytes_per_poll * 86_400


def check_mean_latency(answer: Any) -> None:
    assert number(answer), f"answer should be a number of seconds, not {answer!r}"
    assert not math.isclose(answer, 4.0), (
        "a message waits for the reader's next poll: anywhere between 0 and a whole interval"
    )
    assert not math.isclose(answer, 2000), "answer in seconds, not milliseconds"
    assert math.isclose(answer, 2.0), f"on average a message waits half the 4 s interval (2 s), not {answer}"


@exercise("01.3", check_mean_latency, value=True)
def mean_latency() -> float:
    interval = 4.0
    return interval / 2  # arrivals are uniform over the interval: the wait is on average half of it
