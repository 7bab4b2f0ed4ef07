"""Lesson 07 (live map): validating a marker, throttling a drag without losing its end, and
reactions of the learner's own that reach everyone but their sender."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise
from typing import Any

from ..events import EventClient
from .registry import AppUnderCheck, call, drive, exercise, file_exercise, learner_file, not_a_function

#: (data, valid?, why): the server's rules, one case each.
MARKERS: list[tuple[Any, bool, str]] = [
    ({"id": "m1", "lng": -3.7, "lat": 40.4}, True, "a marker in Madrid is valid"),
    ({"id": "m1", "lng": 180, "lat": -90}, True, "the bounds are included, and ints are numbers too"),
    ({"id": "m1", "lng": 180.5, "lat": 0}, False, "lng must be within -180..180"),
    ({"id": "m1", "lng": 0, "lat": 91}, False, "lat must be within -90..90"),
    ({"id": "", "lng": 0, "lat": 0}, False, "the id must not be empty"),
    ({"id": "m" * 64, "lng": 0, "lat": 0}, True, "an id of up to 64 characters is valid"),
    ({"id": "m" * 65, "lng": 0, "lat": 0}, False, "the id is at most 64 characters"),
    ({"id": 3, "lng": 0, "lat": 0}, False, "the id must be a str"),
    ({"id": "m1", "lng": "0", "lat": 0}, False, "a coordinate must be a number, not a str"),
    ({"id": "m1", "lng": True, "lat": 0}, False,
     "a coordinate must be a number, and booleans are not numbers here (in Python True is an int "
     "subclass: exclude bool explicitly)"),
    ({"id": "m1", "lng": 0, "lat": False}, False, "booleans are not numbers here (exclude bool explicitly)"),
    ({"id": "m1", "lat": 0}, False, "lng is missing"),
    (["m1", 0, 0], False, "a marker is a dict; anything else is invalid"),
    (None, False, "a marker is a dict; anything else (None here) is invalid"),
]


def check_valid_marker(answer: Any) -> None:
    assert callable(answer), not_a_function(answer, "valid_marker(data)")
    for data, expected, why in MARKERS:
        try:
            got = answer(data)
        except Exception as error:
            raise AssertionError(
                f"valid_marker({data!r}) raised {type(error).__name__}: {error}; it must return False for bad "
                "input, never raise (any frame can arrive)"
            ) from error
        assert isinstance(got, bool) or got != expected, f"return a bool (True or False), not {got!r}"
        assert got is expected, f"valid_marker({data!r}) should be {expected}, got {got!r}: {why}"


@exercise("07.1", check_valid_marker)
def valid_marker(data) -> bool:
    def number(value) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)  # True is an int in Python

    return (
        isinstance(data, dict)
        and isinstance(data.get("id"), str)
        and 0 < len(data["id"]) <= 64
        and number(data.get("lng")) and -180 <= data["lng"] <= 180
        and number(data.get("lat")) and -90 <= data["lat"] <= 90
    )


def _drag(times: list[float]) -> list[tuple[float, float, float]]:
    return [(round(t, 6), round(100 * t, 6), round(-50 * t, 6)) for t in times]


#: Pointer moves as a browser delivers them: irregular. A burst every 2 ms, slower moves every
#: 20 ms, a pause, and a last move that falls between two intervals. Then a steady 100 Hz drag.
DRAGS: list[tuple[list[tuple[float, float, float]], float]] = [
    (_drag([k * 0.002 for k in range(100)] + [0.2 + k * 0.02 for k in range(25)] + [0.75, 0.751, 0.78]), 0.05),
    (_drag([k * 0.01 for k in range(101)] + [1.013]), 0.05),
    (_drag([0.0]), 0.05),
]


def _leading_edge(moves: list, interval: float) -> list:
    sent: list = []
    for move in moves:
        if not sent or move[0] - sent[-1][0] >= interval - 1e-9:
            sent.append(move)
    return sent


def check_throttle(answer: Any) -> None:
    assert callable(answer), not_a_function(answer, "throttle(moves, interval)")
    for moves, interval in DRAGS:
        what = f"throttle(<{len(moves)} moves over {moves[-1][0]:.3f} s>, {interval})"
        sent = call(answer, list(moves), interval)
        assert isinstance(sent, list) and sent, f"{what} should return a non-empty list of moves, got {sent!r}"
        assert all(move in moves for move in sent), f"{what}: send only moves that happened, as (t, lng, lat) tuples"
        indices = [moves.index(move) for move in sent]
        assert indices == sorted(set(indices)), f"{what}: send each move at most once, in the order they happened"
        assert sent[0] == moves[0], f"{what}: the first move goes out at once"
        assert sent[-1] == moves[-1], (
            f"{what}: the last move {moves[-1]} must always go out (after the throttled ones), or the marker stops "
            f"short of where it was left; yours ends at {sent[-1]}"
        )
        times = [t for t, _lng, _lat in sent[:-1]]  # the final move may follow its predecessor closely
        for a, b in pairwise(times):
            assert b - a >= interval - 1e-9, (
                f"{what}: moves at t={a} and t={b} are {1000 * (b - a):.0f} ms apart: at most one move per "
                f"{1000 * interval:.0f} ms (wait for the time since the last *sent* move, not for a count of moves)"
            )
        greedy = len(_leading_edge(moves, interval))
        assert len(sent) >= 0.8 * greedy, (
            f"{what}: only {len(sent)} moves sent; while the pointer moves, send one every {1000 * interval:.0f} ms "
            f"(about {greedy} here)"
        )


@exercise("07.2", check_throttle)
def throttle(moves: list, interval: float) -> list:
    sent = []
    for move in moves:
        if not sent or move[0] - sent[-1][0] >= interval - 1e-9:
            sent.append(move)  # leading edge: the first move of each interval
    if sent[-1] != moves[-1]:
        sent.append(moves[-1])  # trailing edge: the final position
    return sent


#: 07.3: the emojis a reaction may carry (the statement gives them), and one it may not.
EMOJIS = ("👏", "😂", "😮", "🔥", "🎉")
NOT_AN_EMOJI = "🍕"
PEOPLE = ("ana", "pedro", "luis")


async def react(app: AppUnderCheck, sender: EventClient, emoji: str, others: list[EventClient]) -> None:
    """``sender`` reacts with ``emoji``; each of ``others`` receives it."""
    await app.ask(sender, "react", {"name": sender.name, "emoji": emoji}, f"{sender.name}'s react {emoji}")
    for other in others:
        await app.hears(other, "reaction", f"{sender.name} reacted {emoji}, so {other.name} should receive "
                        f"reaction {{'name': {sender.name!r}, 'emoji': {emoji!r}}}",
                        where=lambda data: data == {"name": sender.name, "emoji": emoji})


async def all_but_the_sender(app: AppUnderCheck) -> None:
    """Each reaction reaches every other client once, never its sender; a refused one reaches nobody."""
    people = [await app.client(name) for name in PEOPLE]
    ana = people[0]
    await app.refused(ana, "react", {"name": ana.name, "emoji": NOT_AN_EMOJI},
                      f"react with {NOT_AN_EMOJI}, which is not one of {' '.join(EMOJIS)},")
    for sender, emoji in zip(people, EMOJIS, strict=False):
        await react(app, sender, emoji, [other for other in people if other is not sender])
    # One more from Ana: a frame sent to Luis after his own reaction, so an echo would be in by now.
    await react(app, ana, EMOJIS[len(people)], people[1:])
    for person in people:
        heard = Counter((data.get("name"), data.get("emoji")) if isinstance(data, dict) else (None, repr(data))
                        for data in person.events("reaction"))
        own = sorted(emoji for (name, emoji), _times in heard.items() if name == person.name)
        assert not own, (
            f"{person.name} received {' '.join(own)}, {person.name}'s own reaction, back: a reaction goes to everyone "
            "but the sender (server.broadcast(..., exclude=client)); its page shows it already"
        )
        assert all(emoji != NOT_AN_EMOJI for _name, emoji in heard), (
            f"{person.name} received the refused {NOT_AN_EMOJI}: check the react before broadcasting it"
        )
        repeated = [key for key, times in heard.items() if times > 1]
        assert not repeated, f"{person.name} received {repeated[0]} more than once: each reaction arrives once"


def check_my_reactions(answer: Any) -> None:
    drive(learner_file(answer, "my_reactions.py"), all_but_the_sender)


file_exercise("07.3", check_my_reactions, name="my_reactions.py", solution="07_my_reactions.py")
