"""Exercises that check themselves: the registry (``check``, ``solution``) and, per lesson, a
module ``lessonNN`` with each exercise's checker and its solution."""

from .registry import (
    Exercise,
    all_exercises,
    call,
    check,
    exercise,
    get,
    learner_source,
    not_a_function,
    number,
    solution,
)

__all__ = [
    "Exercise",
    "all_exercises",
    "call",
    "check",
    "exercise",
    "get",
    "learner_source",
    "not_a_function",
    "number",
    "solution",
]
