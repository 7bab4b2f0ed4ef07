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

A "build it yourself" exercise (``file_exercise``) is answered with a file instead: the learner
writes an app with ``%%writefile my_poll.py`` and checks it with ``lt.check("05.3", "my_poll.py")``.
Its checker serves the file on the labtools loop and drives it with real clients
(``AppUnderCheck``); while the file is the notebook's skeleton (a handler whose body is still
``...``) the check says "not attempted yet". Its solution is a file the learner can open,
``notebooks/solutions/...``; ``tests/test_build_it_yourself.py`` runs each, and plausible wrong
apps, through its checker.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import runtime
from ..events import AckError, EventClient, EventServer
from ..serving import make, start

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


#: Where the solutions of the "build it yourself" exercises live, as files a learner can open.
SOLUTIONS = Path(__file__).resolve().parents[2] / "notebooks" / "solutions"


@dataclass(frozen=True)
class FileExercise:
    """A "build it yourself" exercise: the answer is the path of the file the learner wrote with
    ``%%writefile NAME``; the solution is the file ``solution_file``, shown as that same cell."""

    id: str
    checker: Callable[[Any], None]
    name: str
    solution_file: Path

    def answer(self) -> str:
        """The solution's answer: the path of the solution file."""
        return str(self.solution_file)

    def source(self) -> str:
        """The cell that writes the solution under the name the lesson's cell uses."""
        return f"%%writefile {self.name}\n" + self.solution_file.read_text(encoding="utf-8")


class NotAttempted(Exception):
    """Raised by a checker whose answer is still the lesson's starting point: ``check`` then says
    "not attempted yet" (with the reason) instead of failing, so a fresh notebook runs through."""


_registry: dict[str, Exercise | FileExercise] = {}


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


def file_exercise(id: str, checker: Callable[[Any], None], *, name: str, solution: str) -> None:
    """Register ``checker`` for the "build it yourself" exercise ``id``: the learner writes the
    file ``name`` (``my_poll.py``); ``solution`` is the solution's file name under ``SOLUTIONS``."""
    _registry[id] = FileExercise(id, checker, name, SOLUTIONS / solution)


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


def _load(names: list[str] | None = None) -> None:
    for name in LESSON_MODULES if names is None else names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


def get(id: str) -> Exercise | FileExercise:
    if id not in _registry:  # its own lesson's module first ("05.3": lesson05), then all of them
        _load([f"labtools.exercises.lesson{id.partition('.')[0]}"])
    if id not in _registry:
        _load()
    if id not in _registry:
        raise KeyError(f"no exercise {id!r}")
    return _registry[id]


def all_exercises() -> list[Exercise]:
    """The exercises answered in a cell (a value or a function); see ``all_file_exercises``."""
    _load()
    return sorted((e for e in _registry.values() if isinstance(e, Exercise)), key=lambda e: e.id)


def all_file_exercises() -> list[FileExercise]:
    """The "build it yourself" exercises, answered with a file."""
    _load()
    return sorted((e for e in _registry.values() if isinstance(e, FileExercise)), key=lambda e: e.id)


def check(id: str, answer: Any) -> None:
    """Check a learner's answer; print the verdict, raise ``AssertionError`` if it is wrong."""
    exercise = get(id)
    if answer is Ellipsis:
        print(f"Exercise {id}: not attempted yet. Replace ... with your answer, "
              f"or reveal the solution with lt.solution({id!r}).")
        return
    try:
        exercise.checker(answer)
    except NotAttempted as why:
        print(f"Exercise {id}: not attempted yet: {why}; or reveal the solution with lt.solution({id!r}).")
        return
    print(f"Exercise {id}: ✓ correct.")


def solution(id: str) -> None:
    """Print the solution of exercise ``id``: the code a learner would type in its cell."""
    print(get(id).source())


# --- "build it yourself": the learner's app, from its file, over real sockets -------------------

#: Seconds a check waits for any one answer or push, on a busy 2-core laptop.
WITHIN = 5.0


def learner_file(answer: Any, name: str) -> Path:
    """The file a file exercise's ``answer`` names (``"my_poll.py"``), read as Python; raises
    ``NotAttempted`` while a function in it still has ``...`` for its body (the skeleton)."""
    assert isinstance(answer, str | Path), f'answer with the name of your file, "{name}", not {_short(repr(answer))}'
    path = Path(answer)
    assert path.is_file(), f"there is no file {path}: run the cell that starts with %%writefile {name} first"
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as error:
        raise AssertionError(f"{path.name} is not valid Python: {error}") from None
    stubs = [node.name for node in ast.walk(tree)
             if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _is_stub(node)]
    if stubs:
        raise NotAttempted(f"{path.name} still has `...` as the body of {', '.join(stubs)}. Write them, run "
                           f"the %%writefile {name} cell again, then this check")
    return path


