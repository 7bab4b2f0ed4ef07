"""What every lesson's cells keep to, checked on the committed notebooks:

* a code cell shows one idea: at most ``MAX_CODE_LINES`` lines, except a "build it yourself"
  file the learner writes with ``%%writefile`` (a whole program is the point there);
* every exercise can be solved from its statement: the Markdown just above its ``lt.check``
  cell names the function the solution defines and each of its parameters, so a learner never
  learns a name or an argument's meaning from a failure message;
* every ``lt.check("NN.k", …)`` in a lesson is a registered exercise, and every registered
  exercise is asked in some lesson.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest

from labtools.exercises import all_exercises
from labtools.exercises.registry import all_file_exercises

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_CODE_LINES = 25
CHECK = re.compile(r"""lt\.check\(\s*["']([0-9]{2}\.[0-9]+)["']""")


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def statements() -> dict[str, str]:
    """Each exercise's statement: the Markdown cells right above the code cell that checks it."""
    found: dict[str, str] = {}
    for path in NOTEBOOKS:
        notebook = cells(path)
        for index, cell in enumerate(notebook):
            if cell["cell_type"] != "code":
                continue
            for id in CHECK.findall(source(cell)):
                above = []
                k = index - 1
                while k >= 0 and notebook[k]["cell_type"] == "markdown":
                    above.insert(0, source(notebook[k]))
                    k -= 1
                found[id] = "\n".join(above) + "\n" + source(cell)
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_code_cell_is_longer_than_one_idea(path: Path) -> None:
    long = []
    for index, cell in enumerate(cells(path)):
        lines = source(cell).strip().splitlines()
        is_file = bool(lines) and lines[0].startswith("%%writefile")
        if cell["cell_type"] == "code" and not is_file and len(lines) > MAX_CODE_LINES:
            long.append(f"cell {index} ({len(lines)} lines): {lines[0][:60]}")
    assert not long, f"{path.name}: code cells over {MAX_CODE_LINES} lines:\n" + "\n".join(long)


def test_every_exercise_is_asked_and_every_check_is_registered() -> None:
    asked = set(statements())
    registered = {exercise.id for exercise in [*all_exercises(), *all_file_exercises()]}
    assert asked - registered == set(), f"lessons check exercises nobody registered: {sorted(asked - registered)}"
    assert registered - asked == set(), f"exercises no lesson asks: {sorted(registered - asked)}"


def test_every_function_exercise_names_its_function_and_parameters() -> None:
    text = statements()
    missing = []
    for exercise in all_exercises():
        solution = exercise.solution
        if exercise.value or not inspect.isfunction(solution) or exercise.id not in text:
            continue
        names = [solution.__name__, *inspect.signature(solution).parameters]
        absent = [name for name in names if not re.search(rf"\b{re.escape(name)}\b", text[exercise.id])]
        if absent:
            missing.append(f"{exercise.id}: the statement never names {absent}")
    assert not missing, "\n".join(missing)
