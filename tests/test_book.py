"""The course as a book (``book/``): built from the committed notebooks, with warnings as errors.

One build of the real lessons checks what a reader gets: a page per lesson, in order, with the
outputs the notebooks were committed with, the Binder button, and no frame pointing at a
kernel's port. A second build, of a small made-up repository, checks that each kind of link a
lesson may hold lands somewhere (another lesson, one of its headings in JupyterLab's spelling or
MyST's, a file or folder of the repository) and that a link to nothing fails the build.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REPOSITORY = "https://github.com/OWNER/REPO"
LIVE_IFRAME = re.compile(r"""<iframe\b[^>]*\bsrc=["']?(?:https?:)?//(?:127\.|localhost|0\.0\.0\.0|\[::1\])""", re.I)
WARNING = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
CELL_LINE = re.compile(r"(?P<notebook>\S+\.ipynb):(?P<line>\d+):")

sys.path.insert(0, str(BOOK / "_ext"))
from course_book.cell_magics import language_of  # noqa: E402  (book/_ext is not a package of the repo)
from course_book.live_frames import replace_live_frames  # noqa: E402
from course_book.urls import binder_notebook, repository_file  # noqa: E402


def build(source: Path, out: Path, repository: str = REPOSITORY) -> subprocess.CompletedProcess[str]:
    """The README's book build of ``source`` into ``out``: nitpicky, every warning an error."""
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-n", "-q", "-c", str(BOOK)]
    command += ["-d", str(out.parent / "doctrees")]
    env = {**os.environ, "COURSE_REPOSITORY": repository}
    return subprocess.run([*command, str(source), str(out)], capture_output=True, text=True, env=env, timeout=300)


def warnings(done: subprocess.CompletedProcess[str]) -> list[str]:
    """The build's warnings, a notebook's place as ``NN_name.ipynb, cell K`` (MyST-NB numbers a
    line as (cell + 1) * 10,000 + line, the cell counted from 0 as nbformat does)."""
    lines = [line for line in (done.stdout + done.stderr).splitlines() if WARNING.search(line)]
    lines = [line.replace(f"{ROOT}/", "") for line in lines]
    return [CELL_LINE.sub(lambda m: f"{m['notebook']}, cell {int(m['line']) // 10_000 - 1}:", line) for line in lines]


