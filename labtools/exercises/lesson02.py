"""Lesson 02 (long polling and SSE): what holding requests open costs, and reading a stream."""

from __future__ import annotations

import json
import math
from typing import Any

from .registry import call, exercise, not_a_function, number


def check_quiet_long_polls(answer: Any) -> None:
    assert number(answer), f"answer should be a number of requests per minute, not {answer!r}"
    assert not math.isclose(answer, 60), "that is short polling once a second; a long poll waits up to 30 s"
    assert not math.isclose(answer, 0), (
        "even with no messages, each long poll ends after 30 s and the client asks again"
    )
    assert math.isclose(answer, 2), f"with no messages each long poll lasts the whole 30 s: 2 per minute, not {answer}"


@exercise("02.1", check_quiet_long_polls, value=True)
def quiet_long_polls() -> float:
    wait = 30.0
    return 60 / wait  # nothing arrives, so each request is answered only when its wait runs out


def check_held(answer: Any) -> None:
    assert isinstance(answer, int) and not isinstance(answer, bool), (
        f"answer should be a whole number of open connections, not {answer!r}"
    )
    assert answer != 0, "a stream stays open even when no messages flow: that is what makes it instant"
    assert answer == 5_000, f"every online user holds one stream open: 5,000, not {answer}"


@exercise("02.2", check_held, value=True)
def held() -> int:
    online_users = 5_000
    return online_users  # one open GET /events each, all the time


SAMPLE = (
    ": connected\n\n"
    'id: 7\nevent: message\ndata: {"id": 7, "from": "Pedro", "to": "Ana", "text": "Hola"}\n\n'
    ": heartbeat\n\n"
    'id: 9\nevent: message\ndata: {"id": 9, "from": "Luis", "to": "Ana", "text": "¿Qué tal?"}\n\n'
)


def check_parse_sse(answer: Any) -> None:
    assert callable(answer), not_a_function(answer, "parse_sse(text)")
    got = call(answer, SAMPLE)
    assert isinstance(got, list), f"parse_sse should return a list, got {type(got).__name__}"
    assert all(isinstance(m, dict) for m in got), (
        f"each message is the JSON of a data: line, decoded with json.loads into a dict; got {got}"
    )
    texts = [m.get("text") for m in got]
    assert len(got) == 2, f"the sample holds 2 messages (comments start with ':'), got {len(got)}: {texts}"
    assert texts == ["Hola", "¿Qué tal?"], f"expected the texts ['Hola', '¿Qué tal?'], got {texts}"
    assert call(answer, "") == [], "an empty stream holds no messages"


@exercise("02.3", check_parse_sse, imports="import json")
def parse_sse(text: str) -> list[dict]:
    messages = []
    for block in text.split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data:"):
                messages.append(json.loads(line.removeprefix("data:").strip()))
    return messages
