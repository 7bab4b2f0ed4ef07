"""The files lesson 11·2 has the learner write (``%%writefile _deploy/...``), read from the notebook.

Tests that deploy the learner's own app (exercise 11.3, ``test_lesson11_own_app.py``) write these
files into a folder of their own, so they test exactly what the lesson writes, and there is no
second copy to drift from it.
"""

from __future__ import annotations

import json
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "11_2_nodes_in_production.ipynb"
MAGIC = "%%writefile "


def learner_files() -> dict[str, str]:
    """Each ``%%writefile`` cell of lesson 11·2: its path (relative to the notebook) and its text."""
    files = {}
    for cell in json.loads(NOTEBOOK.read_text())["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and source.startswith(MAGIC):
            first, _, body = source.partition("\n")
            files[first.removeprefix(MAGIC).strip()] = body
    assert files, f"{NOTEBOOK.name} writes no file with %%writefile"
    return files


def write_learner_files(folder: Path) -> list[Path]:
    """Write them under ``folder`` as the notebook writes them beside itself."""
    written = []
    for name, text in learner_files().items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
