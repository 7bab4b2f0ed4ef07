"""Lesson 05 (band votes): applying a delta, and noticing a missed one."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from .registry import exercise

START = [
    {"id": "a1", "name": "Metallica", "votes": 2},
    {"id": "b2", "name": "Bon Jovi", "votes": 0},
]


def check_apply_delta(answer: Any) -> None:
    assert callable(answer), "answer should be a function apply_delta(bands, delta) -> new list"
    bands = copy.deepcopy(START)
    cases: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [
        ({"v": 1, "op": "vote", "id": "b2"},
         [{"id": "a1", "name": "Metallica", "votes": 2}, {"id": "b2", "name": "Bon Jovi", "votes": 1}]),
        ({"v": 2, "op": "rename", "id": "a1", "name": "Metallica!"},
         [{"id": "a1", "name": "Metallica!", "votes": 2}, {"id": "b2", "name": "Bon Jovi", "votes": 0}]),
        ({"v": 3, "op": "remove", "id": "a1"}, [{"id": "b2", "name": "Bon Jovi", "votes": 0}]),
        ({"v": 4, "op": "create", "band": {"id": "c3", "name": "Maná", "votes": 0}},
         [*START, {"id": "c3", "name": "Maná", "votes": 0}]),
    ]
    for delta, expected in cases:
        got = answer(bands, delta)
        assert got == expected, f"after {delta} the list should be {expected}, got {got}"
        assert bands == START, "apply_delta must return a new list and leave the old one as it was"


@exercise("05.1", check_apply_delta)
def apply_delta_solution() -> Callable[[list[dict], dict], list[dict]]:
    def apply_delta(bands: list[dict], delta: dict) -> list[dict]:
        if delta["op"] == "create":
            return [*bands, dict(delta["band"])]
        if delta["op"] == "remove":
            return [b for b in bands if b["id"] != delta["id"]]
        new = []
        for band in bands:
            if band["id"] == delta["id"]:
                band = dict(band)
                if delta["op"] == "vote":
                    band["votes"] += 1
                else:
                    band["name"] = delta["name"]
            new.append(band)
        return new

    return apply_delta


def check_needs_resync(answer: Any) -> None:
    assert callable(answer), "answer should be a function needs_resync(last_version, delta) -> bool"
    for last, v, expected in [(4, 5, False), (4, 6, True), (4, 9, True), (0, 1, False), (7, 7, True), (7, 3, True)]:
        got = answer(last, {"v": v, "op": "vote", "id": "a1"})
        assert got is expected, f"last version {last}, delta v={v}: expected {expected}, got {got!r}"


@exercise("05.2", check_needs_resync)
def needs_resync_solution() -> Callable[[int, dict], bool]:
    def needs_resync(last_version: int, delta: dict) -> bool:
        # Only the very next version can be applied; anything else means a missed (or stale) delta.
        return delta["v"] != last_version + 1

    return needs_resync
