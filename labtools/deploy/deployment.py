"""A lesson app deployed as several nodes: Redis between them, HAProxy in front (lesson 11).

``await Deployment.start("minichat", nodes=2)`` runs, all as children of the kernel that die
with it:

* a ``RedisServer`` (unless ``broker=`` names a Redis already running): the broker through
  which the nodes share their log and their pub/sub;
* N nodes, ``python -m labtools serve APP --broker URL --node nodeK --port 0``: each a
  ``processes.ChildServer`` (its URL, pid, CPU seconds), each on its own core if there is one;
* a ``FrontDoor`` (HAProxy): the one address a browser or a crowd uses.

It is registered in the runtime under its name like any server: starting it again under the
same name (re-running the cell) replaces it, and ``lt.stop_all()`` stops all of it. ``kill(i)``
and ``restart_node(i)`` are the failures a lesson shows: a node gone without a word, and the
same node back on the same port (HAProxy's health checks put it back in the rotation).
"""

from __future__ import annotations

import asyncio
import math
import secrets
import tempfile
from pathlib import Path
from typing import Any

import psutil

from .. import runtime
from ..cluster.broker import PASSWORD_ENV, check_broker_url, password_of, redacted, without_password
from ..events.forwarded import FRONT_DOOR_SECRET_ENV
from ..processes import ChildServer, start_child
from .haproxy import FrontDoor
from .redis import RedisServer

#: ``Deployment.start``'s options that a node's command line carries (``--db``: the chat's file).
NODE_OPTIONS = ("db",)


def node_arguments(broker: str, node: str, options: dict[str, Any]) -> list[str]:
    """The ``serve`` arguments of one node, beyond app, host and port."""
    unknown = sorted(set(options) - set(NODE_OPTIONS))
    if unknown:
        raise TypeError(f"{unknown}: a node's command line takes only {', '.join(NODE_OPTIONS)}")
    arguments = ["--broker", broker, "--node", node]
    for key, value in options.items():
        arguments += [f"--{key}", str(value)]
    return arguments


class Deployment:
    """Redis, N nodes of one app and HAProxy before them (see the module's docstring)."""

    def __init__(self, name: str, app: str, host: str, broker: str, redis: RedisServer | None) -> None:
        self.name = name
        self.app = app
        self.host = host
        #: The nodes' ``--broker``: without its password, which they get in their environment.
        self.broker = without_password(broker)
        self.broker_password = password_of(broker)
        #: The front door's proof to the nodes (``events.forwarded``): drawn per deployment.
        self.front_door_secret = secrets.token_urlsafe(24)
        self.redis = redis
        self.nodes: list[ChildServer] = []
        self.node_arguments: list[list[str]] = []
        self.front_door: FrontDoor | None = None
        self.closed = False
        #: The chat's database when none was given: one file all the nodes share, deleted at the end.
        self.folder: tempfile.TemporaryDirectory | None = None

    @classmethod
    async def start(
        cls,
        app: str,
        *,
        nodes: int = 2,
        broker: str | None = None,
        front_door: bool = True,
        name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        **options: Any,
    ) -> Deployment:
        """Start the deployment on the labtools loop, registered as ``name`` (default
        ``deployment:APP``): one of that name that runs already is stopped first.

        ``broker``: a Redis URL to share instead of starting one; ``front_door=False``: no
        HAProxy (``url`` is then the first node's); ``port``: the front door's (0: a free one);
        ``options``: for every node's command line (``db`` for the chat: a temporary file
        shared by its nodes when none is given)."""
        if nodes < 1:
            raise ValueError(f"nodes={nodes}: a deployment has at least one node")
        if broker is not None:
            check_broker_url(broker)

        async def make() -> Deployment:
            return await cls.launch(app, nodes=nodes, broker=broker, front_door=front_door,
                                    name=name or f"deployment:{app}", host=host, port=port, options=options)

        return await runtime.register(name or f"deployment:{app}", make)

    @classmethod
    async def launch(
        cls,
        app: str,
        *,
        nodes: int,
        broker: str | None,
        front_door: bool,
        name: str,
        host: str,
        port: int,
        options: dict[str, Any],
    ) -> Deployment:
        """``start`` without the registry: everything started, or nothing left running."""
        redis = None if broker is not None else await RedisServer.start()
        deployment = cls(name, app, host, broker or (redis.url if redis else ""), redis)
        try:
            if app == "chat" and "db" not in options:  # its nodes share one SQLite file
                deployment.folder = tempfile.TemporaryDirectory(prefix="labtools-nodes-")
                options = {**options, "db": str(Path(deployment.folder.name) / "chat.db")}
            deployment.node_arguments = [
                node_arguments(deployment.broker, f"node{k}", options) for k in range(1, nodes + 1)
            ]
            deployment.nodes = list(
                await asyncio.gather(*(deployment.start_node(k, 0) for k in range(nodes)))
            )
            if front_door:
                deployment.front_door = await FrontDoor.start(
                    [(f"node{k + 1}", n.port) for k, n in enumerate(deployment.nodes)], host=host, port=port,
                    secret=deployment.front_door_secret,
                )
        except BaseException:
            await deployment.aclose()
            raise
        return deployment

    async def start_node(self, index: int, port: int) -> ChildServer:
        """Node ``index`` (from 0, named ``node{index + 1}``) on ``port`` (0: a free one)."""
        secrets_ = {FRONT_DOOR_SECRET_ENV: self.front_door_secret}
        if self.broker_password:
            secrets_[PASSWORD_ENV] = self.broker_password
        return await start_child(
            self.app, name=f"{self.name}:node{index + 1}", host=self.host, port=port, extra=self.node_arguments[index],
            environment=secrets_,
        )

    @property
    def url(self) -> str:
        """The front door's address (the first node's without a front door)."""
        return self.front_door.url if self.front_door is not None else self.nodes[0].url

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    @property
    def port(self) -> int:
        return self.front_door.port if self.front_door is not None else self.nodes[0].port

    @property
    def node_urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (from 0): a crash, no clean shutdown, its sockets cut."""
        process = self.nodes[index].process
        if process.poll() is None:
            process.kill()
            process.wait(5)

    async def restart_node(self, index: int) -> ChildServer:
        """Stop node ``index`` if it still runs and start it again on the same port."""
        old = self.nodes[index]
        await old.aclose()
        self.nodes[index] = await self.start_node(index, old.port)
        return self.nodes[index]

    def cpu_seconds(self) -> list[float]:
        """CPU seconds each node used since it started (NaN for a node that is not running)."""
        seconds = []
        for node in self.nodes:
            try:
                seconds.append(node.cpu_seconds() if node.alive else math.nan)
            except psutil.Error:
                seconds.append(math.nan)
        return seconds

    async def aclose(self) -> None:
        """Stop the front door, the nodes, then the Redis it started; idempotent."""
        self.closed = True
        if self.front_door is not None:
            await self.front_door.aclose()
        await asyncio.gather(*(node.aclose() for node in self.nodes))
        if self.redis is not None:
            await self.redis.aclose()
        if self.folder is not None:
            self.folder.cleanup()
            self.folder = None

    def stop(self) -> None:
        runtime.run(runtime.unregister_and_close(self.name, self))

    async def astop(self) -> None:
        await runtime.arun(runtime.unregister_and_close(self.name, self))

    def __repr__(self) -> str:
        alive = sum(node.alive for node in self.nodes)
        state = "stopped" if self.closed else f"{alive} of {len(self.nodes)} nodes running"
        where = self.url if self.nodes else "-"
        return f"<{self.app} deployment {self.name!r} at {where}, {state}, broker {redacted(self.broker)}>"
