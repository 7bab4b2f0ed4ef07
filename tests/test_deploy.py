"""``labtools.deploy``: Debian's redis-server and HAProxy as children of the kernel, and a lesson
app deployed as several nodes behind one front door (lesson 11).

Without redis-server or haproxy these tests skip on a laptop and fail on CI (conftest). The
tests of whole deployments also wait for the apps' ``build(broker=, node=)``: until every app
takes them, they skip.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis
import redis.asyncio
from conftest import gone, require_haproxy, require_redis, skip_or_fail
from waiting import wait_until
from websockets.sync.client import connect

import labtools as lt
from labtools import runtime
from labtools.cluster import broker
from labtools.deploy import Deployment, FrontDoor, RedisServer, check_broker_url, missing_message
from labtools.serving import DeploymentHandle

ROOT = Path(__file__).resolve().parents[1]
MESSAGE = '{"event":"msg-to-server","data":{"text":"hi"}}'

async def set_then_get(url: str, key: str, value: str | None = None) -> bytes | None:
    client = redis.asyncio.Redis.from_url(url)
    try:
        if value is not None:
            await client.set(key, value)
        return await client.get(key)
    finally:
        await client.aclose()


def served_by(url: str, cookie: str | None = None) -> tuple[str, str | None]:
    """``GET url``: which node answered (``X-Served-By``) and the cookie HAProxy set, if any."""
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.headers["X-Served-By"], response.headers.get("Set-Cookie")


def socket_node(ws_url: str, origin: str | None = None) -> str:
    """Open a WebSocket through the front door, check it works; the node that took it."""
    with connect(ws_url, origin=origin, open_timeout=5) as ws:  # type: ignore[arg-type]
        assert '"position"' in str(ws.recv(timeout=5))  # where the stream stands (PROTOCOL.md, recovery)
        ws.send(MESSAGE)
        assert "msg-from-server" in str(ws.recv(timeout=5))
        return ws.response.headers["X-Served-By"]


# --- Redis -------------------------------------------------------------------------------------


def test_redis_starts_on_a_free_port_and_answers(redis_server: RedisServer) -> None:
    assert redis_server.alive and redis_server.address == f"redis://127.0.0.1:{redis_server.port}"
    assert redis_server.client().ping()
    info = redis_server.info()
    assert info["tcp_port"] == redis_server.port and info["aof_enabled"] == 1


def test_a_restarted_redis_keeps_its_port_and_its_data() -> None:
    require_redis()
    server = lt.run(RedisServer.start())
    try:
        port, pid = server.port, server.pid
        assert lt.run(set_then_get(server.url, "greeting", "hola")) == b"hola"
        lt.run(server.restart())
        assert server.port == port and server.pid != pid and gone(pid, within=1)
        assert lt.run(set_then_get(server.url, "greeting")) == b"hola"  # read back from the AOF
    finally:
        lt.run(server.aclose())
    assert not server.alive and not server.dir.exists()
    lt.run(server.aclose())  # idempotent


def test_a_killed_redis_is_gone_and_two_run_side_by_side() -> None:
    require_redis()
    first, second = lt.run(RedisServer.start()), lt.run(RedisServer.start())
    try:
        assert first.port != second.port and first.dir != second.dir
        lt.run(set_then_get(first.url, "who", "first"))
        assert lt.run(set_then_get(second.url, "who")) is None
        first.kill()
        assert not first.alive and gone(first.pid, within=1)
        with pytest.raises(redis.ConnectionError):
            redis.Redis(port=first.port, socket_connect_timeout=1).ping()
        assert second.client().ping()
    finally:
        lt.run(first.aclose())
        lt.run(second.aclose())


def test_broker_urls_are_checked() -> None:
    for good in ("redis://127.0.0.1:6379", "redis://localhost:6380/2", "redis://[::1]:6379/0",
                 "redis://:s3cret@127.0.0.1:6379/1", "rediss://ana:pw@broker.example:6380", "unix:///run/r/redis.sock",
                 "unix://:pw@/run/r/redis.sock?db=3"):
        assert check_broker_url(good) == good
    for bad in ("http://127.0.0.1:6379", "redis://127.0.0.1", "redis://h:99999", "127.0.0.1:6379", "redis://h:1/x",
                "unix://relative.sock", "redis://:pw@h"):
        with pytest.raises(ValueError, match=r"redis://\[\[USER\]:PASSWORD@\]HOST:PORT\[/DB\]") as refused:
            check_broker_url(bad)
        assert "pw" not in str(refused.value)  # a password is never printed back


def test_a_broker_password_travels_apart_from_the_url() -> None:
    url = "redis://:s3cr%40t@127.0.0.1:6379/2"
    assert broker.password_of(url) == "s3cr@t" and broker.database(url) == 2
    assert broker.without_password(url) == "redis://127.0.0.1:6379/2"
    assert broker.redacted(url) == "redis://:***@127.0.0.1:6379/2"
    assert broker.with_password("redis://127.0.0.1:6379", "a/b") == "redis://:a%2Fb@127.0.0.1:6379"
    assert broker.database("unix:///run/r.sock?db=4") == 4 and broker.database("redis://h:1") == 0


def test_the_deployments_redis_refuses_strangers_and_no_command_line_shows_its_password() -> None:
    """Any local user could otherwise forge messages on the bus or SHUTDOWN the broker; and
    every local user can read every process's command line."""
    require_redis()
    require_haproxy()
    deployment = lt.run(Deployment.start("minichat", nodes=2, name="deploy-test-protected"))
    try:
        assert deployment.redis is not None
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=deployment.redis.port, socket_timeout=2).ping()
        secret = deployment.redis.password.encode()
        for pid in (deployment.redis.pid, *(node.pid for node in deployment.nodes)):
            assert secret not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert oct(Path(deployment.redis.dir, "redis.conf").stat().st_mode & 0o777) == "0o600"
        assert secret.decode() not in repr(deployment)
        assert socket_node(deployment.ws_url)  # the nodes reach it: the password came in their environment
    finally:
        deployment.stop()


