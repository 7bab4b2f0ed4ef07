"""Lesson servers in processes of their own, tied to the kernel's life (lessons 09 and 10).

A server measured at scale must not share a core, a loop or a heap with the clients that
measure it, so ``spawn("minichat")`` runs ``python -m labtools serve minichat --port 0`` as a
child process and returns a ``ChildServer``: its ``url``, ``port``, ``pid``, the CPU seconds and
the memory (RSS) it uses, and ``stop()``.

Every child ends with the kernel, however the kernel ends:

* a clean end (``lt.stop_all()``, kernel shutdown, interpreter exit): the child is registered
  with the runtime like any server, so ``stop_all`` and atexit stop it, and spawning again under
  the same name (re-running the cell) replaces it;
* the kernel killed with SIGKILL (no atexit runs): on Linux the child asked the kernel, with
  ``prctl(PR_SET_PDEATHSIG, SIGTERM)``, to be sent SIGTERM when its parent dies; and everywhere
  (macOS included) the child watches its stdin, a pipe whose other end only the parent holds:
  when the parent dies the pipe reaches end of file and the child shuts down
  (``--exit-with-stdin``, a hidden option of the CLI).

``raise_file_limit()`` lifts the soft limit on open files to the hard one: a process holding
10,000 sockets needs 10,000 descriptors, and the usual soft limit is 1,024.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import resource
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from . import runtime

PR_SET_PDEATHSIG = 1
#: Highest soft limit asked for when the hard limit is "unlimited" (macOS refuses more than this).
UNLIMITED_CAP = 10_240


def raise_file_limit() -> dict[str, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; returns before, now and hard."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, UNLIMITED_CAP)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # macOS: kern.maxfilesperproc may be below the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(target, UNLIMITED_CAP)), hard))
    now, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {"soft before": soft, "soft": now, "hard": hard}


def cpu_seconds(process: psutil.Process) -> float:
    """CPU seconds ``process`` used: from Linux's nanosecond schedstat when there is one
    (``cpu_times`` counts in clock ticks of 10 ms, too coarse for a one-second step), else psutil."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{process.pid}/task"):
            with open(f"/proc/{process.pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        times = process.cpu_times()
        return times.user + times.system


def prepare_child() -> None:
    """A ``preexec_fn``: runs in the child between fork and exec to make it die with its parent
    (Linux's ``PR_SET_PDEATHSIG``, SIGTERM) and allow it many sockets.

    Any program started this way ends when the thread that forked it ends, also when the kernel
    is SIGKILLed: start children from the labtools loop, whose thread lives as long as the
    process. ``labtools.deploy`` starts redis-server and HAProxy with it."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    with contextlib.suppress(Exception):
        raise_file_limit()


class ChildServer:
    """A lesson server running in a child process (see the module's docstring)."""

    def __init__(self, name: str, app: str, process: subprocess.Popen, url: str, stderr: Any) -> None:
        self.name = name
        self.app = app
        self.process = process
        self.url = url
        host_port = url.split("//", 1)[1].rstrip("/")
        host, port = host_port.rsplit(":", 1)
        self.host = host
        self.port = int(port)
        self._stderr = stderr
        self._ps = psutil.Process(process.pid)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def cpu_seconds(self) -> float:
        """CPU seconds the server process has used since it started (all its threads)."""
        return cpu_seconds(self._ps)

    def rss(self) -> int:
        """The server process's resident memory, in bytes."""
        return self._ps.memory_info().rss

    def stderr_text(self) -> str:
        """What the child wrote on stderr so far (tracebacks, warnings)."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    async def aclose(self) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL after 5 s; idempotent."""
        process = self.process
        if process.poll() is None:
            process.terminate()
            try:
                await asyncio.to_thread(process.wait, 5)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        with contextlib.suppress(OSError):
            self._stderr.close()

    def stop(self) -> None:
        runtime.run(runtime.unregister_and_close(self.name, self))

    async def astop(self) -> None:
        await runtime.arun(runtime.unregister_and_close(self.name, self))

    def __repr__(self) -> str:
        state = "running" if self.alive else f"exited {self.process.returncode}"
        return f"<{self.app} server process {self.pid} at {self.url}, {state}>"


def child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a child, with this labtools first on its PYTHONPATH (so
    ``python -m labtools`` in the child runs the same code as the kernel, wherever that was
    imported from), plus ``extra`` (a secret goes there, never on a command line)."""
    here = str(Path(__file__).resolve().parents[1])
    paths = [here, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != here)]
    return {**os.environ, **(extra or {}), "PYTHONPATH": os.pathsep.join(paths)}


async def start_child(
    app: str,
    *,
    name: str = "",
    host: str = "127.0.0.1",
    port: int = 0,
    timeout: float = 20,
    extra: Sequence[str] = (),
    environment: dict[str, str] | None = None,
) -> ChildServer:
    """Start ``python -m labtools serve APP`` and wait for its URL line (not registered).

    ``extra`` arguments go to ``serve`` as they are (``["--broker", URL, "--node", "node1"]``
    for one node of a ``labtools.deploy.Deployment``); ``environment``: variables added to the
    child's (a secret such as the broker's password goes there, never on its command line).
    Call it on the labtools loop: the child's death signal follows the *thread* that forked it,
    and the loop's thread lives as long as the runtime.
    """
    arguments = ["serve", app, "--host", host, "--port", str(port), "--exit-with-stdin", *extra]
    return await start_module("labtools", arguments, app=app, name=name or f"process:{app}", timeout=timeout,
                              environment=environment)


async def start_module(module: str, arguments: list[str], *, app: str, name: str, timeout: float = 20,
                       environment: dict[str, str] | None = None) -> ChildServer:
    """Start ``python -m MODULE ARGUMENTS`` (a server that prints its URL, then serves until its
    stdin closes) and wait for the URL line; a child that prints none is killed, and its stderr
    says why. Not registered: ``spawn`` registers."""
    env = child_environment(environment)
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 (the ChildServer closes it)
    process = subprocess.Popen(
        [sys.executable, "-m", module, *arguments],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
        preexec_fn=prepare_child,  # prctl must run in the child; it takes no locks
    )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), timeout)
    except TimeoutError:
        line = b""
    url = line.decode().strip()
    if not url.startswith("http://"):
        process.kill()
        process.wait()
        stderr.seek(0)
        detail = stderr.read().decode(errors="replace")[-2000:]
        stderr.close()
        raise RuntimeError(f"{app} server process did not start ({url!r}): {detail}")
    return ChildServer(name, app, process, url, stderr)


async def aspawn_on_loop(app: str, *, name: str | None = None, host: str = "127.0.0.1", port: int = 0) -> ChildServer:
    """``spawn`` from a coroutine already running on the labtools loop."""
    name = name or f"process:{app}"

    async def make() -> ChildServer:
        return await start_child(app, name=name, host=host, port=port)

    return await runtime.register(name, make)


def spawn(app: str, *, name: str | None = None, host: str = "127.0.0.1", port: int = 0) -> ChildServer:
    """Run lesson app ``app`` in a child process; re-running replaces the one of the same name."""
    return runtime.run(aspawn_on_loop(app, name=name, host=host, port=port))


async def aspawn(app: str, *, name: str | None = None, host: str = "127.0.0.1", port: int = 0) -> ChildServer:
    """``spawn`` for top-level ``await``."""
    return await runtime.arun(aspawn_on_loop(app, name=name, host=host, port=port))
