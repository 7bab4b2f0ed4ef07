"""Outside programs (redis-server, HAProxy) as children of the kernel, on free ports.

They are not Python, so they cannot watch a pipe the way ``processes``' lesson servers do; what
ties them to the kernel is Linux's death signal (``processes.prepare_child``: SIGTERM when the
thread that started them ends, also when the kernel is SIGKILLed) and, for an ordinary
interpreter exit, the atexit hook below, which stops every one still running.

A free port is found by binding port 0 and closing the socket: another process may take it
before the program binds it, so the callers retry with a new port when the program says its
address is in use.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ..processes import prepare_child

_running: set[subprocess.Popen] = set()


def find_program(name: str, debian_path: str) -> str | None:
    """Where ``name`` is: on the PATH, or where Debian installs it (``/usr/sbin`` is not on
    every user's PATH)."""
    found = shutil.which(name)
    if found is None and os.access(debian_path, os.X_OK):
        found = debian_path
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (it may be taken before it is used: retry then)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def start_program(argv: Sequence[str], log: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``argv`` with its output appended to ``log`` (``env``: its whole environment, or
    this process's); it dies with this process."""
    with open(log, "ab") as output:
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=prepare_child,  # prctl must run in the child; it takes no locks
        )
    _running.add(process)
    return process


async def stop_program(process: subprocess.Popen, timeout: float = 5) -> None:
    """SIGTERM (the program's clean shutdown: Redis flushes its AOF), SIGKILL after ``timeout``."""
    if process.poll() is None:
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)
    _running.discard(process)


def kill_program(process: subprocess.Popen) -> None:
    """SIGKILL: the crash a lesson shows (no clean shutdown, no last fsync)."""
    if process.poll() is None:
        process.kill()
        process.wait(5)
    _running.discard(process)


def log_tail(log: Path, chars: int = 2000) -> str:
    """The end of a program's log: why it did not start."""
    with contextlib.suppress(OSError):
        return log.read_text(errors="replace")[-chars:]
    return ""


@atexit.register
def _stop_running() -> None:
    """At interpreter exit, programs nobody stopped are stopped (macOS has no death signal)."""
    for process in list(_running):
        with contextlib.suppress(OSError):
            process.terminate()
    for process in list(_running):
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            process.wait(5)


class Program:
    """A program of Debian's this module started (redis-server, haproxy): its process, once started."""

    process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

