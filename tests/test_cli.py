"""``python -m labtools serve APP`` (PROTOCOL.md, "Running a lesson server outside the notebook").

For every app that exists: the URL line arrives on a pipe at once (flushed), ``GET /`` and the
WebSocket share the port, and SIGTERM or SIGINT with a client connected exits 0.
"""

from __future__ import annotations

import importlib.util
import select
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from websockets.sync.client import connect

from labtools import cli, run, serving
from labtools.serving import APPS

ROOT = Path(__file__).resolve().parents[1]
EXISTING = [app for app, module in APPS.items() if importlib.util.find_spec(module) is not None]


def read_line(process: subprocess.Popen, timeout: float = 15) -> str:
    """The first stdout line, without waiting for the process to end (so: it was flushed)."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "no URL line printed"
    return process.stdout.readline().decode().strip()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("app", EXISTING)
def test_serve_prints_the_url_serves_and_exits_cleanly(app: str, sig: signal.Signals) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "labtools", "serve", app, "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        url = read_line(process)
        assert url.startswith("http://127.0.0.1:") and url.endswith("/"), url
        if app == "polling":
            with urllib.request.urlopen(url + "stats", timeout=5) as response:
                assert response.status == 200
            socket = None
        else:
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/html")
                assert b"<html" in response.read().lower()
            socket = connect("ws" + url.removeprefix("http"), open_timeout=5)
        started = time.monotonic()
        process.send_signal(sig)
        code = process.wait(15)
        stderr = process.stderr.read().decode() if process.stderr else ""
        assert code == 0, stderr
        assert time.monotonic() - started < 10
        assert "Traceback" not in stderr, stderr
        if socket is not None:  # it was open when the signal came; the server closed it cleanly
            socket.recv_events_thread.join(5)
            assert socket.close_code == 1001, socket.close_code
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "redis://127.0.0.1", "localhost:6379"])
def test_a_broker_that_is_not_a_redis_url_is_refused_clearly(url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "labtools", "serve", "minichat", "--broker", url],
        cwd=ROOT, capture_output=True, text=True, timeout=15,
    )
    assert result.returncode == 2
    assert "redis://[[USER]:PASSWORD@]HOST:PORT[/DB]" in result.stderr and "Traceback" not in result.stderr


def test_a_chat_node_without_its_shared_file_is_refused_in_one_line(redis_server) -> None:
    """With a broker, the chat's nodes must share one SQLite file: a temporary one is refused when
    the server starts (its adapter is attached after the build), in a sentence, not a traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "labtools", "serve", "chat", "--broker", redis_server.url],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert "needs db=FILE (--db)" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("argv", "given"),
    [
        ([], {"broker": None, "node": None}),
        (["--broker", "redis://127.0.0.1:6379/1", "--node", "node7"],
         {"broker": "redis://127.0.0.1:6379/1", "node": "node7"}),
    ],
    ids=["embedded", "a node"],
)
def test_broker_and_node_reach_the_apps_build_only_when_given(
    argv: list[str], given: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--broker`` and ``--node`` reach serving's build, which attaches the adapter (the app's own
    build never sees them); the build is stubbed here so that the command line is tested alone."""
    built: list[dict] = []

    class Built(Exception):
        pass

    def build(app: str, **options: object) -> serving.Server:
        built.append(options)
        raise Built  # built is all this test needs to see

    monkeypatch.setattr(serving, "build", build)
    args = cli.parse(["serve", "minichat", *argv])
    with pytest.raises(Built):
        run(cli.serve(args.app, args.host, args.port, args.db, False, args.broker, args.node))
    assert built == [given]


def test_a_server_process_collects_its_start_then_freezes_the_rest() -> None:
    """``settle_heap`` (called once a served app is up): a cycle left over from starting is
    collected, not frozen forever, and what remains is set aside from the collector's full
    passes (the process, not the test's, is frozen)."""
    script = """
import gc, weakref
from labtools.cli import settle_heap

gc.disable()  # no automatic pass: only settle_heap may collect the leftover cycle

class Node:
    pass

leftover = Node()
leftover.me = leftover  # garbage only a full pass finds
gone = weakref.ref(leftover)
del leftover
kept = [Node() for _ in range(1000)]
settle_heap()
assert gone() is None, "the leftover cycle was frozen instead of collected"
assert gc.get_freeze_count() >= 1000, gc.get_freeze_count()
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
