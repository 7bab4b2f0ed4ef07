"""Exercises that check themselves, and their solutions.

Each lesson registers its exercises with ``exercise(id, ...)``: a checker that raises
``AssertionError`` with a helpful message for a wrong answer, and a solution function. In a
notebook the learner writes::

    answer = ...            # replace ... with your answer
    lt.check("01.1", answer)

``check`` says "not attempted yet" while the answer is ``...`` (so a fresh notebook runs top to
bottom), "✓" for a right answer, and raises for a wrong one. ``solution("01.1")`` prints the
solution's source; the tests run every solution through its checker, so checks can fail.
"""

from __future__ import annotations

import importlib
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The modules that register exercises, one per lesson; imported on first use.
LESSON_MODULES = [
    "labtools.exercises.lesson01",
    "labtools.exercises.lesson02",
    "labtools.exercises.lesson03",
    "labtools.exercises.lesson04",
    "labtools.exercises.lesson05",
    "labtools.exercises.lesson06",
    "labtools.exercises.lesson07",
    "labtools.exercises.lesson08",
]


@dataclass(frozen=True)
class Exercise:
    id: str
    checker: Callable[[Any], None]
    solution: Callable[..., Any]


_registry: dict[str, Exercise] = {}


def exercise(id: str, checker: Callable[[Any], None]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``checker`` for exercise ``id``, with the decorated function as its solution."""

    def register(solution: Callable[..., Any]) -> Callable[..., Any]:
        _registry[id] = Exercise(id, checker, solution)
        return solution

    return register


def _load() -> None:
    for name in LESSON_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


def get(id: str) -> Exercise:
    if id not in _registry:
        _load()
    if id not in _registry:
        raise KeyError(f"no exercise {id!r}")
    return _registry[id]


def all_exercises() -> list[Exercise]:
    _load()
    return sorted(_registry.values(), key=lambda e: e.id)


def check(id: str, answer: Any) -> None:
    """Check a learner's answer; print the verdict, raise ``AssertionError`` if it is wrong."""
    exercise = get(id)
    if answer is Ellipsis:
        print(f"Exercise {id}: not attempted yet. Replace ... with your answer, "
              f"or reveal the solution with lt.solution({id!r}).")
        return
    exercise.checker(answer)
    print(f"Exercise {id}: ✓ correct.")


def solution(id: str) -> None:
    """Print the solution of exercise ``id``."""
    source = inspect.getsource(get(id).solution)
    print(textwrap.dedent(source))
