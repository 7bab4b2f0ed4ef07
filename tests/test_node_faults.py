"""A paused node and a frozen broker (issue 19), made the way they happen: SIGSTOP.

The front door's health check asks each node's own event loop (``/healthz``), so a paused node
leaves the rotation; a frozen Redis answers ``unavailable`` within seconds instead of holding
every request, and the write it takes late stays void; a broker that accepts connections but
never answers stops a node at start, in one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_haproxy, require_redis
from test_nodes import Raw
from waiting import wait_until
from websockets.sync.client import connect

import labtools as lt
from labtools.deploy import Deployment

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def paused(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.fixture
def minichat_pair() -> Iterator[Deployment]:
    require_redis()
    require_haproxy()
    deployment = lt.run(Deployment.start("minichat", nodes=2, name="test-node-faults"))
    yield deployment
    deployment.stop()


def served_by_socket(ws_url: str) -> str:
    with connect(ws_url, open_timeout=5) as ws:
        assert '"position"' in str(ws.recv(timeout=5))
        return ws.response.headers["X-Served-By"]


def test_a_paused_node_leaves_the_front_doors_rotation(minichat_pair: Deployment) -> None:
    assert minichat_pair.front_door is not None
    door = minichat_pair.front_door
    with paused(minichat_pair.nodes[1].pid):
        wait_until(lambda: door.stats()["node2"]["status"].startswith("DOWN"), within=10)
        started = time.monotonic()
        assert [served_by_socket(minichat_pair.ws_url) for _ in range(6)] == ["node1"] * 6
        assert time.monotonic() - started < 5  # none waited for the paused node
    wait_until(lambda: door.stats()["node2"]["status"].startswith("UP"), within=10)


def test_a_frozen_broker_answers_unavailable_in_seconds_and_its_late_write_stays_void(
        minichat_pair: Deployment) -> None:
    assert minichat_pair.redis is not None
    first, second = minichat_pair.node_urls

    async def scenario() -> None:
        listener, sender = await Raw.open(second), await Raw.open(first)
        assert "data" in await sender.request("msg-to-server", {"text": "before"})
        with paused(minichat_pair.redis.pid):
            started = time.monotonic()
            answer = await sender.request("msg-to-server", {"text": "while frozen"}, within=15)
            waited = time.monotonic() - started
            assert answer["error"]["code"] == "unavailable" and waited < 8
            await asyncio.sleep(3)  # past the entry's deadline: Redis takes it late, when it wakes
        for _ in range(100):
            with contextlib.suppress(TimeoutError):
                if "data" in await sender.request("msg-to-server", {"text": "after"}, within=3):
                    break
            await asyncio.sleep(0.2)
        while "after" not in listener.texts:
            await asyncio.sleep(0.02)
        assert "while frozen" not in listener.texts  # "nothing was changed" held
        assert listener.texts == ["before", "after"]
        await listener.close()
        await sender.close()

    lt.run(scenario())


def test_a_broker_that_never_answers_stops_a_node_at_start_in_one_line() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (the kernel does), answers nothing
    try:
        port = silent.getsockname()[1]
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "labtools", "serve", "minichat", "--port", "0", "--broker", f"redis://127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert done.returncode != 0 and done.stdout == "" and time.monotonic() - started < 30
        assert len(done.stderr.strip().splitlines()) == 1 and "broker" in done.stderr
    finally:
        silent.close()
