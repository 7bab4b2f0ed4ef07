"""HAProxy as the front door of several nodes: one address for the browser, the nodes behind it.

``await FrontDoor.start([("node1", port1), ("node2", port2)])`` writes a configuration to a
temporary directory and runs Debian's ``haproxy -db -f haproxy.cfg`` as a child of the kernel
(it dies with it, see ``children``). What the configuration does, and why:

* **WebSocket upgrades** (``Upgrade: websocket``) go round-robin to the nodes, with no
  stickiness: a socket is one TCP connection that stays on its node for its whole life anyway,
  and a client that reconnects may land anywhere, since the nodes share what matters through
  the broker. ``timeout tunnel 1h`` keeps an idle socket open (the nodes' pings keep it alive).
* **Plain HTTP** (pages, polling, long polling, SSE) goes round-robin too, but sticky: HAProxy
  inserts a cookie ``LBNODE`` naming the node, and the browser's next requests go to the same
  one. A long-polling client's requests form one session whose cursor and held request live on
  one node; sent to another, they would see that node's timing and its buffers.
* HAProxy keeps the ``Host`` header as the browser sent it, so a page served through the front
  door may open its socket: the node's Origin check accepts the origin whose host is the
  request's ``Host`` (``events.origins``). ``option forwardfor`` tells the node who the client
  is, and every answer carries ``X-Served-By: NODE``, so a lesson can see the balancing.
* Health checks every 500 ms (``fall 2 rise 1``): ``GET /healthz``, which the node's own event
  loop answers (a TCP check would pass for a SIGSTOPped node: the kernel still accepts its
  connections), not its broker's. A killed or paused node is out of the rotation within about
  a second (``timeout check 1s``), and back at the first check it answers; ``option
  redispatch`` sends a connection that found a dead node to another one meanwhile.

``stats()`` reads HAProxy's stats socket: per node, its sessions and its status.
"""

from __future__ import annotations

import asyncio
import csv
import io
import resource
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..events.forwarded import FRONT_DOOR_HEADER
from ..events.pages import HEALTH_PATH
from .children import Program, find_program, free_port, kill_program, log_tail, start_program, stop_program

HAPROXY = "/usr/sbin/haproxy"
CHECK = "check inter 500 fall 2 rise 1"
#: The most connections the front door accepts, when the file limit allows it.
MAXCONN = 20_000


def max_connections() -> int:
    """As many connections as the hard file limit lets HAProxy hold: each one takes two
    descriptors (browser side and node side), and HAProxy refuses to start if it cannot have them."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return MAXCONN
    return max(256, min(MAXCONN, (hard - 100) // 2))


def haproxy_available() -> bool:
    """Whether Debian's ``haproxy`` is installed."""
    return find_program("haproxy", HAPROXY) is not None


def missing_message() -> str:
    return "haproxy is not installed: apt-get install haproxy (CI installs it)"


def configuration(port: int, nodes: Sequence[tuple[str, int]], stats_socket: Path, host: str = "127.0.0.1",
                  secret: str | None = None) -> str:
    """The ``haproxy.cfg`` of a front door on ``port`` before ``nodes`` (name, port); with
    ``secret``, every request carries it in ``X-Labtools-Front-Door`` (any such header a client
    sent is replaced), so that the nodes trust this front door's ``X-Forwarded-For`` and no one
    else's (``events.forwarded``)."""
    proof = f"\n    http-request set-header {FRONT_DOOR_HEADER} {secret}" if secret else ""
    sockets = "\n".join(f"    server {name} {host}:{p} {CHECK}" for name, p in nodes)
    pages = "\n".join(f"    server {name} {host}:{p} {CHECK} cookie {name}" for name, p in nodes)
    return f"""\
global
    maxconn {max_connections()}
    stats socket {stats_socket} mode 600 level admin

defaults
    mode http
    option forwardfor
    option redispatch
    option httpchk GET {HEALTH_PATH}
    http-check expect status 200
    timeout check 1s
    retries 3
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout http-request 10s

frontend front
    bind {host}:{port}{proof}
    acl websocket hdr(Upgrade) -i websocket
    use_backend sockets if websocket
    default_backend pages

backend sockets
    balance roundrobin
    http-response set-header X-Served-By %s
{sockets}

backend pages
    balance roundrobin
    cookie LBNODE insert indirect nocache
    http-response set-header X-Served-By %s
{pages}
"""