def _is_stub(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A body of ``...`` alone, after its docstring if it has one."""
    body = function.body
    if len(body) == 2 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
        and body[0].value.value is Ellipsis


class AppUnderCheck:
    """The learner's app while a check drives it: a fresh server from the file's ``build()`` on
    the labtools loop (unregistered: a server the learner runs with ``lt.serve`` goes on running),
    and the clients the check opens. Each step fails with a sentence that says what the app did
    and what was expected; ``aclose`` stops everything the check started."""

    def __init__(self, path: Path, server: EventServer) -> None:
        self.path = path
        self.server = server
        self.clients: list[EventClient] = []

    @classmethod
    async def start(cls, path: Path) -> AppUnderCheck:
        try:
            server = make(f"{path}:build")
        except Exception as error:
            raise AssertionError(f"{path.name}: build() failed: {type(error).__name__}: {error}") from None
        assert isinstance(server, EventServer), (
            f"{path.name}: build() should return the EventServer it made (return server), not {_short(repr(server))}"
        )
        try:
            await start(server)
        except Exception as error:
            raise AssertionError(f"{path.name}: the server did not start: {type(error).__name__}: {error}") from None
        return cls(path, server)

    async def client(self, name: str) -> EventClient:
        """A new client of the app, closed with it."""
        client = await EventClient.connect(self.server.url, name=name)
        self.clients.append(client)
        return client

    def crash(self) -> str:
        """What the server's last failed handler raised, for a message."""
        return self.server.errors[-1] if self.server.errors else "an exception"

    async def ask(self, client: EventClient, event: str, data: Any, what: str) -> Any:
        """``client``'s request ``event`` with ``data``, answered within ``WITHIN`` s: its data."""
        try:
            return await client.request(event, data, timeout=WITHIN)
        except TimeoutError:
            raise AssertionError(f"{what}: no acknowledgement within {WITHIN:g} s (does its handler await "
                                 "something that never comes?)") from None
        except AckError as error:
            if error.code == "internal":
                raise AssertionError(f"{what}: your handler failed with {self.crash()}") from None
            raise AssertionError(f"{what}: refused with {error.code} ({error.message}), expected an answer") from None
        except ConnectionError:
            raise AssertionError(f"{what}: the server closed the connection") from None

    async def refused(self, client: EventClient, event: str, data: Any, what: str) -> AckError:
        """``client``'s request ``event`` with ``data``, which the app must refuse (an error, not a crash)."""
        try:
            answer = await client.request(event, data, timeout=WITHIN)
        except TimeoutError:
            raise AssertionError(f"{what}: no answer within {WITHIN:g} s, expected a refusal (an error)") from None
        except AckError as error:
            assert error.code != "internal", (
                f"{what}: your handler failed with {self.crash()}; refuse it instead, with require(...) or EventError"
            )
            return error
        except ConnectionError:
            raise AssertionError(f"{what}: the server closed the connection, expected a refusal") from None
        raise AssertionError(f"{what}: it was answered with {_short(repr(answer))}, expected a refusal (an error "
                             "from require(...) or EventError)")

    async def hears(self, client: EventClient, event: str, what: str,
                    where: Callable[[Any], bool] | None = None) -> Any:
        """The first ``event`` that ``client`` received (or receives within ``WITHIN`` s) matching ``where``."""
        try:
            return await client.wait_for(event, WITHIN, where=where)
        except TimeoutError:
            got = [(e, d) for _t, e, d in client.received]
            raise AssertionError(f"{what}: {client.name} never received it within {WITHIN:g} s; "
                                 f"it received {_short(repr(got), 200)}") from None

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()
        await self.server.aclose()


def drive(path: Path, scenario: Callable[[AppUnderCheck], Awaitable[None]], timeout: float = 60) -> None:
    """Serve the learner's file and run ``scenario`` against it on the labtools loop; stop both."""

    async def run() -> None:
        app = await AppUnderCheck.start(path)
        try:
            await scenario(app)
        finally:
            await app.aclose()

    try:
        runtime.run(asyncio.wait_for(run(), timeout))
    except TimeoutError:
        raise AssertionError(f"{path.name}: the check gave up after {timeout:g} s") from None