def squeeze(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def outputs(notebook: Path, mime: str) -> list[str]:
    """The ``mime`` data of every output of ``notebook``'s code cells, as text."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    found = []
    for cell in cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {}).get(mime)
            if data is not None:
                found.append("".join(data) if isinstance(data, list) else data)
    return found


def printed(notebook: Path) -> list[str]:
    """What ``notebook``'s code cells printed, or returned with no richer form than text."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    found = []
    for cell in cells:
        for output in cell.get("outputs", []):
            text = output.get("text") if output["output_type"] == "stream" else None
            if set(output.get("data", {})) == {"text/plain"}:
                text = output["data"]["text/plain"]
            if text:
                found.append("".join(text) if isinstance(text, list) else text)
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("book") / "html"
    done = build(ROOT, out)
    problems = warnings(done)
    assert done.returncode == 0 and not problems, (
        "the book does not build cleanly; broken links and other problems, by notebook:\n"
        + "\n".join(problems or [done.stdout[-3000:], done.stderr[-3000:]])
    )
    return out


def test_every_lesson_has_a_page_listed_in_order(site: Path) -> None:
    assert NOTEBOOKS, "no lessons found"
    index = (site / "book" / "index.html").read_text(encoding="utf-8")
    listed = re.findall(r'href="\.\./notebooks/([0-9][0-9]_[^"#]+)\.html"', index)
    assert list(dict.fromkeys(listed)) == [n.stem for n in NOTEBOOKS]
    for notebook in NOTEBOOKS:
        assert (site / "notebooks" / f"{notebook.stem}.html").is_file(), f"no page for {notebook.name}"
    assert "book/index.html" in (site / "index.html").read_text(encoding="utf-8"), "the site root leads nowhere"


def test_pages_show_the_committed_outputs(site: Path) -> None:
    for notebook in NOTEBOOKS:
        page = (site / "notebooks" / f"{notebook.stem}.html").read_text(encoding="utf-8")
        images = re.findall(r'<img [^>]*src="\.\./(_images/[^"]+\.png)"', page)
        assert len(images) >= len(outputs(notebook, "image/png")), f"{notebook.name}: figures missing"
        assert all((site / image).is_file() for image in images)
        shown = squeeze(html.unescape(re.sub(r"<[^>]+>", "", page)))
        for text in printed(notebook)[:5]:
            text = ANSI.sub("", text).strip()  # colours: MyST-NB renders them as styled spans
            first = squeeze(text.splitlines()[0]) if text else ""
            assert first in shown, f"{notebook.name}: the output {first!r} is not on its page"
    assert any(outputs(n, "image/png") for n in NOTEBOOKS), "no lesson has a figure: the check above proved nothing"


def test_live_pages_become_a_note_with_a_binder_link(site: Path) -> None:
    embedded = 0
    for notebook in NOTEBOOKS:
        page = (site / "notebooks" / f"{notebook.stem}.html").read_text(encoding="utf-8")
        assert not LIVE_IFRAME.search(page), f"{notebook.name}: a live frame reached the book"
        frames = sum(len(LIVE_IFRAME.findall(html)) for html in outputs(notebook, "text/html"))
        assert page.count("live-page-note") == frames, f"{notebook.name}: {frames} live frames, notes differ"
        embedded += frames
    assert embedded, "no lesson embeds a live page: the check above proved nothing"
    for page in site.rglob("*.html"):
        assert not LIVE_IFRAME.search(page.read_text(encoding="utf-8")), f"{page}: a live frame"


def test_every_lesson_page_has_its_binder_link(site: Path) -> None:
    for notebook in NOTEBOOKS:
        page = (site / "notebooks" / f"{notebook.stem}.html").read_text(encoding="utf-8")
        wanted = f"https://mybinder.org/v2/gh/OWNER/REPO/HEAD?urlpath=lab/tree/notebooks/{notebook.name}"
        assert wanted in page, f"{notebook.name}: no Binder link"
    index = (site / "book" / "index.html").read_text(encoding="utf-8")
    start = "https://mybinder.org/v2/gh/OWNER/REPO/HEAD?urlpath=lab/tree/notebooks/00_start_here.ipynb"
    assert f'href="{start}"' in index, "the index page does not launch the course on Binder"


def test_only_live_frames_are_replaced() -> None:
    binder = binder_notebook(REPOSITORY, "notebooks/05_band_votes.ipynb")
    frames = [
        '<iframe src="http://127.0.0.1:41887/?name=Pedro" title="Pedro"></iframe>',
        '<iframe\n width="100%"\n src="http://localhost:8000/"\n frameborder="0"\n></iframe>',
        '<iframe src="/user/ana/proxy/41887/?name=Ana"></iframe>',
    ]
    for frame in frames:
        text, count = replace_live_frames(f"<figure><figcaption>Pedro</figcaption>{frame}</figure>", binder)
        assert count == 1 and "<iframe" not in text and "Pedro" in text and binder in text
    kept = '<iframe src="https://www.example.org/video"></iframe>'
    assert replace_live_frames(kept, binder) == (kept, 0)


def test_addresses_come_from_the_repository() -> None:
    assert binder_notebook("https://github.com/ana/course", "notebooks/a b.ipynb") == (
        "https://mybinder.org/v2/gh/ana/course/HEAD?urlpath=lab/tree/notebooks/a%20b.ipynb"
    )
    assert binder_notebook("https://git.example.org/ana/course", "n.ipynb").startswith(
        "https://mybinder.org/v2/git/https%3A%2F%2Fgit.example.org%2Fana%2Fcourse/HEAD?"
    )
    assert repository_file(REPOSITORY, "labtools/apps", folder=True) == f"{REPOSITORY}/tree/HEAD/labtools/apps"
    assert repository_file(REPOSITORY, "PROTOCOL.md", anchor="frames") == f"{REPOSITORY}/blob/HEAD/PROTOCOL.md#frames"


def test_cell_magics_name_their_language() -> None:
    assert language_of("%%writefile my_chat_page/index.html\n<!doctype html>") == "html"
    assert language_of("%%writefile -a my_chat.js\nsocket.on('x')") == "javascript"
    assert language_of("%%writefile my_app.py\nimport asyncio") == "python"
    assert language_of("%%writefile notes.unknown\nwhatever") == "text"
    assert language_of("%%bash\nls") == "bash"
    assert language_of("%%time\nx = 1") is None
    assert language_of("import labtools as lt") is None


def notebook(*cells: str) -> str:
    """A notebook of Markdown cells (nbformat 4)."""
    return json.dumps({
        "cells": [
            {"cell_type": "markdown", "id": f"c{i}", "metadata": {}, "source": [text]} for i, text in enumerate(cells)
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    })


def made_up_repository(root: Path, *links: str) -> Path:
    """A repository with the book's index, two lessons, a contract and a package; lesson 01's
    last cell holds ``links``."""
    (root / "book").mkdir(parents=True)
    (root / "book" / "index.md").write_text((BOOK / "index.md").read_text(encoding="utf-8"), encoding="utf-8")
    (root / "notebooks").mkdir()
    (root / "notebooks" / "02_second.ipynb").write_text(notebook("# 02 · Second\n\n## 1. Two words\n\nText."))
    (root / "notebooks" / "01_first.ipynb").write_text(
        notebook("# 01 · First\n\n## 2. The smallest chat\n\nText.", "\n\n".join(links))
    )
    (root / "PROTOCOL.md").write_text("# Protocol\n")
    (root / "labtools" / "apps").mkdir(parents=True)
    (root / "labtools" / "apps" / "chat.py").write_text("CHAT = 1\n")
    return root


GOOD_LINKS = (
    "[next](02_second.ipynb)",
    "[a heading, JupyterLab's way](02_second.ipynb#1.-Two-words)",
    "[a heading, MyST's way](02_second.ipynb#1-two-words)",
    "[here, JupyterLab's way](#2.-The-smallest-chat)",
    "[the contract](../PROTOCOL.md)",
    "[a module](../labtools/apps/chat.py)",
    "[a folder](../labtools/apps/)",
)


def test_each_kind_of_link_lands(tmp_path: Path) -> None:
    source = made_up_repository(tmp_path / "repo", *GOOD_LINKS)
    done = build(source, tmp_path / "html", repository="https://github.com/ana/course")
    assert done.returncode == 0 and not warnings(done), "\n".join(warnings(done)) or done.stderr
    page = (tmp_path / "html" / "notebooks" / "01_first.html").read_text(encoding="utf-8")
    hrefs = set(re.findall(r'href="([^"]+)"', page))
    assert {"02_second.html", "02_second.html#two-words", "#the-smallest-chat"} <= hrefs
    repository = "https://github.com/ana/course"
    assert {
        f"{repository}/blob/HEAD/PROTOCOL.md",
        f"{repository}/blob/HEAD/labtools/apps/chat.py",
        f"{repository}/tree/HEAD/labtools/apps",
    } <= hrefs
    assert not (tmp_path / "html" / "_downloads").exists(), "a repository file was copied into the book"


BROKEN_LINKS = {  # link: what the build's warning names
    "[gone](03_missing.ipynb)": "03_missing",
    "[gone](02_second.ipynb#No-such-heading)": "No-such-heading",
    "[gone](#Nowhere-here)": "Nowhere-here",
    "[gone](../MISSING.md)": "MISSING",
    "[gone](../labtools/missing.py)": "missing.py",
}


def test_a_link_to_nothing_fails_the_build(tmp_path: Path) -> None:
    source = made_up_repository(tmp_path / "repo", *BROKEN_LINKS)
    done = build(source, tmp_path / "html")
    problems = warnings(done)
    assert done.returncode != 0
    for link, named in BROKEN_LINKS.items():
        assert any(named in problem for problem in problems), f"{link} built without a warning: {problems}"
