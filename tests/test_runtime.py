"""The background loop: start, replace by name, stop_all, shutdown and restart, scripts."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import labtools as lt
from labtools import runtime

ROOT = Path(__file__).parent.parent


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "labtools-loop"]


def test_run_and_arun_use_one_background_loop() -> None:
    async def where() -> int:
        return threading.get_ident()

    first = lt.run(where())
    assert first != threading.get_ident()
    assert lt.run(where()) == first
    assert len(_loop_threads()) == 1


def test_run_raises_the_coroutines_error_and_times_out() -> None:
    async def boom() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        lt.run(boom())

    async def slow() -> None:
        import asyncio

        await asyncio.sleep(5)

    with pytest.raises(TimeoutError):
        lt.run(slow(), timeout=0.1)


def test_serve_replaces_a_server_of_the_same_name() -> None:
    first = lt.serve("polling", name="rt-polling")
    second = lt.serve("polling", name="rt-polling")
    assert runtime.services()["rt-polling"] is second.server
    with pytest.raises(OSError):  # the first one's port is closed
        import socket

        socket.create_connection(("127.0.0.1", first.port), timeout=1).close()
    other = lt.serve("polling", name="rt-other")
    assert {"rt-polling", "rt-other"} <= set(runtime.services())
    lt.stop_all()
    assert runtime.services() == {}
    for handle in (second, other):
        with pytest.raises(OSError):
            import socket

            socket.create_connection(("127.0.0.1", handle.port), timeout=1).close()


def test_stop_is_idempotent() -> None:
    server = lt.serve("polling", name="rt-stop")
    server.stop()
    server.stop()
    assert "rt-stop" not in runtime.services()


def test_shutdown_joins_the_thread_and_a_restart_works() -> None:
    lt.serve("polling", name="rt-shutdown")
    lt.shutdown()
    assert _loop_threads() == []
    lt.shutdown()  # twice is fine
    server = lt.serve("polling", name="rt-restarted")
    assert server.stats()["total"]["requests"] == 0
    assert len(_loop_threads()) == 1
    lt.stop_all()


def test_calling_run_from_the_loop_thread_is_an_error() -> None:
    async def nested() -> None:
        async def inner() -> None:
            return None

        lt.run(inner())

    with pytest.raises(RuntimeError, match="labtools loop itself"):
        lt.run(nested())


def test_a_script_serves_polls_and_exits_cleanly() -> None:
    script = (
        "import labtools as lt\n"
        "from labtools.sim.crowd import run_crowd\n"
        "server = lt.serve('polling')\n"
        "result = run_crowd(server, users=5, rate=5, duration=0.6, interval=0.2, seed=3)\n"
        "assert result.lost == 0, result\n"
        "print('ok', result.sent, flush=True)\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok"), done.stdout
    assert done.stderr == ""
    assert time.monotonic() - started < 15
