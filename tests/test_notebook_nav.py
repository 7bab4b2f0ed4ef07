"""Every lesson opens and closes with Prev / Contents / Next links that resolve, and the links
are the ones ``tools/notebook_nav.py`` generates (so none can go stale)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_navigation_is_up_to_date() -> None:
    command = [sys.executable, "tools/notebook_nav.py", "--check"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_lesson_links_to_its_neighbours_and_the_contents() -> None:
    for index, path in enumerate(NOTEBOOKS):
        cells = json.loads(path.read_text())["cells"]
        for cell in (cells[0], cells[-1]):
            assert "navigation" in cell["metadata"].get("tags", []), f"{path.name}: no navigation cell"
            targets = re.findall(r"\]\(([^)]+)\)", "".join(cell["source"]))
            assert all((path.parent / t).is_file() for t in targets), f"{path.name}: a link does not resolve: {targets}"
            expected = {n.name for n in NOTEBOOKS[max(0, index - 1): index + 2] if n != path}
            assert expected <= set(targets), f"{path.name}: links {targets}, expected {sorted(expected)}"
