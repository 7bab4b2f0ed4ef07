"""Exercises that check themselves, and their solutions.

Each lesson registers its exercises with ``exercise(id, ...)``: a checker that raises
``AssertionError`` with a helpful message for a wrong answer, and a solution function. In a
notebook the learner writes::

    answer = ...            # replace ... with your answer
    lt.check("01.1", answer)

``check`` says "not attempted yet" while the answer is ``...`` (so a fresh notebook runs top to
bottom), "✓" for a right answer, and raises for a wrong one. ``solution("01.1")`` prints what a
learner would type, ending in ``answer = ...``; ``tests/test_exercises.py`` runs every solution
through its checker and checks that a plausible wrong answer is rejected.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The modules that register exercises, one per lesson; imported on first use.
LESSON_MODULES = [
    "labtools.exercises.lesson00",
    "labtools.exercises.lesson01",
    "labtools.exercises.lesson02",
    "labtools.exercises.lesson03",
    "labtools.exercises.lesson04",
    "labtools.exercises.lesson05",
    "labtools.exercises.lesson06",
    "labtools.exercises.lesson07",
    "labtools.exercises.lesson08",
    "labtools.exercises.lesson09",
    "labtools.exercises.lesson10",
    "labtools.exercises.lesson11",
]


@dataclass(frozen=True)
class Exercise:
    """One exercise: its ``checker`` and its ``solution``.

    ``solution`` is written as the learner would write it. For most exercises it *is* the answer
    (a function such as ``daily_bytes``); for a value exercise (``value=True``) it is a
    zero-argument function whose body computes the answer and ends in ``return``.
    """

    id: str
    checker: Callable[[Any], None]
    solution: Callable[..., Any]
    value: bool = False
    imports: str = ""

    def answer(self) -> Any:
        """The solution's answer, as the learner would pass it to ``check``."""
        return self.solution() if self.value else self.solution

    def source(self) -> str:
        """What a learner would type in the exercise's cell, ending in ``answer = ...``."""
        return learner_source(self.solution, value=self.value, imports=self.imports)


_registry: dict[str, Exercise] = {}


def exercise(
    id: str, checker: Callable[[Any], None], *, value: bool = False, imports: str = ""
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``checker`` for exercise ``id``, with the decorated function as its solution.

    By default the decorated function is the answer itself. With ``value=True`` it takes no
    arguments and returns the answer; ``solution`` shows its body with the final ``return X``
    written as ``answer = X``. ``imports`` are the lines the solution needs, shown above it.
    """

    def register(solution: Callable[..., Any]) -> Callable[..., Any]:
        _registry[id] = Exercise(id, checker, solution, value=value, imports=imports)
        return solution

    return register


def learner_source(function: Callable[..., Any], *, value: bool = False, imports: str = "") -> str:
    """``function``'s source without its decorators, as a learner would type it in a cell."""
    lines = textwrap.dedent(inspect.getsource(function)).splitlines()
    node = ast.parse("\n".join(lines)).body[0]
    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef), f"{function!r} is not a def"
    if value:
        last = node.body[-1]
        assert isinstance(last, ast.Return) and last.value is not None, "a value solution ends in `return X`"
        header_end = next(k for k in range(node.lineno - 1, len(lines)) if lines[k].rstrip().endswith(":"))
        body = lines[header_end + 1 : node.end_lineno]
        line = last.lineno - 1 - (header_end + 1)
        body[line] = body[line][: last.col_offset] + "answer = " + body[line][last.col_offset + len("return ") :]
        code = textwrap.dedent("\n".join(body))
    else:
        code = "\n".join(lines[node.lineno - 1 : node.end_lineno]) + f"\n\n\nanswer = {node.name}"
    gap = "\n\n" if value else "\n\n\n"  # PEP 8: two blank lines before a top-level def
    return (imports.strip() + gap + code if imports.strip() else code).strip() + "\n"


def call(answer: Callable[..., Any], *args: Any) -> Any:
    """Call a learner's function; an exception it raises becomes an ``AssertionError`` naming the call."""
    try:
        return answer(*args)
    except Exception as error:
        shown = ", ".join(_short(repr(arg)) for arg in args)
        name = getattr(answer, "__name__", "your function")
        raise AssertionError(f"{name}({shown}) raised {type(error).__name__}: {error}") from error


def number(value: Any) -> bool:
    """An ``int`` or a ``float``, and not a ``bool`` (in Python ``True`` is an ``int``)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def not_a_function(answer: Any, signature: str) -> str:
    """The message for a function exercise answered with something else."""
    return (f"answer should be the function {signature} itself (answer = {signature.partition('(')[0]}, "
            f"without calling it), not {_short(repr(answer))}")


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    """Print the solution of exercise ``id``: the code a learner would type in its cell."""
    print(get(id).source())
