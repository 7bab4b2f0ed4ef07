"""Lesson 07 (live map): validating a marker, and throttling a drag without losing its end."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any

from .registry import exercise


def check_valid_marker(answer: Any) -> None:
    assert callable(answer), "answer should be a function valid_marker(data) -> bool"
    cases = [
        ({"id": "m1", "lng": -3.7, "lat": 40.4}, True),
        ({"id": "m1", "lng": 180, "lat": -90}, True),
        ({"id": "m1", "lng": 180.5, "lat": 0}, False),
        ({"id": "m1", "lng": 0, "lat": 91}, False),
        ({"id": "", "lng": 0, "lat": 0}, False),
        ({"id": "m" * 65, "lng": 0, "lat": 0}, False),
        ({"id": 3, "lng": 0, "lat": 0}, False),
        ({"id": "m1", "lng": "0", "lat": 0}, False),
        ({"id": "m1", "lng": True, "lat": 0}, False),
        ({"id": "m1", "lat": 0}, False),
        (["m1", 0, 0], False),
        (None, False),
    ]
    for data, expected in cases:
        got = answer(data)
        assert got is expected, f"valid_marker({data!r}) should be {expected}, got {got!r}"


@exercise("07.1", check_valid_marker)
def valid_marker_solution() -> Callable[[Any], bool]:
    def valid_marker(data: Any) -> bool:
        def number(value: Any) -> bool:
            return isinstance(value, int | float) and not isinstance(value, bool)

        return (
            isinstance(data, dict)
            and isinstance(data.get("id"), str)
            and 0 < len(data["id"]) <= 64
            and number(data.get("lng")) and -180 <= data["lng"] <= 180
            and number(data.get("lat")) and -90 <= data["lat"] <= 90
        )

    return valid_marker


def check_throttle(answer: Any) -> None:
    assert callable(answer), "answer should be a function throttle(moves, interval) -> the moves to send"
    moves = [(k * 0.01, float(k), 0.0) for k in range(101)]  # 100 pointer moves in 1 s
    sent = answer(moves, 0.05)
    assert isinstance(sent, list) and sent, "throttle should return a non-empty list of moves"
    assert sent[0] == moves[0], "the first move goes out at once"
    assert sent[-1] == moves[-1], "the last move must always go out, or the marker stops short of where it was left"
    assert all(move in moves for move in sent), "send only moves that happened"
    times = [t for t, _x, _y in sent[:-1]]
    assert all(b - a >= 0.05 - 1e-9 for a, b in pairwise(times)), "at most one move per interval"
    assert 18 <= len(sent) <= 22, f"about one move per 50 ms: expected about 21, got {len(sent)}"


@exercise("07.2", check_throttle)
def throttle_solution() -> Callable[[list, float], list]:
    def throttle(moves: list, interval: float) -> list:
        sent = []
        for move in moves:
            if not sent or move[0] - sent[-1][0] >= interval - 1e-9:
                sent.append(move)
        if sent[-1] != moves[-1]:
            sent.append(moves[-1])  # trailing edge: the final position
        return sent

    return throttle
