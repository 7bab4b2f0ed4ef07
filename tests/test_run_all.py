"""Each notebook run the way JupyterLab's Run All runs it: every cell queued at once.

nbval (and nbconvert) send one cell, wait for it, then send the next. Run All does not wait:
the kernel receives every execute_request up front. A kernel hack like nest-asyncio was
measured to drop queued cells silently in that mode, so this test sends them all at once and
checks that every cell answered "ok", in order, and that none was skipped.
"""

from __future__ import annotations

import queue
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NOTEBOOK_BUDGET_S = 90  # the lessons aim at well under 60 s; this only catches a runaway


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_run_all(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    sources = [c.source for c in notebook.cells if c.cell_type == "code" and c.source.strip()]
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(path.parent))
    # The kernel must be this environment's Python, whatever kernelspecs the machine has.
    assert manager.kernel_spec is not None
    try:
        client.wait_for_ready(timeout=60)
        started = time.monotonic()
        ids = [client.execute(source, store_history=True) for source in sources]
        replies: dict[str, dict] = {}
        errors: list[str] = []
        deadline = started + NOTEBOOK_BUDGET_S
        while len(replies) < len(ids):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{path.name}: only {len(replies)} of {len(ids)} cells answered in time"
            try:
                reply = client.get_shell_msg(timeout=remaining)
            except queue.Empty:
                continue
            parent = reply["parent_header"].get("msg_id")
            if parent in ids:
                replies[parent] = reply["content"]
                if reply["content"]["status"] != "ok":
                    content = reply["content"]
                    errors.append(f"cell {ids.index(parent)}: {content.get('ename')}: {content.get('evalue')}")
        elapsed = time.monotonic() - started
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert not errors, f"{path.name} failed on Run All:\n" + "\n".join(errors)
    counts = [replies[i]["execution_count"] for i in ids]
    assert counts == sorted(counts) and len(set(counts)) == len(ids), "cells ran out of order or were skipped"
    print(f"{path.name}: {len(ids)} cells in {elapsed:.1f} s", file=sys.stderr)
