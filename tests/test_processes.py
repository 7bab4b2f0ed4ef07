"""``labtools.processes``: lesson servers in child processes that end with the kernel, however it ends."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import gone
from websockets.sync.client import connect

from labtools import processes, runtime

ROOT = Path(__file__).resolve().parents[1]

FAKE_KERNEL = """
import sys, time
from labtools import processes
server = processes.spawn("minichat")
print(server.pid, server.url, flush=True)
time.sleep(120)
"""


def test_spawn_serves_reports_cpu_and_memory_and_stops() -> None:
    server = processes.spawn("minichat", name="test-child")
    try:
        assert server.alive and server.url.startswith("http://127.0.0.1:")
        with connect(server.ws_url) as ws:
            assert '"position"' in ws.recv(timeout=5)  # where the stream stands, for a later resume
            ws.send('{"event":"msg-to-server","data":{"text":"hi"}}')
            assert "msg-from-server" in ws.recv(timeout=5)
        assert server.cpu_seconds() > 0
        assert 5_000_000 < server.rss() < 500_000_000
        assert runtime.services()["test-child"] is server
    finally:
        server.stop()
    assert not server.alive and server.process.returncode == 0  # SIGTERM: a clean shutdown
    assert "test-child" not in runtime.services()


def test_spawning_again_under_the_same_name_replaces_the_process() -> None:
    first = processes.spawn("minichat", name="test-replace")
    second = processes.spawn("minichat", name="test-replace")
    try:
        assert not first.alive and second.alive and first.pid != second.pid
    finally:
        runtime.stop_all()
    assert not second.alive


def test_the_server_can_come_back_on_the_same_port() -> None:
    first = processes.spawn("minichat", name="test-port")
    port = first.port
    first.stop()
    second = processes.spawn("minichat", name="test-port", port=port)
    try:
        assert second.port == port
    finally:
        second.stop()


@pytest.mark.parametrize("pdeathsig", [True, False], ids=["prctl+stdin", "stdin only"])
def test_the_server_dies_with_a_sigkilled_kernel(pdeathsig: bool) -> None:
    """A fake kernel spawns a server and is killed with SIGKILL: no atexit, no stop_all."""
    code = FAKE_KERNEL
    if not pdeathsig:  # the macOS path: only the stdin pipe tells the child its parent died
        code = "from labtools import processes\nprocesses.PR_SET_PDEATHSIG = 0\n" + code
    kernel = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert kernel.stdout is not None
        pid_text, _url = kernel.stdout.readline().split()
        pid = int(pid_text)
        assert psutil.Process(pid).is_running()
        kernel.send_signal(signal.SIGKILL)
        kernel.wait(5)
        assert gone(pid, within=5), f"server process {pid} outlived its kernel"
    finally:
        if kernel.poll() is None:
            kernel.kill()
            kernel.wait()


def test_a_child_reading_stdin_stops_when_the_pipe_closes() -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "labtools", "serve", "minichat", "--port", "0", "--exit-with-stdin"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().startswith(b"http://")
    child.stdin.close()
    assert child.wait(5) == 0


def test_raise_file_limit_reaches_the_hard_limit() -> None:
    limits = processes.raise_file_limit()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert limits["soft"] == soft and limits["hard"] == hard
    assert soft == hard or hard == resource.RLIM_INFINITY
    assert limits["soft before"] <= soft
