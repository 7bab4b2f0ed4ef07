"""Each notebook as a learner runs it: Run All on a busy laptop, the embedded pages still live
right after it, then every cell run again, twice, in order, in the same kernel.

nbval (and nbconvert) send one cell, wait for it, then send the next. JupyterLab's Run All does
not wait: the kernel receives every execute_request up front. A kernel hack like nest-asyncio
was measured to drop queued cells silently in that mode, so this test sends them all at once
and checks that every cell answered "ok", in order, and that none was skipped.

One run proves three promises of README and lesson 00, to keep CI short:

* Run All works while another process keeps a core busy (a lesson asserts what holds on a busy
  laptop: relative figures, not absolute milliseconds);
* the pages a lesson embeds are live right after Run All (in real Chromium: every embedded
  page connects, ``lt.watch``'s live view included, and lesson 04's two chat pages exchange a
  message);
* any cell can be run again: each cell, in order, twice in a row, after Run All.
"""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.manager import start_new_kernel

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
RUN_ALL_BUDGET_S = 150  # the lessons aim at well under 60 s, on a busy core too; this catches a runaway
CELL_BUDGET_S = 120
IFRAME_SRC = re.compile(r'<iframe[^>]*\ssrc="([^"]+)"', re.S)


@pytest.fixture(scope="module")
def busy_core() -> Iterator[None]:
    """Another process that keeps one of the machine's cores busy while the notebooks run."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def drain_iframes(client: BlockingKernelClient, found: list[str]) -> None:
    """Collect the ``src`` of every iframe a cell displayed so far (IFrame and HTML outputs)."""
    while True:
        try:
            message = client.get_iopub_msg(timeout=0)
        except queue.Empty:
            return
        data = message["content"].get("data", {})
        found.extend(src for src in IFRAME_SRC.findall(data.get("text/html", "")) if src not in found)


def run_all(client: BlockingKernelClient, sources: list[str], iframes: list[str]) -> list[str]:
    """Queue every cell at once, as Run All does; return the errors, in cell order."""
    ids = [client.execute(source, store_history=True) for source in sources]
    replies: dict[str, dict] = {}
    deadline = time.monotonic() + RUN_ALL_BUDGET_S
    while len(replies) < len(ids):
        drain_iframes(client, iframes)
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(replies)} of {len(ids)} cells answered in {RUN_ALL_BUDGET_S} s"
        try:
            reply = client.get_shell_msg(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        parent = reply["parent_header"].get("msg_id")
        if parent in ids:
            replies[parent] = reply["content"]
    drain_iframes(client, iframes)
    errors = [
        f"cell {n}: {replies[i]['status']}: {replies[i].get('ename')}: {replies[i].get('evalue')}"
        for n, i in enumerate(ids)
        if replies[i]["status"] != "ok"
    ]
    if not errors:
        counts = [replies[i]["execution_count"] for i in ids]
        assert counts == sorted(counts) and len(set(counts)) == len(ids), "cells ran out of order or were skipped"
    return errors


def run_cell(client: BlockingKernelClient, source: str) -> dict:
    """Run one cell and wait for its reply (the way a learner re-runs it with Shift-Enter)."""
    return client.execute_interactive(source, timeout=CELL_BUDGET_S, output_hook=lambda _message: None)["content"]


def wait_until_connected(page) -> None:
    """The course's pages show a status badge; a learner's plain page has a global ``socket``."""
    if page.locator("#status").count():
        page.wait_for_selector('#status[data-status="online"]', timeout=15_000)
    else:
        page.wait_for_function("socket.readyState === WebSocket.OPEN", timeout=15_000)


def watch_is_sampling(page) -> None:
    """``lt.watch``'s view is live when samples keep coming: its last sample's time moves on."""
    page.wait_for_function("document.getElementById('latest').dataset.t", timeout=10_000)
    first = page.get_attribute("#latest", "data-t")
    page.wait_for_function(f"document.getElementById('latest').dataset.t !== '{first}'", timeout=10_000)


def check_pages_live(browser, iframes: list[str], notebook: str) -> None:
    """Every embedded page connects; chat pages of one server also exchange a message."""
    context = browser.new_context()
    try:
        by_server: dict[str, list] = {}
        for src in iframes:
            page = context.new_page()
            page.goto(src)
            wait_until_connected(page)
            if page.locator("#latest").count():
                watch_is_sampling(page)
            by_server.setdefault(src.split("?")[0], []).append(page)
        for server, pages in by_server.items():
            chats = [p for p in pages if p.locator("form#send #text").count()]
            if len(chats) < 2:
                continue
            text = f"right after Run All of {notebook} on {server}"
            chats[0].fill("#text", text)
            chats[0].press("#text", "Enter")
            chats[1].locator("#messages li", has_text=text).wait_for(timeout=10_000)
    finally:
        context.close()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_run_all_then_every_cell_again(path: Path, busy_core: None, browser) -> None:
    notebook = nbformat.read(path, as_version=4)
    sources = [c.source for c in notebook.cells if c.cell_type == "code" and c.source.strip()]
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(path.parent))
    assert manager.kernel_spec is not None  # the kernel is this environment's Python
    try:
        client.wait_for_ready(timeout=60)
        started = time.monotonic()
        iframes: list[str] = []
        errors = run_all(client, sources, iframes)
        assert not errors, f"{path.name} failed on Run All:\n" + "\n".join(errors)
        elapsed = time.monotonic() - started
        embeds = any(call in "".join(sources) for call in ("IFrame(", "side_by_side(", "lt.watch("))
        assert iframes or not embeds, f"{path.name} embeds pages but no iframe was displayed"
        if iframes:
            check_pages_live(browser, iframes, path.name)
        for n, source in enumerate(sources):
            for attempt in ("again", "a third time"):
                reply = run_cell(client, source)
                assert reply["status"] == "ok", (
                    f"{path.name}: cell {n} failed when run {attempt} after Run All: "
                    f"{reply.get('ename')}: {reply.get('evalue')}\n{source[:300]}"
                )
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    print(f"{path.name}: {len(sources)} cells in {elapsed:.1f} s on Run All", file=sys.stderr)
