"""Lesson 01 (polling): the arithmetic of setInterval, checked."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .registry import exercise


def check_requests_per_second(answer: Any) -> None:
    assert isinstance(answer, (int, float)), "answer should be a number of requests per second"
    assert not math.isclose(answer, 2000), "2,000 is users × interval; every user asks once per interval: divide"
    assert math.isclose(answer, 500), f"1,000 users asking every 2 s make 500 requests per second, not {answer}"


@exercise("01.1", check_requests_per_second)
def requests_per_second_solution() -> float:
    users, interval = 1_000, 2.0
    return users / interval  # every user asks once per interval, messages or not


def check_daily_bytes(answer: Any) -> None:
    assert callable(answer), "answer should be a function daily_bytes(users, interval, bytes_per_poll)"
    cases = [((1, 1.0, 100), 8_640_000), ((1_000, 2.0, 250), 10_800_000_000), ((10**7, 1.0, 300), 2.592e14)]
    for args, expected in cases:
        got = answer(*args)
        assert isinstance(got, (int, float)), f"daily_bytes{args} should return a number, got {got!r}"
        assert math.isclose(got, expected, rel_tol=1e-9), (
            f"daily_bytes{args} should be {expected:,.0f} bytes "
            f"(users / interval polls per second × bytes per poll × 86,400 s), got {got:,.0f}"
        )


@exercise("01.2", check_daily_bytes)
def daily_bytes_solution() -> Callable[[float, float, float], float]:
    def daily_bytes(users: float, interval: float, bytes_per_poll: float) -> float:
        return users / interval * bytes_per_poll * 86_400

    return daily_bytes


def check_mean_latency(answer: Any) -> None:
    assert isinstance(answer, (int, float)), "answer should be a number of seconds"
    assert not math.isclose(answer, 4.0), (
        "a message waits for the reader's next poll: anywhere between 0 and a whole interval"
    )
    assert math.isclose(answer, 2.0), f"on average a message waits half the 4 s interval (2 s), not {answer}"


@exercise("01.3", check_mean_latency)
def mean_latency_solution() -> float:
    interval = 4.0
    return interval / 2  # arrivals are uniform over the interval: the wait is on average half of it
