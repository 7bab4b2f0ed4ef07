"""Every module of labtools is on the two maps a newcomer reads (CONTRIBUTING.md, "Layout"):

* the "Layout" table of CONTRIBUTING.md: a module ``ROOM/NAME.py`` is named (backticked) in the
  row of room ``ROOM/``, a top-level module has a row of its own (``runtime.py``), and the rows
  follow the layers of ``test_layout.py``, bottom up;
* its package's ``__init__`` docstring, which names (backticked) each of its modules and
  subpackages with a phrase saying its job.

A module added, renamed or moved without its line on both maps fails here, with its name.
"""

from __future__ import annotations

import ast
import re
from itertools import pairwise
from pathlib import Path

import pytest
from test_layout import LAYER_OF

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "labtools"
CONTRIBUTING = ROOT / "CONTRIBUTING.md"
BACKTICKED = re.compile(r"`+([^`]+?)`+")
PACKAGES = sorted(init.parent for init in PACKAGE.rglob("__init__.py"))


def named(text: str) -> set[str]:
    """The names backticked in ``text``, as a module is named: ``plots.traffic``, ``chat/`` and
    ``cli.py`` count as ``traffic``, ``chat`` and ``cli``."""
    names = set()
    for name in BACKTICKED.findall(text):
        name = name.strip().removesuffix("/").removesuffix(".py")
        names.add(name.rpartition(".")[2])
    return names


def layout_rows() -> list[tuple[list[str], set[str]]]:
    """The rows of CONTRIBUTING.md's "Layout" table: (rooms as written, names in the job)."""
    text = CONTRIBUTING.read_text(encoding="utf-8")
    assert "\n## Layout\n" in text, "CONTRIBUTING.md has no '## Layout' section"
    section = text.split("\n## Layout\n", 1)[1].split("\n#", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2 or not cells[0].startswith("`"):
            continue  # the header, its rule, prose
        rooms = [room.strip() for room in BACKTICKED.findall(cells[0])]
        rows.append((rooms, named(" | ".join(cells[1:]))))
    assert rows, "the Layout table of CONTRIBUTING.md has no rows"
    return rows


def modules() -> list[Path]:
    """Every module of labtools, packages' ``__init__`` included, as a path under ``labtools/``."""
    return sorted(path.relative_to(PACKAGE) for path in PACKAGE.rglob("*.py"))


def in_layout(module: Path, rows: list[tuple[list[str], set[str]]]) -> bool:
    """Whether the Layout table names ``module``: a package by its row (``apps/chat/``), a
    top-level module by its row (``runtime.py``), any other by its name in its room's row."""
    if module.name == "__init__.py":
        if module.parent == Path("."):
            return True  # labtools itself: the table is its map
        return any(f"{module.parent.as_posix()}/" in rooms for rooms, _names in rows)
    if module.parent == Path("."):
        return any(module.name in rooms for rooms, _names in rows)
    room = f"{module.parent.as_posix()}/"
    return any(room in rooms and module.stem in names for rooms, names in rows)


def test_every_module_is_in_the_layout_table() -> None:
    rows = layout_rows()
    missing = [module.as_posix() for module in modules() if not in_layout(module, rows)]
    assert not missing, (
        "modules missing from CONTRIBUTING.md's Layout table (a package needs a row `ROOM/`, a "
        f"top-level module a row `NAME.py`, any other module its `NAME` in its room's row): {missing}"
    )


def test_the_layout_table_goes_up_the_layers() -> None:
    """Rows in the layers' order, bottom up (``static/`` and other rooms without code aside)."""
    order = []
    for rooms, _names in layout_rows():
        for room in rooms:
            name = room.split("/")[0].removesuffix(".py")
            if name in LAYER_OF:
                order.append((LAYER_OF[name], room))
    out_of_order = [(lower, higher) for lower, higher in pairwise(order) if higher[0] < lower[0]]
    assert not out_of_order, f"rows of the Layout table below a higher layer's (layer, room): {out_of_order}"


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.relative_to(PACKAGE.parent).as_posix())
def test_every_package_docstring_names_its_modules(package: Path) -> None:
    init = package / "__init__.py"
    docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
    children = {path.stem for path in package.glob("*.py") if path.name != "__init__.py"}
    children |= {path.name for path in package.iterdir() if (path / "__init__.py").is_file()}
    missing = sorted(children - named(docstring))
    assert not missing, (
        f"{init.relative_to(ROOT)}: its docstring does not name (backticked, with its job) {missing}"
    )
