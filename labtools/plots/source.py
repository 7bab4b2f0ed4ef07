"""``lt.show(obj)``: the code a lesson runs, printed from its source, so prose and code cannot drift."""

from __future__ import annotations

import inspect
import textwrap
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
