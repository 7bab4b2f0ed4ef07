"""A command of the learner's (``python my_chat.py``, ``redis-server redis.conf``, ``python -m
labtools serve my_app.py:build --broker …``) run from a cell as a child of the kernel.

A lesson shows the command a learner would type in a terminal, then runs exactly that command
from a cell with ``lt.launch``, so Run All neither blocks on a server that never returns nor leaks
one:

* the program is started from the labtools loop's thread with Linux's death signal
  (``processes.prepare_child``), so it ends with the kernel, also when the kernel is SIGKILLed,
  and atexit stops it on an ordinary exit (``children``);
* it is registered with the runtime under a name, so re-running the cell replaces it (the old
  one is stopped before the new one starts: no "address already in use") and ``lt.stop_all()``
  stops it;
* ``{port}`` in any argument becomes a free port, and ``launch`` returns once something accepts
  connections on that port, or raises with the end of the program's output if it exits first.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .. import runtime
from ..processes import child_environment
from .children import Program, free_port, log_tail, start_program, stop_program

PORT = "{port}"


class Launched(Program):
    """A learner's command running as a child of the kernel: ``command`` (what to type in a
    terminal), ``port`` and ``url`` when it serves, ``output()``, ``stop()``."""

    def __init__(self, name: str, argv: Sequence[str], port: int | None, log: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.log = log

    @property
    def command(self) -> str:
        """The command line as a learner types it (``python``, not this interpreter's path)."""
        words = ["python" if word == sys.executable else word for word in self.argv]
        return shlex.join(words)

    @property
    def url(self) -> str:
        assert self.port is not None, f"{self.command!r} was launched without a {PORT} port"
        return f"http://127.0.0.1:{self.port}/"

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    def output(self) -> str:
        """What the program printed so far (stdout and stderr together)."""
        return log_tail(self.log, 20_000)

    async def aclose(self) -> None:
        if self.process is not None:
            await stop_program(self.process)

    def stop(self) -> None:
        runtime.run(runtime.unregister_and_close(self.name, self))

    def __repr__(self) -> str:
        state = "running" if self.alive else "stopped"
        return f"<{self.command} ({state})>"


async def _accepts(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


async def _start(name: str, argv: list[str], port: int | None, cwd: Path, env: dict[str, str],
                 timeout: float) -> Launched:
    log = Path(tempfile.mkdtemp(prefix="labtools-launch-")) / "output.log"
    launched = Launched(name, argv, port, log)
    launched.process = start_program(argv, log, cwd, env)
    if port is None:
        return launched
    deadline = time.monotonic() + timeout
    while not await _accepts(port):
        if not launched.alive or time.monotonic() > deadline:
            await launched.aclose()
            why = "exited before it listened" if launched.process.returncode is not None else "did not listen"
            raise RuntimeError(f"{launched.command!r} {why} on port {port} (waited up to {timeout:g} s); "
                               f"its output:\n{launched.output()}")
        await asyncio.sleep(0.05)
    return launched


async def alaunch(*argv: str, name: str | None = None, port: int | None = None, cwd: str | Path = ".",
                  env: dict[str, str] | None = None, timeout: float = 20) -> Launched:
    """``launch`` for top-level ``await``."""
    if not argv:
        raise ValueError("launch needs a command, e.g. launch('python', 'my_chat.py', '{port}')")
    if port is None and any(PORT in word for word in argv):
        port = free_port()
    words = [word.replace(PORT, str(port)) for word in argv]
    if words[0] == "python":
        words[0] = sys.executable
    name = name or f"launch:{shlex.join(argv)}"
    folder = Path(cwd).resolve()
    environment = child_environment(env)

    async def make() -> Launched:
        return await _start(name, words, port, folder, environment, timeout)

    return await runtime.arun(runtime.register(name, make))


def launch(*argv: str, name: str | None = None, port: int | None = None, cwd: str | Path = ".",
           env: dict[str, str] | None = None, timeout: float = 20) -> Launched:
    """Run ``argv`` as a child of the kernel; re-running the cell replaces it.

    ``launch("python", "my_chat.py", "{port}")`` runs the script on a free port and returns once
    it accepts connections; ``python`` is this kernel's interpreter. Without ``{port}``, pass
    ``port=`` to wait for a fixed port, or neither for a program that serves nothing."""
    return runtime.run(alaunch(*argv, name=name, port=port, cwd=cwd, env=env, timeout=timeout))
