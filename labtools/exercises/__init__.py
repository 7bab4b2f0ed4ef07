"""Exercises that check themselves: the registry (``registry``: ``check``, ``solution``) and, per
lesson, a module with each exercise's checker and its solution: ``lesson00``, ``lesson01``,
``lesson02``, ``lesson03``, ``lesson04``, ``lesson05``, ``lesson06``, ``lesson07``, ``lesson08``,
``lesson09``, ``lesson10``, ``lesson11``."""

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