class FrontDoor(Program):
    """One HAProxy process (see the module's docstring); not registered in the runtime."""

    def __init__(self, nodes: Sequence[tuple[str, int]], host: str, directory: Path, secret: str | None = None) -> None:
        self.nodes = list(nodes)
        self.host = host
        self.secret = secret
        self.port = 0
        self.dir = directory
        self.process: subprocess.Popen | None = None

    @classmethod
    async def start(
        cls, nodes: Sequence[tuple[str, int]], *, host: str = "127.0.0.1", port: int = 0, timeout: float = 10,
        secret: str | None = None,
    ) -> FrontDoor:
        """Start HAProxy on ``port`` (0: a free one) before ``nodes``, a list of (name, port) on
        ``host``; returns once it accepts connections. ``secret``: the proof it adds to every
        request (``configuration``), the same as the nodes' ``LABTOOLS_FRONT_DOOR_SECRET``."""
        if not haproxy_available():
            raise RuntimeError(missing_message())
        door = cls(nodes, host, Path(tempfile.mkdtemp(prefix="labtools-haproxy-")), secret)
        try:
            await door.run(port, timeout)
        except BaseException:
            await door.aclose()
            raise
        return door

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    @property
    def stats_socket(self) -> Path:
        return self.dir / "stats.sock"

    async def run(self, port: int, timeout: float) -> None:
        """Write the configuration and start HAProxy; a lost race for a free port tries another."""
        log = self.dir / "haproxy.log"
        for _attempt in range(5):
            self.port = port or free_port(self.host)
            config = self.dir / "haproxy.cfg"
            config.touch(mode=0o600)  # it may hold the front door's secret: its owner's only
            config.write_text(configuration(self.port, self.nodes, self.stats_socket, self.host, self.secret))
            program = find_program("haproxy", HAPROXY) or HAPROXY
            self.process = start_program([program, "-db", "-f", str(config)], log, self.dir)
            if await self.listening(timeout):
                return
            await stop_program(self.process)
            tail = log_tail(log)
            if port or "cannot bind" not in tail:
                raise RuntimeError(f"haproxy did not start on port {self.port}: {tail}")
        raise RuntimeError(f"haproxy found no free port: {log_tail(log)}")

    async def listening(self, timeout: float) -> bool:
        """Whether HAProxy accepts connections and its stats socket is there (False once it exits)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive:
            if self.stats_socket.exists():
                try:
                    _reader, writer = await asyncio.open_connection(self.host, self.port)
                except OSError:
                    pass
                else:
                    writer.close()
                    return True
            await asyncio.sleep(0.05)
        return False

    def command(self, line: str) -> str:
        """One command on the stats socket (``show stat``, ``show info``), its whole answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(5)
            client.connect(str(self.stats_socket))
            client.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := client.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per node: ``websockets`` and ``http`` sessions so far, ``sessions`` (both), the
        ``current`` ones, and its ``status`` as the health checks see it (``UP``, ``DOWN``...)."""
        rows = csv.DictReader(io.StringIO(self.command("show stat").removeprefix("# ")))
        nodes: dict[str, dict[str, Any]] = {
            name: {"sessions": 0, "websockets": 0, "http": 0, "current": 0, "status": "?"} for name, _ in self.nodes
        }
        for row in rows:
            node = nodes.get(row["svname"])
            if node is None or row["pxname"] not in ("sockets", "pages"):
                continue
            kind = "websockets" if row["pxname"] == "sockets" else "http"
            node[kind] = int(row["stot"] or 0)
            node["sessions"] += int(row["stot"] or 0)
            node["current"] += int(row["scur"] or 0)
            if kind == "websockets":
                node["status"] = row["status"]
        return nodes

    def kill(self) -> None:
        """SIGKILL (a crashed front door)."""
        if self.process is not None:
            kill_program(self.process)

    async def aclose(self) -> None:
        """Stop HAProxy and remove its directory; idempotent."""
        if self.process is not None:
            await stop_program(self.process)
        await asyncio.to_thread(shutil.rmtree, self.dir, True)

    def __repr__(self) -> str:
        state = "running" if self.alive else "stopped"
        names = ", ".join(name for name, _ in self.nodes)
        return f"<haproxy {self.process.pid if self.process else '-'} at {self.url} before {names}, {state}>"
