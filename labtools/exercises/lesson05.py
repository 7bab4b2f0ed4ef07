"""Lesson 05 (band votes): applying a delta, noticing a missed one, and a poll of the learner's own."""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from typing import Any

from ..events import EventClient
from .registry import WITHIN, AppUnderCheck, call, drive, exercise, file_exercise, learner_file, not_a_function

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


#: 05.3: three voters each send this many votes at once, spread over the poll's options.
VOTERS, VOTES_EACH = ("ana", "pedro", "luis"), 10
NOT_AN_OPTION = "none of the above?!"


def poll_counts(data: Any, what: str) -> dict[str, int]:
    """The counts of a ``poll`` payload ``{"question", "counts"}``, its shape checked."""
    assert isinstance(data, dict) and isinstance(data.get("question"), str) and data["question"], (
        f'{what} should be {{"question": STR, "counts": {{OPTION: COUNT, ...}}}}, got {data!r}'
    )
    counts = data.get("counts")
    assert isinstance(counts, dict) and len(counts) >= 2, f"{what}: 'counts' maps two options or more to their counts"
    assert all(type(count) is int for count in counts.values()), f"{what}: each count is an int, got {counts}"
    return counts


async def everyone_agrees(voter: EventClient, expected: dict[str, int]) -> None:
    """``voter`` receives (or received) a ``poll`` whose counts are ``expected``."""

    def agrees(data: Any) -> bool:
        return isinstance(data, dict) and data.get("counts") == expected

    try:
        await voter.wait_for("poll", WITHIN, where=agrees)
    except TimeoutError:
        last = [data.get("counts") if isinstance(data, dict) else data for data in voter.events("poll")[-1:]]
        raise AssertionError(
            f"after every vote was acknowledged, {voter.name}'s last poll shows {last[0] if last else None}, but the "
            f"poll is {expected}: after each vote, everyone, the voter included, receives poll with the new counts "
            "(server.broadcast)"
        ) from None


async def votes_agree(app: AppUnderCheck) -> None:
    """Three clients vote at once; every count is shared, none is lost, everyone sees the same poll."""
    voters = [await app.client(name) for name in VOTERS]
    start = poll_counts(await app.hears(voters[0], "poll", "a client that connects should receive poll"),
                        "the poll a client receives on connecting")
    assert set(start.values()) == {0}, f"a fresh server's poll starts at 0 for every option, got {start}"
    await app.refused(voters[0], "vote", NOT_AN_OPTION, f"a vote for {NOT_AN_OPTION!r}, which is not an option,")
    options = list(start)
    plan = [(voter, options[(k + i) % len(options)]) for k, voter in enumerate(voters) for i in range(VOTES_EACH)]
    acks = await asyncio.gather(*(app.ask(voter, "vote", option, f"{voter.name}'s vote for {option!r}")
                                  for voter, option in plan))
    for (voter, option), ack in zip(plan, acks, strict=True):
        counts = poll_counts(ack, f"the acknowledgement of {voter.name}'s vote for {option!r}")
        assert counts.get(option, 0) >= 1, (
            f"{voter.name}'s vote for {option!r} was acknowledged with {counts}: answer with the poll after the vote"
        )
    expected = {option: 0 for option in options} | Counter(option for _voter, option in plan)
    late = poll_counts(await app.hears(await app.client("late"), "poll", "a client that connects after the votes"),
                       "the poll a client receives after the votes")
    votes, counted = len(plan), sum(late.values())
    assert counted != 0, (
        f"a client that connects after {votes} votes receives {late}: the counts belong to the server's state, "
        "shared by every client, not to each connection"
    )
    assert counted >= votes, (
        f"{votes} votes were acknowledged, but the poll counts {counted} ({late}, expected {expected}): votes were "
        "lost. A vote must read and write its count with nothing awaited in between (one change, server.update)"
    )
    assert late == expected, f"after {votes} votes the poll should be {expected}, not {late}"
    for voter in voters:
        await everyone_agrees(voter, expected)


def check_my_poll(answer: Any) -> None:
    drive(learner_file(answer, "my_poll.py"), votes_agree)


file_exercise("05.3", check_my_poll, name="my_poll.py", solution="05_my_poll.py")
