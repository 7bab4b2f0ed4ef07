"""Lesson 04 walked through as a learner does it: the files its cells write, run with ``python``.

Lesson 04·1 has the learner write ``smallest_chat.py`` (``%%writefile``) and run it with
``python smallest_chat.py``; 04·2 has them write ``my_chat.py`` and its page folder and run
``python -m labtools serve my_chat.py:build``. Here each file is taken from the committed
notebook, written to an empty folder, and run as a subprocess exactly as a terminal would; two
clients then talk through it over real sockets. Each notebook's launch cell must run that same
file with that same command, so what the lesson runs is what a learner types.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from waiting import wait_until
from websockets.asyncio.client import ClientConnection, connect

import labtools as lt  # lt.run: this process's main thread may hold Playwright's loop (the browser tests)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SMALLEST = NOTEBOOKS / "04_1_smallest_chat.ipynb"
EVENT_LAYER = NOTEBOOKS / "04_2_event_layer.ipynb"
MAGIC = "%%writefile "


def cells(notebook: Path, kind: str) -> list[str]:
    return ["".join(cell["source"]) for cell in json.loads(notebook.read_text())["cells"] if cell["cell_type"] == kind]


def written(notebook: Path) -> dict[str, str]:
    """Each ``%%writefile PATH`` cell of ``notebook``: the text IPython writes to PATH."""
    files = {}
    for text in cells(notebook, "code"):
        if text.startswith(MAGIC):
            first, _, body = text.partition("\n")
            files[first.removeprefix(MAGIC).strip()] = body if body.endswith("\n") else body + "\n"
    return files


def write_all(files: dict[str, str], folder: Path) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


@contextmanager
def running(argv: list[str], folder: Path, port: int) -> Iterator[subprocess.Popen]:
    """``argv`` run in ``folder`` as a terminal would, until it accepts connections on ``port``."""
    process = subprocess.Popen(argv, cwd=folder, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: accepts(port) or process.poll() is not None, within=20, what=f"{argv} to listen")
        assert process.poll() is None, f"{argv} exited: {process.communicate()[0]}"
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_lessons_write_their_files() -> None:
    assert set(written(SMALLEST)) == {"smallest_chat.py"}
    assert set(written(EVENT_LAYER)) == {"my_chat.py", "my_chat_page/index.html", "my_chat_page/my_chat.js"}


def test_the_notebooks_run_those_files_with_the_commands_they_show() -> None:
    code, prose = "\n".join(cells(SMALLEST, "code")), "\n".join(cells(SMALLEST, "markdown"))
    assert 'lt.launch("python", "smallest_chat.py", "{port}")' in code and "python smallest_chat.py\n" in prose
    code, prose = "\n".join(cells(EVENT_LAYER, "code")), "\n".join(cells(EVENT_LAYER, "markdown"))
    assert 'lt.launch("python", "-m", "labtools", "serve", "my_chat.py:build", "--port", "{port}")' in code
    assert "python -m labtools serve my_chat.py:build --port 8000" in prose
    assert 'lt.serve("my_chat.py:build")' in code


async def receive(ws: ClientConnection, within: float = 5.0) -> Any:
    return await asyncio.wait_for(ws.recv(), within)


async def two_talk(url: str) -> tuple[Any, Any]:
    async with connect(url) as pedro, connect(url) as ana:
        await pedro.send("hola Ana")
        return await receive(ana), await receive(pedro)


def test_smallest_chat_runs_with_python(tmp_path: Path) -> None:
    write_all(written(SMALLEST), tmp_path)
    shutil.copy(NOTEBOOKS / "smallest_chat.html", tmp_path)  # the page it serves, beside it
    port = free_port()
    with running([sys.executable, "smallest_chat.py", str(port)], tmp_path, port):
        heard = lt.run(two_talk(f"ws://127.0.0.1:{port}/"))
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
    assert heard == ("hola Ana", "hola Ana")
    assert page == (NOTEBOOKS / "smallest_chat.html").read_bytes()


async def request(ws: ClientConnection, id: int, text: str) -> tuple[Any, list[Any]]:
    """Send ``msg-to-server`` with ``id``; return its acknowledgement and the pushes before it."""
    await ws.send(json.dumps({"event": "msg-to-server", "data": {"text": text}, "id": id}))
    pushes = []
    while True:
        frame = json.loads(await receive(ws))
        if frame.get("ack") == id:
            return frame, pushes
        pushes.append(frame)


async def silent(ws: ClientConnection) -> bool:
    try:
        await receive(ws, 0.3)
    except TimeoutError:
        return True
    return False


async def rooms(url: str) -> None:
    async with connect(url) as pedro, connect(url) as ana:
        assert await request(pedro, 1, "/join kitchen") == ({"ack": 1, "data": {"room": "kitchen"}}, [])
        kitchen = {"event": "msg-from-server", "data": {"text": "only the kitchen", "room": "kitchen"}}
        assert await request(pedro, 2, "only the kitchen") == ({"ack": 2, "data": {"room": "kitchen"}}, [kitchen])
        assert await silent(ana), "Ana, in the lobby, heard the kitchen"
        assert (await request(ana, 1, "/join kitchen"))[0] == {"ack": 1, "data": {"room": "kitchen"}}
        await request(pedro, 3, "hola Ana")
        heard = json.loads(await receive(ana))
        assert heard == {"event": "msg-from-server", "data": {"text": "hola Ana", "room": "kitchen"}}
        refused, pushes = await request(ana, 2, "   ")
        assert refused["error"]["code"] == "invalid-data" and pushes == [], refused


def test_my_chat_runs_with_the_course_command(tmp_path: Path) -> None:
    files = written(EVENT_LAYER)
    write_all(files, tmp_path)
    port = free_port()
    argv = [sys.executable, "-m", "labtools", "serve", "my_chat.py:build", "--port", str(port)]
    with running(argv, tmp_path, port):
        lt.run(rooms(f"ws://127.0.0.1:{port}/"))
        for path, name in (("/", "my_chat_page/index.html"), ("/my_chat.js", "my_chat_page/my_chat.js")):
            served = urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).read().decode()
            assert served == files[name], f"GET {path} is not the page's {name}"
        events_js = urllib.request.urlopen(f"http://127.0.0.1:{port}/events.js", timeout=5).read().decode()
        assert "export class EventSocket" in events_js
