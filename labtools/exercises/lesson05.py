"""Lesson 05 (band votes): applying a delta, and noticing a missed one."""

from __future__ import annotations

import copy
from typing import Any

from .registry import call, exercise, not_a_function

START = [
    {"id": "a1", "name": "Metallica", "votes": 2},
    {"id": "b2", "name": "Bon Jovi", "votes": 0},
]


def check_apply_delta(answer: Any) -> None:
    assert callable(answer), not_a_function(answer, "apply_delta(bands, delta)")
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
        got = call(answer, bands, delta)
        assert bands == START, (
            f"apply_delta must return a new list and leave the old one (and its dicts) as it was; after {delta} "
            f"the old list became {bands}: copy a band (dict(band)) before changing it"
        )
        misplaced = isinstance(got, list) and got != expected and sorted(map(repr, got)) == sorted(map(repr, expected))
        assert not (delta["op"] == "create" and misplaced), (
            f"create appends the new band at the *end* of the list: expected {expected}, got {got}"
        )
        assert got == expected, f"after {delta} the list should be {expected}, got {got}"


@exercise("05.1", check_apply_delta)
def apply_delta(bands: list[dict], delta: dict) -> list[dict]:
    if delta["op"] == "create":
        return [*bands, dict(delta["band"])]  # a new band goes at the end
    if delta["op"] == "remove":
        return [b for b in bands if b["id"] != delta["id"]]
    new = []
    for band in bands:
        if band["id"] == delta["id"]:
            band = dict(band)  # a copy: the old list stays as it was
            if delta["op"] == "vote":
                band["votes"] += 1
            else:
                band["name"] = delta["name"]
        new.append(band)
    return new


def check_needs_resync(answer: Any) -> None:
    assert callable(answer), not_a_function(answer, "needs_resync(last_version, delta)")
    for last, v, expected in [(4, 5, False), (4, 6, True), (4, 9, True), (0, 1, False), (7, 7, True), (7, 3, True)]:
        got = call(answer, last, {"v": v, "op": "vote", "id": "a1"})
        why = ("only v == last + 1 can be applied" if expected is False
               else "anything but the very next version is a gap (or a stale delta): fetch the whole list")
        assert isinstance(got, bool) or got != expected, f"return a bool (True or False), not {got!r}"
        assert got is expected, f"last version {last}, delta v={v}: expected {expected}, got {got!r} ({why})"


@exercise("05.2", check_needs_resync)
def needs_resync(last_version: int, delta: dict) -> bool:
    # Only the very next version can be applied; anything else means a missed (or stale) delta.
    return delta["v"] != last_version + 1
