"""Lesson 08 (the private chat): exercises and their solutions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .registry import exercise


def _check_duplicates(answer: Any) -> None:
    assert isinstance(answer, int), "answer with a number of rows"
    assert answer == 1, (
        "the server keeps one row per (sender, clientId): the retries find the first row and "
        "acknowledge it, they insert nothing"
    )


@exercise("08.1", _check_duplicates)
def rows_after_three_retries() -> int:
    # Pedro's client sent "¿Cenamos?" with clientId "m-7", lost the acknowledgement twice and sent
    # it again each time: UNIQUE (sender, client_id) turns the two retries into lookups.
    return 1


def _check_catch_up(answer: Any) -> None:
    assert isinstance(answer, dict), 'answer with the data of the history request, a dict like {"with": ...}'
    assert answer.get("with") == "u-pedro", "'with' is the other person's uid: Pedro's, 'u-pedro'"
    assert answer.get("after") == 41, "'after' is the id of the last message Ana saw, 41"
    assert set(answer) == {"with", "after"}, "only 'with' and 'after' are needed"


@exercise("08.2", _check_catch_up)
def catch_up_request() -> dict:
    # Ana's last message from Pedro had id 41; she asks for what came after it.
    return {"with": "u-pedro", "after": 41}


def _check_presence(answer: Any) -> None:
    assert callable(answer), "answer with a function announce(before, after) -> bool"
    cases = {(0, 1): True, (1, 2): False, (2, 1): False, (1, 0): True, (3, 3): False, (0, 0): False}
    for (before, after), expected in cases.items():
        got = answer(before, after)
        assert got == expected, f"announce({before}, {after}) should be {expected}, not {got!r}"


@exercise("08.3", _check_presence)
def announce_presence() -> Callable[[int, int], bool]:
    def announce(before: int, after: int) -> bool:
        """A user's open connections went from ``before`` to ``after``: does everyone need a user-list?"""
        return (before == 0) != (after == 0)

    return announce
