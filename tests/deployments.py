"""The same contract tests against one node, two nodes, and two nodes behind the front door.

``deployed(app, mode, redis)`` returns something a test uses like a ``ServerHandle``:

* ``"one"``: the embedded default, one process, no broker;
* ``"two-nodes"``: two nodes of the app in this kernel sharing through a real redis-server;
  each read of ``url`` gives the *next* node's address, so consecutive clients of a test are
  spread over both nodes (Ana on one, Pedro on the other) without the test saying so;
* ``"front-door"``: the same two nodes behind HAProxy; ``url`` is the front door's, which
  round-robins WebSocket connections over the nodes.

``read(fn)`` waits until every node's state gives the same answer (the nodes apply the log a
moment apart), and returns it: a test that reads the state checks every copy of it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import require_haproxy

import labtools as lt
from labtools.deploy import FrontDoor, RedisServer

MODES = ("one", "two-nodes", "front-door")


class Spread:
    """Two nodes of one app, as one server for a test (see the module's docstring)."""

    def __init__(self, nodes: list[lt.ServerHandle], front: FrontDoor | None = None) -> None:
        self.nodes = nodes
        self.front = front
        self._next: Iterator[lt.ServerHandle] = itertools.cycle(nodes)

    @property
    def url(self) -> str:
        return self.front.url if self.front is not None else next(self._next).url

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    @property
    def server(self) -> Any:
        """The first node's server: its state, its errors."""
        return self.nodes[0].server

    def read(self, fn: Callable[[Any], Any], within: float = 5.0) -> Any:
        if lt.runtime.in_loop_thread():
            raise RuntimeError("read the nodes from the test, not from a coroutine: waiting would block their loop")
        deadline = time.monotonic() + within
        while True:
            answers = [node.read(fn) for node in self.nodes]
            if all(answer == answers[0] for answer in answers) or time.monotonic() > deadline:
                assert all(answer == answers[0] for answer in answers), f"the nodes disagree: {answers}"
                return answers[0]
            time.sleep(0.02)

    def stop(self) -> None:
        if self.front is not None:
            lt.run(self.front.aclose())
        for node in self.nodes:
            node.stop()


def deployed(app: str, mode: str, redis: RedisServer | None, name: str, **options: Any) -> lt.ServerHandle | Spread:
    """``app`` as ``mode`` (one of ``MODES``); ``redis`` is needed for the two-node modes."""
    if mode == "one":
        return lt.serve(app, name=name, **options)
    assert redis is not None
    lt.run(flush(redis))
    nodes = [lt.serve(app, name=f"{name}-{node}", broker=redis.url, node=node, **options) for node in ("a", "b")]
    front = None
    if mode == "front-door":
        require_haproxy()
        front = lt.run(FrontDoor.start([(f"node{i + 1}", node.port) for i, node in enumerate(nodes)]))
    return Spread(nodes, front)


async def flush(redis: RedisServer) -> None:
    """Each deployment starts from an empty Redis: the previous test's log is not this one's."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis.url)
    try:
        await client.flushall()
    finally:
        await client.aclose()


def deployment_fixture(app: str, name: str, *, scope: str = "function", **options: Any) -> Any:
    """A pytest fixture giving ``app`` in each of ``MODES`` in turn (Redis only for the two-node ones)."""

    @pytest.fixture(params=MODES, scope=scope)  # type: ignore[call-overload]
    def fixture(request: pytest.FixtureRequest) -> Iterator[lt.ServerHandle | Spread]:
        redis = request.getfixturevalue("redis_server") if request.param != "one" else None
        handle = deployed(app, request.param, redis, name, **options)
        yield handle
        handle.stop()

    return fixture
