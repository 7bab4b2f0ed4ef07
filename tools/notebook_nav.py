"""Write the Prev / Contents / Next links at the top and bottom of every lesson notebook.

The links are generated, never typed: the order is the notebooks' numbers, the titles are
their first headings. ``python tools/notebook_nav.py`` rewrites them; ``--check`` only says
whether they are up to date (the tests run it), so a renamed or added lesson cannot leave a
dangling link behind.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TAG = "navigation"
CONTENTS = "00_start_here.ipynb"


def lessons() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def title(notebook: dict) -> str:
    """The first heading of the lesson, up to its colon: "05 · Band votes"."""
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown" and TAG not in cell.get("metadata", {}).get("tags", []):
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line.removeprefix("# ").split(":")[0].strip()
    raise ValueError("a lesson needs a '# NN · Title' heading")


def links(index: int, paths: list[Path], titles: list[str]) -> str:
    parts = []
    if index > 0:
        parts.append(f"[← {titles[index - 1]}]({paths[index - 1].name})")
    if paths[index].name != CONTENTS:
        parts.append(f"[Contents]({CONTENTS})")
    if index + 1 < len(paths):
        parts.append(f"[{titles[index + 1]} →]({paths[index + 1].name})")
    return " · ".join(parts)


def nav_cell(text: str, where: str) -> dict:
    return {
        "cell_type": "markdown",
        "id": f"nav-{where}",
        "metadata": {"tags": [TAG]},
        "source": [text],
    }


def with_navigation(notebook: dict, text: str) -> dict:
    cells = [c for c in notebook["cells"] if TAG not in c.get("metadata", {}).get("tags", [])]
    return {**notebook, "cells": [nav_cell(text, "top"), *cells, nav_cell(text, "bottom")]}


def serialize(notebook: dict) -> str:
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if any notebook's links are out of date")
    args = parser.parse_args(argv)
    paths = lessons()
    notebooks = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    titles = [title(nb) for nb in notebooks]
    stale = []
    for index, (path, notebook) in enumerate(zip(paths, notebooks, strict=True)):
        wanted = serialize(with_navigation(notebook, links(index, paths, titles)))
        if wanted != path.read_text(encoding="utf-8"):
            stale.append(path.name)
            if not args.check:
                path.write_text(wanted, encoding="utf-8")
    if args.check and stale:
        print(f"navigation out of date in {', '.join(stale)}: run python tools/notebook_nav.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
