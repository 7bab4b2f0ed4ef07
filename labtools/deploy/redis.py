"""Debian's ``redis-server`` as a child of the kernel: the broker that lesson 11's nodes share.

``await RedisServer.start()`` runs it on a free port of 127.0.0.1 in a temporary directory, and
returns once it answers PING. Its options say why a lesson can rely on it:

* ``--appendonly yes --appendfsync everysec``: every write goes to the append-only file and is
  fsynced once a second, so ``restart()`` (and a crash, losing at most a second) finds the data
  again: the lesson on recovery needs a broker that remembers its streams. RDB snapshots are off
  (``--save ""``): they would fork a copy of the server at odd moments of a measurement.
* ``--bind 127.0.0.1 --protected-mode yes``: no other machine reaches it;
* a password, drawn at start (``requirepass``): no other user of *this* machine can talk to it
  either (a shared JupyterHub host has many, and anyone who can send Redis commands can forge
  any message of the apps on it, or ``SHUTDOWN`` it). The password is in a configuration file
  only its owner can read, never on a command line (``/proc/PID/cmdline`` is readable by every
  user); ``url`` carries it for clients in this process, ``address`` is the same URL without it,
  and the nodes a deployment starts get it in their environment (``broker.PASSWORD_ENV``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import redis.asyncio

from ..cluster.broker import with_password
from .children import Program, find_program, free_port, kill_program, log_tail, start_program, stop_program

REDIS_SERVER = "/usr/bin/redis-server"


def redis_available() -> bool:
    """Whether Debian's ``redis-server`` is installed."""
    return find_program("redis-server", REDIS_SERVER) is not None


def missing_message() -> str:
    return "redis-server is not installed: apt-get install redis-server (CI installs it)"


class RedisServer(Program):
    """One ``redis-server`` process (see the module's docstring); not registered in the runtime."""

    def __init__(self, port: int, directory: Path, appendonly: bool, owns_directory: bool) -> None:
        self.port = port
        self.dir = directory
        self.appendonly = appendonly
        self.owns_directory = owns_directory
        self.process: subprocess.Popen | None = None
        self.password = secrets.token_urlsafe(24)

    @classmethod
    async def start(
        cls, port: int = 0, dir: str | Path | None = None, appendonly: bool = True, timeout: float = 10
    ) -> RedisServer:
        """Start redis-server on ``port`` (0: a free one) with its files in ``dir`` (None: a new
        temporary directory, removed by ``aclose``); returns once it answers PING."""
        if not redis_available():
            raise RuntimeError(missing_message())
        owns = dir is None
        directory = Path(tempfile.mkdtemp(prefix="labtools-redis-")) if dir is None else Path(dir)
        server = cls(port, directory, appendonly, owns)
        try:
            await server.run(timeout, retry_port=port == 0)
        except BaseException:
            await server.aclose()
            raise
        return server

    @property
    def address(self) -> str:
        """``redis://127.0.0.1:PORT``: where it listens, without the password (for command lines)."""
        return f"redis://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The URL a client in this process connects with: the address and the password."""
        return with_password(self.address, self.password)

    def client(self, **options: Any) -> redis.Redis:
        """A (blocking) client of this server, authenticated."""
        return redis.Redis(port=self.port, password=self.password, **options)

    @property
    def log(self) -> Path:
        return self.dir / "redis.log"

    def arguments(self) -> list[str]:
        return [
            find_program("redis-server", REDIS_SERVER) or REDIS_SERVER,
            str(self.write_config()),  # the password, where only this user can read it
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--protected-mode", "yes",
        ]  # fmt: skip

    def write_config(self) -> Path:
        """``redis.conf`` with ``requirepass``, owner-only (0600, created so: never readable)."""
        path = self.dir / "redis.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as config:
            config.write(f"requirepass {self.password}\n")
        os.chmod(path, 0o600)  # an older file of another mode
        return path

    async def run(self, timeout: float, retry_port: bool) -> None:
        """Start the process and wait for PING; a lost race for a free port tries another."""
        for _attempt in range(5):
            if retry_port:
                self.port = free_port()
            self.process = start_program(self.arguments(), self.log, self.dir)
            if await self.answers(timeout):
                return
            await stop_program(self.process)
            tail = log_tail(self.log)
            if not (retry_port and "Address already in use" in tail):
                raise RuntimeError(f"redis-server did not start on port {self.port}: {tail}")
        raise RuntimeError(f"redis-server found no free port: {log_tail(self.log)}")

    async def answers(self, timeout: float) -> bool:
        """Whether the server answers PING within ``timeout`` (False as soon as it exits)."""
        client = redis.asyncio.Redis(port=self.port, password=self.password, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and self.alive:
                try:
                    if await client.ping():
                        return True
                except (redis.ConnectionError, redis.BusyLoadingError, OSError):
                    await asyncio.sleep(0.05)
            return False
        finally:
            await client.aclose()

    async def restart(self, timeout: float = 10) -> None:
        """SIGTERM, then start again on the same port and directory: the data comes back from
        the append-only file (the recovery a lesson shows)."""
        if self.process is not None:
            await stop_program(self.process)
        await self.run(timeout, retry_port=False)

    def kill(self) -> None:
        """SIGKILL: a crash (writes of the last second may be lost)."""
        if self.process is not None:
            kill_program(self.process)

    def info(self) -> dict[str, Any]:
        """The server's INFO (``used_memory``, ``connected_clients``, ``aof_enabled``...)."""
        with self.client(socket_timeout=5) as client:
            return client.info()

    async def aclose(self) -> None:
        """Stop the server and remove the directory it made; idempotent."""
        if self.process is not None:
            await stop_program(self.process)
        if self.owns_directory:
            await asyncio.to_thread(shutil.rmtree, self.dir, True)

    def __repr__(self) -> str:
        state = "running" if self.alive else "stopped"
        return f"<redis-server {self.process.pid if self.process else '-'} at {self.url}, {state}>"
