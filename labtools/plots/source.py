"""``lt.show(obj)``: the code a lesson runs, printed from its source, so prose and code cannot drift.

``show_js("common/events.js", "EventSocket.emit")`` does the same for the pages' JavaScript: a
named function, class or method of a file under ``labtools/static``, with the comment above it.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from importlib import resources
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def where(obj: Any) -> str:
    """``labtools/apps/minichat.py:17`` for labtools' own code; the file's name otherwise."""
    path = Path(inspect.getsourcefile(obj) or "?").resolve()
    _lines, first = inspect.getsourcelines(obj)
    try:
        shown = path.relative_to(PACKAGE_ROOT)
    except ValueError:
        shown = Path(path.name)
    return f"{shown.as_posix()}:{first}"


def source(obj: Any) -> str:
    """The source of ``obj`` (a function, class or module), headed by where it lives."""
    return f"# {where(obj)}\n{textwrap.dedent(inspect.getsource(obj)).rstrip()}\n"


def show(*objects: Any) -> None:
    """Print the source of each object, headed by its ``file:line``."""
    print("\n".join(source(obj) for obj in objects), end="")


def _block(lines: list[str], name: str, start: int, stop: int) -> tuple[int, int]:
    """``(first, last)`` line indexes of the function, class or method ``name`` in ``lines[start:stop]``:
    from its first line (``function name(``, ``class name``, or a method's ``name(``) to the ``}``
    at the same indentation. JavaScript has no ``inspect``: the pages' code keeps this layout."""
    opening = re.compile(rf"^(\s*)(export\s+)?(async\s+)?(function\s+|class\s+)?{re.escape(name)}\b\s*[({{]?.*{{\s*$")
    for first in range(start, stop):
        match = opening.match(lines[first])
        if match:
            indent = match[1]
            for last in range(first + 1, stop):
                if lines[last].startswith(indent + "}") and not lines[last].startswith(indent + " "):
                    return first, last
            break
    raise LookupError(f"no function, class or method {name!r} found")


def js_source(path: str, name: str) -> str:
    """``name`` (``"EventSocket"``, ``"EventSocket.emit"``, ``"socketUrl"``) from ``labtools/static/PATH``,
    with the comment lines just above it, headed by the file and the name (no line number: the
    file changes, the name does not)."""
    text = resources.files("labtools").joinpath("static", path).read_text(encoding="utf-8")
    lines = text.splitlines()
    start, stop = 0, len(lines)
    for part in name.split("."):
        start, stop = _block(lines, part, start, stop)
    first = start
    while first > 0 and lines[first - 1].strip().startswith("//"):
        first -= 1
    body = textwrap.dedent("\n".join(lines[first:stop + 1]))
    return f"// labtools/static/{path}, {name}\n{body}\n"


def show_js(path: str, *names: str) -> None:
    """Print each named function, class or method of ``labtools/static/PATH``, one after the other."""
    print("\n".join(js_source(path, name) for name in names), end="")
