"""Lesson 02 (long polling and SSE): what holding requests open costs, and reading a stream."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from .registry import exercise


def check_quiet_long_polls(answer: Any) -> None:
    assert isinstance(answer, (int, float)), "answer should be a number of requests per minute"
    assert not math.isclose(answer, 60), "that is short polling once a second; a long poll waits up to 30 s"
    assert math.isclose(answer, 2), f"with no messages each long poll lasts the whole 30 s: 2 per minute, not {answer}"


@exercise("02.1", check_quiet_long_polls)
def quiet_long_polls_solution() -> float:
    wait = 30.0
    return 60 / wait  # nothing arrives, so each request is answered only when its wait runs out


def check_held(answer: Any) -> None:
    assert isinstance(answer, int), "answer should be a whole number of open connections"
    assert answer != 0, "a stream stays open even when no messages flow: that is what makes it instant"
    assert answer == 5_000, f"every online user holds one stream open: 5,000, not {answer}"


@exercise("02.2", check_held)
def held_solution() -> int:
    online_users = 5_000
    return online_users  # one open GET /events each, all the time


SAMPLE = (
    ": connected\n\n"
    'id: 7\nevent: message\ndata: {"id": 7, "from": "Pedro", "to": "Ana", "text": "Hola"}\n\n'
    ": heartbeat\n\n"
    'id: 9\nevent: message\ndata: {"id": 9, "from": "Luis", "to": "Ana", "text": "¿Qué tal?"}\n\n'
)


def check_parse_sse(answer: Any) -> None:
    assert callable(answer), "answer should be a function parse_sse(text) -> list of message dicts"
    got = answer(SAMPLE)
    assert isinstance(got, list), f"parse_sse should return a list, got {type(got).__name__}"
    texts = [m.get("text") if isinstance(m, dict) else m for m in got]
    assert len(got) == 2, f"the sample holds 2 messages (comments start with ':'), got {len(got)}: {texts}"
    assert texts == ["Hola", "¿Qué tal?"], f"expected the texts ['Hola', '¿Qué tal?'], got {texts}"
    assert answer("") == [], "an empty stream holds no messages"


@exercise("02.3", check_parse_sse)
def parse_sse_solution() -> Callable[[str], list[dict]]:
    def parse_sse(text: str) -> list[dict]:
        messages = []
        for block in text.split("\n\n"):
            for line in block.split("\n"):
                if line.startswith("data:"):
                    messages.append(json.loads(line.removeprefix("data:").strip()))
        return messages

    return parse_sse
