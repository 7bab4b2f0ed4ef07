"""Every benchmark runs its ``--quick`` smoke pass: it starts, measures, prints its figures and
exits 0 (a benchmark exits non-zero when what it measured is wrong: lost or duplicated messages).

These are not timed tests: the figures they print are read by people, not asserted on.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# Every script directly in benchmarks/, and the peer benchmark's driver (it installs the peers
# itself, from the package registries, into ignored folders).
SCRIPTS = sorted([p.name for p in BENCHMARKS.glob("*.py")] + ["peers/run.py"])


def test_there_are_benchmarks() -> None:
    assert {"chat.py", "cluster.py", "fanout.py", "polling.py", "scale.py", "peers/run.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_quick_pass(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick"],
        cwd=BENCHMARKS.parent, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, f"{script} --quick exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert any(ch.isdigit() for ch in done.stdout), f"{script} --quick printed no figures:\n{done.stdout}"