def test_a_node_without_the_broker_password_refuses_to_start_in_one_line(redis_server: RedisServer) -> None:
    environment = {k: v for k, v in os.environ.items() if k != broker.PASSWORD_ENV}
    command = [sys.executable, "-m", "labtools", "serve", "minichat", "--port", "0", "--broker"]
    refused = subprocess.run([*command, redis_server.address], capture_output=True, text=True, timeout=60,
                             env=environment, cwd=ROOT)
    assert refused.returncode != 0 and refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1 and "broker" in refused.stderr
    assert redis_server.password not in refused.stderr
    with_env = subprocess.Popen([*command, redis_server.address, "--exit-with-stdin"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env={**environment,
                                                                        broker.PASSWORD_ENV: redis_server.password},
                                cwd=ROOT)
    try:
        assert with_env.stdout is not None and with_env.stdout.readline().startswith("http://")
    finally:
        with_env.kill()
        with_env.wait()


# --- HAProxy before two in-kernel minichat servers (no broker) -------------------------------------


@pytest.fixture
def front_door() -> Iterator[FrontDoor]:
    """HAProxy before two minichat servers of this kernel, node1 and node2."""
    require_haproxy()
    nodes = [lt.serve("minichat", name=f"deploy-test-node{k}") for k in (1, 2)]
    door = lt.run(FrontDoor.start([(f"node{k}", node.port) for k, node in enumerate(nodes, 1)]))
    door.test_nodes = nodes  # type: ignore[attr-defined]
    yield door
    lt.run(door.aclose())
    for node in nodes:
        node.stop()


def test_websockets_alternate_between_the_nodes_and_the_front_doors_origin_passes(front_door: FrontDoor) -> None:
    origin = front_door.url.rstrip("/")  # a page served through the front door opens its socket
    nodes = [socket_node(front_door.ws_url, origin=origin) for _ in range(4)]
    assert sorted(nodes) == ["node1", "node1", "node2", "node2"] and nodes[0] != nodes[1]
    with pytest.raises(Exception, match="403"):  # another site's page is still refused
        socket_node(front_door.ws_url, origin="http://evil.example")
    stats = front_door.stats()
    assert stats["node1"]["websockets"] >= 2 and stats["node2"]["websockets"] >= 2


def test_http_with_the_cookie_sticks_to_one_node(front_door: FrontDoor) -> None:
    node, cookie = served_by(front_door.url)
    assert cookie is not None and cookie.startswith(f"LBNODE={node}")
    session = cookie.split(";")[0]
    assert {served_by(front_door.url, session)[0] for _ in range(6)} == {node}
    assert {served_by(front_door.url)[0] for _ in range(4)} == {"node1", "node2"}  # no cookie: round robin
    assert front_door.stats()[node]["http"] >= 7


def test_a_dead_node_is_taken_out_and_comes_back(front_door: FrontDoor) -> None:
    second = front_door.test_nodes[1]  # type: ignore[attr-defined]
    port = second.port
    second.stop()
    wait_until(lambda: front_door.stats()["node2"]["status"] == "DOWN", within=3, what="HAProxy to mark node2 DOWN")
    assert {socket_node(front_door.ws_url) for _ in range(4)} == {"node1"}
    assert {served_by(front_door.url)[0] for _ in range(4)} == {"node1"}
    lt.serve("minichat", name="deploy-test-node2", port=port)
    wait_until(lambda: front_door.stats()["node2"]["status"] == "UP", within=3, what="HAProxy to mark node2 UP")
    assert {socket_node(front_door.ws_url) for _ in range(4)} == {"node1", "node2"}


FAKE_KERNEL = """
import time
import labtools as lt
from labtools.deploy import FrontDoor, RedisServer
redis = lt.run(RedisServer.start())
door = lt.run(FrontDoor.start([("node1", redis.port)]))
print(redis.pid, door.pid, flush=True)
time.sleep(120)
"""


def test_redis_and_haproxy_die_with_a_sigkilled_kernel() -> None:
    """A fake kernel starts both and is killed with SIGKILL: no atexit, no stop_all."""
    require_redis()
    require_haproxy()
    kernel = subprocess.Popen(
        [sys.executable, "-c", FAKE_KERNEL],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert kernel.stdout is not None
        pids = [int(pid) for pid in kernel.stdout.readline().split()]
        assert len(pids) == 2 and all(psutil.Process(pid).is_running() for pid in pids)
        kernel.send_signal(signal.SIGKILL)
        kernel.wait(5)
        for pid in pids:
            assert gone(pid, within=5), f"process {pid} outlived its kernel"
    finally:
        if kernel.poll() is None:
            kernel.kill()
            kernel.wait()


# --- Whole deployments (the apps' broker= and node=) ---------------------------------------------


def processes_of(deployment: Deployment) -> list[int]:
    pids = [node.pid for node in deployment.nodes]
    if deployment.redis is not None:
        pids.append(deployment.redis.pid)
    if deployment.front_door is not None:
        pids.append(deployment.front_door.pid)
    return pids


def test_a_deployment_runs_nodes_behind_the_front_door_and_survives_a_killed_node() -> None:
    require_redis()
    require_haproxy()
    deployment = lt.run(Deployment.start("minichat", nodes=2, name="deploy-test"))
    try:
        assert runtime.services()["deploy-test"] is deployment
        assert len(deployment.node_urls) == 2 and deployment.url not in deployment.node_urls
        assert deployment.redis is not None and deployment.broker == deployment.redis.address
        assert {socket_node(deployment.ws_url) for _ in range(4)} == {"node1", "node2"}
        assert all(seconds > 0 for seconds in deployment.cpu_seconds())
        port, pid = deployment.nodes[1].port, deployment.nodes[1].pid
        deployment.kill(1)
        assert gone(pid, within=1) and math.isnan(deployment.cpu_seconds()[1])
        assert {socket_node(deployment.ws_url) for _ in range(4)} == {"node1"}  # redispatched, then out
        lt.run(deployment.restart_node(1))
        assert deployment.nodes[1].port == port and deployment.nodes[1].alive
        wait_until(lambda: deployment.front_door.stats()["node2"]["status"] == "UP",  # type: ignore[union-attr]
                   within=3, what="HAProxy to mark the restarted node2 UP")
        assert "2 of 2 nodes running" in repr(deployment)
    finally:
        deployment.stop()
    assert "deploy-test" not in runtime.services()
    assert all(gone(pid, within=5) for pid in processes_of(deployment))
    lt.run(deployment.aclose())  # idempotent


def test_a_message_sent_through_one_node_reaches_a_client_of_the_other(redis_server: RedisServer) -> None:
    require_haproxy()
    deployment = lt.run(Deployment.start("minichat", nodes=2, broker=redis_server.url, name="deploy-test-share"))
    try:
        assert deployment.redis is None  # the broker given is used, none is started
        with connect(deployment.nodes[0].ws_url) as one, connect(deployment.nodes[1].ws_url) as two:
            assert '"position"' in str(two.recv(timeout=5))
            one.send(MESSAGE)
            assert "msg-from-server" in str(two.recv(timeout=5))
    finally:
        deployment.stop()


def test_starting_again_under_the_same_name_replaces_it_with_no_leaked_process() -> None:
    require_redis()
    require_haproxy()
    first = lt.run(Deployment.start("minichat", nodes=2, name="deploy-test-again"))
    old = processes_of(first)
    second = lt.run(Deployment.start("minichat", nodes=2, name="deploy-test-again"))
    try:
        assert all(gone(pid, within=5) for pid in old)
        assert runtime.services()["deploy-test-again"] is second
        assert socket_node(second.ws_url) in ("node1", "node2")
    finally:
        lt.stop_all()
    assert all(gone(pid, within=5) for pid in processes_of(second))


def test_serve_with_nodes_hands_the_cell_the_front_door() -> None:
    require_redis()
    require_haproxy()
    handle = lt.serve("minichat", nodes=2, name="deploy-test-serve")
    try:
        assert isinstance(handle, DeploymentHandle)
        assert handle.url == handle.deployment.url and len(handle.node_urls) == 2
        assert handle.page_url() == f"http://127.0.0.1:{handle.port}/"
        assert socket_node(handle.ws_url) in ("node1", "node2")
        again = lt.serve("minichat", nodes=1, name="deploy-test-serve")  # re-running the cell
        assert not handle.deployment.nodes[0].alive and len(again.node_urls) == 1
    finally:
        lt.stop_all()


def test_serve_with_nodes_takes_an_app_by_name_or_by_file_only() -> None:
    with pytest.raises(ValueError, match=r"%%writefile my_app\.py"):  # a cell's function: no process imports it
        lt.serve(lambda: None, nodes=2)
    with pytest.raises(ValueError, match=r"PATH\.py:build or module:function"):
        lt.serve("no such app", nodes=2)
    with pytest.raises(ValueError, match="at least one node"):
        lt.serve("minichat", nodes=0)


def test_a_missing_program_skips_on_a_laptop_and_fails_on_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install redis-server"):
        skip_or_fail(missing_message())
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install redis-server"):
        skip_or_fail(missing_message())
