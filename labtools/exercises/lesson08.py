"""Lesson 08 (the private chat): exercises and their solutions."""

from __future__ import annotations

from typing import Any

from .registry import call, exercise, not_a_function


def check_duplicates(answer: Any) -> None:
    assert isinstance(answer, int) and not isinstance(answer, bool), f"answer with a number of rows, not {answer!r}"
    assert answer == 1, (
        f"{answer} rows? The server keeps one row per (sender, clientId): the retries find the first row and "
        "acknowledge it, they insert nothing"
    )


@exercise("08.1", check_duplicates, value=True)
def rows_after_two_retries() -> int:
    # Pedro's client sent "¿Cenamos?" with clientId "m-7", lost the acknowledgement twice and sent
    # it again each time: UNIQUE (sender, client_id) turns the two retries into lookups.
    return 1


def check_catch_up(answer: Any) -> None:
    assert isinstance(answer, dict), (
        f'answer with the data of the history request, a dict like {{"with": ...}}, not {answer!r}'
    )
    assert answer.get("with") == "u-pedro", "'with' is the other person's uid: Pedro's, 'u-pedro'"
    assert answer.get("after") != 42, (
        "'after' is the id of the last message Ana saw (41): the server sends the ones after it"
    )
    assert answer.get("after") == 41, "'after' is the id of the last message Ana saw, 41"
    extra = sorted(set(answer) - {"with", "after"})
    assert not extra, f"only 'with' and 'after' are needed, not {extra}"


@exercise("08.2", check_catch_up, value=True)
def catch_up_request() -> dict:
    # Ana's last message from Pedro had id 41; she asks for what came after it.
    return {"with": "u-pedro", "after": 41}


def check_presence(answer: Any) -> None:
    assert callable(answer), not_a_function(answer, "announce(before, after)")
    cases = {(0, 1): True, (1, 2): False, (2, 1): False, (1, 0): True, (3, 3): False, (0, 0): False}
    for (before, after), expected in cases.items():
        got = call(answer, before, after)
        why = ("the first connection opened or the last one closed: the user came or went"
               if expected else "the user was online before and still is (or still is not): nobody needs to know")
        assert isinstance(got, bool) or got != expected, f"return a bool (True or False), not {got!r}"
        assert got is expected, f"announce({before}, {after}) should be {expected}, not {got!r}: {why}"


@exercise("08.3", check_presence)
def announce(before: int, after: int) -> bool:
    # A user's open connections went from before to after: does everyone need a user-list?
    return (before == 0) != (after == 0)
