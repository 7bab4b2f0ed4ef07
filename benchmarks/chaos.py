"""Chaos run: the course's multi-node deployments under faults, checked for lost, duplicated
and silently missing messages.

    .venv/bin/python benchmarks/chaos.py                       # 10 minutes, 200 users, seed 1
    .venv/bin/python benchmarks/chaos.py --quick               # a CI smoke pass (< 60 s, 30 users)
    .venv/bin/python benchmarks/chaos.py --seed 7 --minutes 3 --users 120 --json chaos.json

What it runs: three apps, ``chat``, ``minichat`` and ``bands``, each as 3 nodes behind its own
front door (HAProxy), all sharing one redis-server (append-only file on, as
``labtools.deploy.RedisServer`` starts it; its password reaches the nodes in their environment).
Every node reaches Redis through a ``FaultyProxy`` of its own (as ``experiments.nodes.alagging`` builds
a lagging node), so that one node's link to Redis can be cut off alone. Simulated users, split
across the apps:

* chat users sign up, then send personal messages to a partner, each with a ``clientId``,
  retrying (same ``clientId``) until acknowledged; they reconnect and ``resume`` from the last
  message id they applied when their socket drops;
* minichat clients (a quarter of them also send) record every ``msg-from-server`` with its
  offset, keep the last offset and epoch they applied, ignore a push at or below it, and
  reconnect through the front door and ``resume`` from it after a close (a 1013 included);
  a sender tags each attempt (``sender|seq|attempt``), so every copy in the stream names the
  attempt that put it there;
* bands voters vote for a random band.

Meanwhile a schedule drawn from ``--seed`` injects faults one at a time, with recovery time
between them: a node killed with SIGKILL and restarted (``Deployment.kill``/``restart_node``),
a node paused with SIGSTOP for 5-20 s, Redis restarted with its data (``RedisServer.restart``)
and without it (SIGKILL, its append-only files deleted, started again on the same port), a
node's link to Redis blackholed for a few seconds, and a malformed entry (broken JSON) appended
to minichat's or bands' stream. ``--quick`` runs one node kill, one pause, one malformed entry
and one Redis restart.

What it checks, after the senders stop and a quiet drain:

* chat: every acknowledged message is stored exactly once (the chat's SQLite file, by
  ``(sender, clientId)``) under the id its acknowledgement gave, and reached its recipient
  exactly once as the app sees it (after the client's offset filter); copies the filter
  dropped are counted as duplicates on the wire;
* minichat: every client either received every acknowledged message, once and in order, or was
  told it may have missed it: a ``too-old`` answer, a 1013 close followed by a successful
  resume, or pushes of a new epoch (Redis lost its history), each covering the offsets it
  concerns. A missing message nobody announced is a silent gap. A copy of an attempt that was
  refused with ``unavailable`` ("nothing was changed") is a broken promise; copies of attempts
  whose answer never came are the at-least-once duplicates a sender without an id must expect;
* bands: every node, asked directly, welcomes with the same list and votes, and the votes
  counted lie between the votes acknowledged and those plus the ones whose answer was lost;
* no process died that the schedule did not kill (every node, Redis, HAProxy);
* RSS and open file descriptors of every node and of Redis at the start and at the end, and
  p50/p99 of the acknowledgement latency per fault: for the survivors (acknowledged at the
  first attempt) and for everyone (retries included).

Why: the course claims a change is acknowledged only once it is in the shared log, a refusal
changes nothing, a client that reconnects gets what it missed or is told it cannot, and the
nodes agree. Each fault attacks one of those claims; the checks are the claims. The report is
one Markdown document on stdout; the exit status is 1 when anything was lost, duplicated,
silently missing, or a process died on its own (and 0 with a "skipped" line when redis-server
or haproxy is missing, unless CI is set).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import random
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install needed

import psutil
import redis.asyncio as aioredis
from websockets.exceptions import ConnectionClosed, WebSocketException

from labtools import processes, runtime
from labtools.deploy import Deployment, FrontDoor, RedisServer, haproxy_available, redis_available
from labtools.deploy.deployment import node_arguments
from labtools.deploy.haproxy import missing_message as haproxy_missing
from labtools.deploy.redis import missing_message as redis_missing
from labtools.events import AckError, EventClient
from labtools.experiments.nodes import wait_until
from labtools.sim.chat_users import ChatUser
from labtools.sim.faults import FaultyProxy

APPS = ("chat", "minichat", "bands")
NODES = 3
KINDS = ("kill", "pause", "redis-restart", "redis-wipe", "blackhole", "malformed")
#: Seconds a fault takes beyond its own length (restarts, health checks), for the schedule.
OVERHEAD = {"kill": 4.0, "pause": 2.0, "redis-restart": 3.0, "redis-wipe": 3.0, "blackhole": 1.0, "malformed": 0.5}
OPEN = {"open_timeout": 3, "close_timeout": 1}
SEND_TIMEOUT = 6.0  # > the 2 s command timeout + 1 s grace after which a node answers "unavailable"
MAX_ATTEMPTS = 40
#: Attempt outcomes that leave it unknown whether the change was made.
AMBIGUOUS = ("timeout", "closed", "maybe", "cancelled")
Offset = tuple[int, int]
START: Offset = (0, 0)

_T0 = time.monotonic()


def now() -> float:
    """Seconds since this script started: every time in the report is on this clock."""
    return time.monotonic() - _T0


def log(message: str) -> None:
    print(f"[{now():6.1f} s] {message}", file=sys.stderr, flush=True)


def parse_offset(offset: str) -> Offset:
    """``"MS-SEQ"`` (a stream id) or ``"N"`` (a chat message id) as a pair of integers."""
    ms, _, seq = offset.partition("-")
    return int(ms), int(seq or 0)


def percentiles(samples: list[float]) -> tuple[float | None, float | None]:
    if not samples:
        return None, None
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


@dataclass
class Plan:
    """Sizes and times of one run."""

    quick: bool
    seed: int
    seconds: float  # the fault schedule's length, from the first message to the drain
    chat: int  # chat users (pairs)
    minichat: int  # minichat clients...
    senders: int  # ...of which these send
    bands: int  # voters
    baseline: float  # seconds of traffic before the first fault
    gap: tuple[float, float]  # recovery time between two faults
    interval: dict[str, tuple[float, float]]  # seconds between two sends of one user, per app
    drain_send: float  # seconds the senders get to finish the message under way
    drain_quiet: float  # the drain ends once nothing arrived for this long...
    drain_most: float  # ...or after this long
    budget: float | None  # quick: no fault starts after this many seconds of wall time

    @classmethod
    def make(cls, quick: bool, seed: int, minutes: float, users: int | None) -> Plan:
        users = users or (30 if quick else 200)
        if users < 8:
            raise SystemExit("chaos: --users must be at least 8 (chat pairs, senders, listeners, voters)")
        chat = max(2, 2 * round(users / 6))
        minichat = max(3, round(users / 3))
        bands = max(1, users - chat - minichat)
        senders = max(1, math.ceil(minichat / 4))
        if quick:
            return cls(True, seed, 30.0, chat, minichat, senders, bands, 2.0, (2.5, 2.5),
                       {"chat": (0.5, 1.5), "minichat": (0.3, 0.9), "bands": (0.5, 1.5)}, 8.0, 1.0, 5.0, 40.0)
        return cls(False, seed, minutes * 60, chat, minichat, senders, bands, 15.0, (8.0, 15.0),
                   {"chat": (2.0, 4.0), "minichat": (1.0, 3.0), "bands": (3.0, 6.0)}, 30.0, 3.0, 30.0, None)


# ----- the faults -------------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    app: str | None = None
    node: int | None = None
    seconds: float = 0.0
    started: float | None = None
    ended: float | None = None
    recovered: float | None = None
    note: str = ""
    error: str | None = None
    skipped: bool = False

    @property
    def target(self) -> str:
        if self.kind.startswith("redis"):
            return "redis-server"
        if self.kind == "malformed":
            return f"labtools:{self.app}:log"
        return f"{self.app} node{(self.node or 0) + 1}"

    @property
    def label(self) -> str:
        length = f" {self.seconds:g} s" if self.kind in ("kill", "pause", "blackhole") else ""
        return f"{self.kind}{length} {self.target}"


def draw_schedule(rng: random.Random, plan: Plan) -> list[Fault]:
    """The faults, in order: quick, the four of the smoke pass; else every kind once (in a drawn
    order), then drawn at random while the schedule has time for them."""

    def make(kind: str) -> Fault:
        fault = Fault(kind)
        if kind in ("kill", "pause", "blackhole"):
            fault.app, fault.node = rng.choice(APPS), rng.randrange(NODES)
        elif kind == "malformed":
            fault.app = rng.choice(("minichat", "bands"))
        if kind == "kill":
            fault.seconds = 1.5 if plan.quick else round(rng.uniform(1, 5), 1)
        elif kind == "pause":
            fault.seconds = 5.0 if plan.quick else round(rng.uniform(5, 20), 1)
        elif kind == "blackhole":
            fault.seconds = round(rng.uniform(2, 6), 1)
        return fault

    if plan.quick:
        kinds = ["kill", "pause", "malformed", "redis-restart"]
        rng.shuffle(kinds)
        return [make(kind) for kind in kinds]
    faults: list[Fault] = []
    first = list(KINDS)
    rng.shuffle(first)
    spent, budget = 0.0, plan.seconds - plan.baseline
    while True:
        fault = make(first.pop(0) if first else rng.choice(KINDS))
        cost = fault.seconds + OVERHEAD[fault.kind] + sum(plan.gap) / 2
        if spent + cost > budget:
            return faults
        faults.append(fault)
        spent += cost


# ----- the deployments ----------------------------------------------------------------------------


def measure(pid: int) -> dict[str, Any]:
    try:
        process = psutil.Process(pid)
        return {"pid": pid, "rss_mib": round(process.memory_info().rss / 2**20, 1), "fds": process.num_fds()}
    except psutil.Error as error:
        return {"pid": pid, "rss_mib": None, "fds": None, "error": type(error).__name__}


class Cluster:
    """One Redis, and per app a ``Deployment`` of 3 nodes, each behind its own ``FaultyProxy``."""

    def __init__(self) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix="labtools-chaos-")
        self.db = Path(self.folder.name) / "chat.db"
        self.redis: RedisServer | None = None
        self.deployments: dict[str, Deployment] = {}
        self.proxies: dict[str, list[FaultyProxy]] = {}
        self.expected_down: set[Any] = set()  # ("node", app, i) or "redis": down on purpose
        self.deaths: list[dict[str, Any]] = []
        self.reported: set[int] = set()  # pids whose death is recorded
        self.errors: list[str] = []
        self.killed_stderr: list[str] = []  # the stderr of nodes the schedule killed, for the report

    async def start(self) -> None:
        self.redis = await RedisServer.start()
        await asyncio.gather(*(self.start_app(app) for app in APPS))

    async def start_app(self, app: str) -> None:
        """The app as ``alagging`` builds a deployment: each node's ``--broker`` is its proxy's."""
        assert self.redis is not None
        deployment = Deployment(f"chaos:{app}", app, "127.0.0.1", self.redis.url, None)  # the Redis is shared
        self.deployments[app] = deployment
        proxies = self.proxies[app] = []
        for _ in range(NODES):
            proxies.append(await FaultyProxy(self.redis.address).start())
        options = {"db": str(self.db)} if app == "chat" else {}
        deployment.node_arguments = [node_arguments(f"redis://{p.host}:{p.port}", f"node{k + 1}", options)
                                     for k, p in enumerate(proxies)]
        deployment.nodes = list(await asyncio.gather(*(deployment.start_node(k, 0) for k in range(NODES))))
        deployment.front_door = await FrontDoor.start(
            [(f"node{k + 1}", node.port) for k, node in enumerate(deployment.nodes)],
            secret=deployment.front_door_secret)

    def url(self, app: str) -> str:
        return self.deployments[app].url

    # ----- watching ---------------------------------------------------------------------------

    def check_processes(self) -> None:
        """Record every process found dead that the schedule did not take down."""
        for app, deployment in self.deployments.items():
            for k, node in enumerate(deployment.nodes):
                if not node.alive and ("node", app, k) not in self.expected_down and node.pid not in self.reported:
                    self.reported.add(node.pid)
                    tail = ""
                    with contextlib.suppress(Exception):
                        tail = node.stderr_text()[-1500:]
                    self.deaths.append({"process": f"{app} node{k + 1}", "pid": node.pid, "at": round(now(), 1),
                                        "exit": node.process.returncode, "stderr": tail})
            door = deployment.front_door
            if door is not None and not door.alive and door.pid not in self.reported:
                self.reported.add(door.pid)
                self.deaths.append({"process": f"haproxy {app}", "pid": door.pid, "at": round(now(), 1),
                                    "exit": door.process.returncode if door.process else None, "stderr": ""})
        redis = self.redis
        if (redis is not None and not redis.alive and "redis" not in self.expected_down
                and redis.pid not in self.reported):
            self.reported.add(redis.pid)
            self.deaths.append({"process": "redis-server", "pid": redis.pid, "at": round(now(), 1),
                                "exit": redis.process.returncode if redis.process else None, "stderr": ""})

    async def watch(self) -> None:
        while True:
            self.check_processes()
            await asyncio.sleep(0.2)

    async def recover(self, timeout: float = 20.0) -> bool:
        """Restart whatever is down (a death was recorded first) and wait until every front door
        sees all its nodes UP and Redis answers; whether it did in ``timeout``."""
        self.check_processes()
        assert self.redis is not None
        if not self.redis.alive:
            self.expected_down.add("redis")
            try:
                await self.redis.restart()
            except Exception as error:
                self.errors.append(f"{now():.1f} s: restarting redis-server failed: {error!r}")
            finally:
                self.expected_down.discard("redis")
        for app, deployment in self.deployments.items():
            for k, node in enumerate(deployment.nodes):
                if node.alive:
                    continue
                self.expected_down.add(("node", app, k))
                try:
                    await deployment.restart_node(k)
                except Exception as error:
                    self.errors.append(f"{now():.1f} s: restarting {app} node{k + 1} failed: {error!r}")
                finally:
                    self.expected_down.discard(("node", app, k))

        def all_up() -> bool:
            for deployment in self.deployments.values():
                door = deployment.front_door
                if door is None or not door.alive:
                    continue
                try:
                    if not all(row["status"] == "UP" for row in door.stats().values()):
                        return False
                except OSError:
                    return False
            return True

        return await wait_until(all_up, timeout, step=0.1) and await self.redis.answers(5)

    def tracebacks(self) -> list[str]:
        """The stderr of every node now running, and of the nodes the schedule killed, that shows a
        traceback (not a check: a node may log an error it survived; a reader should know)."""
        found = [text for text in self.killed_stderr if "Traceback" in text]
        for app, deployment in self.deployments.items():
            for k, node in enumerate(deployment.nodes):
                with contextlib.suppress(Exception):
                    text = node.stderr_text()
                    if "Traceback" in text:
                        found.append(f"{app} node{k + 1} (pid {node.pid}): {text[-800:]}")
        return found

    def resources(self) -> dict[str, dict[str, Any]]:
        rows = {}
        for app, deployment in self.deployments.items():
            for k, node in enumerate(deployment.nodes):
                rows[f"{app} node{k + 1}"] = measure(node.pid)
        if self.redis is not None and self.redis.process is not None:
            rows["redis-server"] = measure(self.redis.pid)
        rows["this driver"] = measure(os.getpid())
        return rows

    # ----- the faults -------------------------------------------------------------------------

    async def inject(self, fault: Fault) -> None:
        redis = self.redis
        assert redis is not None
        fault.started = now()
        try:
            if fault.kind == "kill":
                assert fault.app is not None and fault.node is not None
                deployment, k = self.deployments[fault.app], fault.node
                key = ("node", fault.app, k)
                self.expected_down.add(key)
                old = deployment.nodes[k]
                fault.note = f"pid {old.pid}"
                deployment.kill(k)
                with contextlib.suppress(Exception):
                    self.killed_stderr.append(f"{fault.target} (pid {old.pid}): {old.stderr_text()[-800:]}")
                await asyncio.sleep(fault.seconds)
                new = await deployment.restart_node(k)  # on failure it stays down on purpose: recover() retries
                fault.note += f", back as pid {new.pid}"
                self.expected_down.discard(key)
            elif fault.kind == "pause":
                assert fault.app is not None and fault.node is not None
                pid = self.deployments[fault.app].nodes[fault.node].pid
                fault.note = f"pid {pid}"
                os.kill(pid, signal.SIGSTOP)
                try:
                    await asyncio.sleep(fault.seconds)
                finally:
                    os.kill(pid, signal.SIGCONT)
            elif fault.kind in ("redis-restart", "redis-wipe"):
                self.expected_down.add("redis")
                try:
                    old_pid = redis.pid
                    if fault.kind == "redis-wipe":
                        redis.kill()
                        fault.note = f"{wipe(redis.dir)} file(s) deleted; "
                    await redis.restart()  # the same port, directory and password
                    fault.note += f"pid {old_pid} -> {redis.pid}"
                finally:
                    self.expected_down.discard("redis")
            elif fault.kind == "blackhole":
                assert fault.app is not None and fault.node is not None
                proxy = self.proxies[fault.app][fault.node]
                proxy.blackhole()
                try:
                    await asyncio.sleep(fault.seconds)
                finally:
                    proxy.passthrough()
                fault.note = f"{len(proxy.links)} link(s) through its proxy so far"
            elif fault.kind == "malformed":
                client = aioredis.Redis.from_url(redis.url, socket_timeout=5)
                try:
                    stream = f"labtools:{fault.app}:log"
                    entry = await client.xadd(stream, {"n": "0", "e": '{"cmd": {"text": "half a'})
                    fault.note = f"XADD {entry.decode() if isinstance(entry, bytes) else entry}"
                finally:
                    await client.aclose()
        except Exception as error:
            fault.error = f"{type(error).__name__}: {error}"
            self.errors.append(f"{now():.1f} s: {fault.label}: {fault.error}")
        fault.ended = now()

    async def aclose(self) -> None:
        for deployment in self.deployments.values():
            with contextlib.suppress(Exception):
                await deployment.aclose()
        for proxies in self.proxies.values():
            for proxy in proxies:
                with contextlib.suppress(Exception):
                    await proxy.aclose()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        self.folder.cleanup()


def wipe(directory: Path) -> int:
    """Delete Redis's persistence (its append-only files, and an RDB file if any): its data is gone."""
    removed = 0
    for path in [*(directory / "appendonlydir").glob("*"), directory / "appendonly.aof", directory / "dump.rdb"]:
        if path.is_file():
            path.unlink()
            removed += 1
    return removed


# ----- simulated users -------------------------------------------------------------------------------


@dataclass
class Ack:
    """One acknowledged request: when its first attempt started, when it was acknowledged, and
    whether that first attempt on its socket was enough (a survivor's)."""

    app: str
    first: float
    acked: float
    clean: bool


@dataclass
class Notice:
    """The server told a client it may have missed pushes: the offsets concerned, per epoch
    (``(epoch, after, up to)``; ``None``: to the end of that epoch)."""

    kind: str  # "too-old", "1013+resume", "epoch-change"
    at: float
    ranges: list[tuple[str, Offset, Offset | None]]

    def covers(self, epoch: str, offset: Offset) -> bool:
        return any(e == epoch and lo < offset and (hi is None or offset <= hi) for e, lo, hi in self.ranges)


@dataclass
class Ledger:
    """What every user did and was told, for the checks."""

    acks: list[Ack] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)  # minichat attempt text -> its outcome
    mini_acked: dict[str, tuple[str, int, float]] = field(default_factory=dict)  # text -> sender, seq, acked at
    mini_gave_up: list[str] = field(default_factory=list)
    chat_acked: dict[str, dict[str, Any]] = field(default_factory=dict)  # clientId -> who, to, id
    chat_gave_up: list[str] = field(default_factory=list)
    chat_errors: Counter = field(default_factory=Counter)
    votes: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # outcome -> band -> n
    refusals: Counter = field(default_factory=Counter)  # app:code -> n


class Supervised:
    """One user's socket, kept open: when it closes (or is given up), reconnect through the
    front door after 0-50 ms of jitter, then with a full-jitter backoff while attempts fail."""

    app = ""

    def __init__(self, name: str, url: str, rng: random.Random, ledger: Ledger) -> None:
        self.name = name
        self.url = url
        self.rng = rng
        self.ledger = ledger
        self.client: EventClient | None = None
        self.connected = asyncio.Event()
        self.closes: Counter = Counter()  # close code -> times
        self.connections = 0
        self.failed_connects = 0
        self.last_error = ""
        self.stopping = False
        self.task: asyncio.Task | None = None

    async def open(self) -> EventClient:
        raise NotImplementedError

    async def send_loop(self, stop: asyncio.Event, interval: tuple[float, float]) -> None:
        raise NotImplementedError

    def closed(self, code: int | None) -> None:
        self.closes[None if code is None else int(code)] += 1

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run(), name=f"supervise {self.name}")

    async def run(self) -> None:
        client, attempt = self.client, 0
        while not self.stopping:
            if client is None:
                try:
                    client = await asyncio.wait_for(self.open(), 15)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    self.failed_connects += 1
                    self.last_error = f"{type(error).__name__}: {error}"
                    await self.drop()
                    await asyncio.sleep(self.rng.uniform(0, min(2.0, 0.1 * 2**attempt)))
                    attempt += 1
                    continue
            attempt = 0
            self.connections += 1
            self.connected.set()
            await client.connection.wait_closed()
            self.connected.clear()
            self.closed(client.connection.close_code)
            await self.drop()
            client = None
            await asyncio.sleep(self.rng.uniform(0, 0.05))

    async def drop(self) -> None:
        """Close the current socket now (abort: a paused node would not answer a closing handshake)."""
        client, self.client = self.client, None
        if client is None:
            return
        abort(client)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.aclose(), 2)

    async def ready(self, timeout: float = 10.0) -> EventClient | None:
        """The current socket once connected (None if not within ``timeout``)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), timeout)
        return self.client if self.connected.is_set() else None

    async def aclose(self) -> None:
        self.stopping = True
        await runtime.cancel(self.task)
        await self.drop()


def abort(client: EventClient) -> None:
    """Cut the socket at once; the supervisor reconnects."""
    with contextlib.suppress(Exception):
        client.connection.transport.abort()


async def request_outcome(client: EventClient, event: str, data: Any, ledger: Ledger, app: str) -> str:
    """One acknowledged request's outcome: ``acked``, ``maybe`` (the broker may have taken it),
    ``refused:CODE``, ``timeout`` (the socket is then cut) or ``closed``."""
    try:
        await client.request(event, data, timeout=SEND_TIMEOUT)
        return "acked"
    except AckError as error:
        ledger.refusals[f"{app}:{error.code}"] += 1
        # "the broker took the change but this node lost sight of it: it may have been made"
        return "maybe" if "may have been made" in error.message else f"refused:{error.code}"
    except TimeoutError:
        abort(client)
        return "timeout"
    except (ConnectionError, ConnectionClosed, WebSocketException, OSError):
        return "closed"


async def sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class MiniClient(Supervised):
    """A minichat client: records every ``msg-from-server`` it applies with its offset (the app's
    view: a push at or below the last applied offset of its epoch is ignored), resumes after a
    reconnection, and keeps every notice of a possible gap."""

    app = "minichat"

    def __init__(self, name: str, url: str, rng: random.Random, ledger: Ledger) -> None:
        super().__init__(name, url, rng, ledger)
        self.position: tuple[str, Offset, str] | None = None  # epoch, offset, offset as sent
        self.received: list[tuple[str, Offset, str]] = []  # epoch, offset, text: what the app applied
        self.seen: set[tuple[str, Offset]] = set()
        self.wire: Counter = Counter()  # (epoch, offset) -> frames that crossed the socket
        self.dropped_duplicates = 0
        self.dropped_out_of_order = 0
        self.notices: list[Notice] = []
        self.pending_1013 = False
        self.resumes = 0
        self.recovered = 0
        self.welcome: tuple[str, Offset, str] | None = None
        self.holding: list[tuple[str, Offset, str, str]] | None = None

    def closed(self, code: int | None) -> None:
        super().closed(code)
        if code == 1013:
            self.pending_1013 = True

    def _frame(self, frame: Any) -> bool:
        if isinstance(frame, dict) and frame.get("event") == "msg-from-server" and isinstance(frame.get("offset"), str):
            self.wire[(frame.get("epoch"), parse_offset(frame["offset"]))] += 1
        return True

    def _welcomed(self, data: Any) -> None:
        if isinstance(data, dict) and isinstance(data.get("offset"), str) and isinstance(data.get("epoch"), str):
            self.welcome = (data["epoch"], parse_offset(data["offset"]), data["offset"])
            if self.position is None:  # the first connection: every push after this one comes live
                self.position = self.welcome

    def _got(self, client: EventClient, data: Any) -> None:
        position = client.position  # set to this push's, just before its listeners run
        if position is None or not isinstance(data, dict):
            return
        offset_text, epoch = position
        push = (epoch, parse_offset(offset_text), offset_text, str(data.get("text")))
        if self.holding is not None:  # until the resume is answered: applied in order after it
            self.holding.append(push)
        else:
            self._apply(push)

    def _apply(self, push: tuple[str, Offset, str, str]) -> None:
        """What the app does with a push: apply it unless its offset is not above the last applied."""
        epoch, offset, offset_text, text = push
        current = self.position
        if current is not None and current[0] == epoch and offset <= current[1]:
            if (epoch, offset) in self.seen:
                self.dropped_duplicates += 1
            else:
                self.dropped_out_of_order += 1
            return
        if current is not None and current[0] != epoch:
            self.notices.append(Notice("epoch-change", now(), [(current[0], current[1], None), (epoch, START, offset)]))
        self.position = (epoch, offset, offset_text)
        self.seen.add((epoch, offset))
        self.received.append((epoch, offset, text))

    async def open(self) -> EventClient:
        """Connect; after the first time, resume from the last offset applied. Pushes that arrive
        before the answer are held and applied after the replay, in offset order; if the resume
        fails they are dropped (the next connection resumes from the same offset)."""
        since = self.position
        self.holding = None if since is None else []
        client = EventClient(self.name, intercept=self._frame, record=False)
        self.client = client
        self.welcome = None
        client.on("msg-from-server", lambda data: self._got(client, data))
        client.on("position", self._welcomed)
        try:
            await self._open(client, since)
        except BaseException:
            self.holding = None
            raise
        held, self.holding = self.holding or [], None
        if len({push[0] for push in held}) == 1:
            held.sort(key=lambda push: push[1])
        for push in held:
            self._apply(push)
        return client

    async def _open(self, client: EventClient, since: tuple[str, Offset, str] | None) -> None:
        await client.open(self.url, **OPEN)
        if not await wait_until(lambda: self.welcome is not None, 3, step=0.01):
            raise ConnectionError("no position frame on connect")
        assert self.welcome is not None
        if since is None:  # the first connection: from where the stream stands (``_welcomed``)
            return
        try:
            answer = await client.resume(since[2], since[0], timeout=5)
        except AckError as error:
            if error.code != "too-old":
                raise
            welcome = self.welcome
            if welcome[0] == since[0]:
                ranges = [(since[0], since[1], welcome[1])]
            else:
                ranges = [(since[0], since[1], None), (welcome[0], START, welcome[1])]
            self.notices.append(Notice("too-old", now(), ranges))
            self.pending_1013 = False
            current = self.position
            if current is None or current[0] != welcome[0] or current[1] < welcome[1]:
                self.position = welcome  # from the state it was sent on connect
            return
        self.resumes += 1
        self.recovered += answer.get("missed", 0) if isinstance(answer, dict) else 0
        if self.pending_1013:
            ranges = [(since[0], since[1], parse_offset(answer["offset"]) if answer.get("epoch") == since[0] else None)]
            self.notices.append(Notice("1013+resume", now(), ranges))
            self.pending_1013 = False

    async def send_loop(self, stop: asyncio.Event, interval: tuple[float, float]) -> None:
        seq = 0
        while not stop.is_set():
            await sleep_unless(stop, self.rng.uniform(*interval))
            if stop.is_set():
                return
            seq += 1
            await self.send_one(seq)

    async def send_one(self, seq: int) -> None:
        """Send message ``seq`` until a node acknowledges it; every attempt's text names it."""
        first = now()
        for attempt in range(1, MAX_ATTEMPTS + 1):
            client = await self.ready()
            if client is None:
                continue
            text = f"{self.name}|{seq}|{attempt}"
            outcome = "cancelled"
            self.ledger.outcomes[text] = outcome
            try:
                outcome = await request_outcome(client, "msg-to-server", {"text": text}, self.ledger, "minichat")
            finally:
                self.ledger.outcomes[text] = outcome
            if outcome == "acked":
                t = now()
                self.ledger.mini_acked[text] = (self.name, seq, t)
                self.ledger.acks.append(Ack("minichat", first, t, attempt == 1))
                return
            await asyncio.sleep(self.rng.uniform(0.1, 0.4))
        self.ledger.mini_gave_up.append(f"{self.name}|{seq}")


class Voter(Supervised):
    """A bands voter: votes for a random band, one request at a time; no retry (each vote counts once)."""

    app = "bands"

    def __init__(self, name: str, url: str, rng: random.Random, ledger: Ledger) -> None:
        super().__init__(name, url, rng, ledger)
        self.bands: list[str] = []

    def _list(self, data: Any) -> None:
        if isinstance(data, list) and data:
            self.bands = [band["id"] for band in data if isinstance(band, dict) and "id" in band]

    async def open(self) -> EventClient:
        client = EventClient(self.name, record=False)
        self.client = client
        client.on("band-list", self._list)
        await client.open(self.url, **OPEN)
        if not await wait_until(lambda: bool(self.bands), 3, step=0.01):
            raise ConnectionError("no band-list on connect")
        return client

    async def send_loop(self, stop: asyncio.Event, interval: tuple[float, float]) -> None:
        while not stop.is_set():
            await sleep_unless(stop, self.rng.uniform(*interval))
            if stop.is_set():
                return
            client = await self.ready()
            if client is None or not self.bands:
                continue
            band = self.rng.choice(self.bands)
            first = now()
            outcome = "cancelled"
            self.ledger.votes[outcome][band] += 1
            try:
                outcome = await request_outcome(client, "vote-band", band, self.ledger, "bands")
            finally:
                self.ledger.votes["cancelled"][band] -= 1
                self.ledger.votes[outcome][band] += 1
            if outcome == "acked":
                self.ledger.acks.append(Ack("bands", first, now(), True))


class SocketUser(ChatUser):
    """``ChatUser`` whose sockets time out fast, are counted frame by frame, and report each
    ``personal-message`` to the chaos client (with the socket it came on, for its offset)."""

    def __init__(self, name: str, seed: int, frame: Callable[[Any], None],
                 message: Callable[[EventClient, Any], None]) -> None:
        super().__init__(name, seed=seed)
        self.on_frame = frame
        self.on_message = message

    async def open_socket(self, url: str) -> EventClient:
        """A new socket, without closing the old one (the supervisor aborted it already)."""
        self.client = None

        def intercept(frame: Any) -> bool:
            self.on_frame(frame)
            return self._note_retry_after(frame)

        client = EventClient(self.name, self.trace, intercept=intercept, record=False)
        client.on("personal-message", lambda message: self.on_message(client, message))
        client.on("user-list", self._seen_list)
        client.on("user-status", self._seen_status)
        await client.open(url, **OPEN)
        self.client = client
        return client

    def _seen_list(self, user_list: list[dict[str, Any]]) -> None:
        """Keep only the current list of users (``ChatUser`` keeps every one it saw: a long run's
        reconnections would pile up thousands of them per user)."""
        self.user_lists[-1:] = [user_list]
        self._presence_changed.set()


class ChatClient(Supervised):
    """A chat user: applies each ``personal-message`` whose id is above the last it applied,
    and resumes from that id after a reconnection."""

    app = "chat"

    def __init__(self, name: str, url: str, rng: random.Random, ledger: Ledger, seed: int) -> None:
        super().__init__(name, url, rng, ledger)
        self.user = SocketUser(name, seed, self._frame, self._got)
        self.partner: ChatClient | None = None
        self.last_id: int | None = None
        self.epoch: str | None = None
        self.got: list[int] = []
        self.got_set: set[int] = set()
        self.wire: Counter = Counter()  # message id -> frames that crossed the socket
        self.dropped_duplicates = 0
        self.dropped_out_of_order = 0
        self.notices: list[Notice] = []
        self.resumes = 0
        self.recovered = 0
        self.holding: list[tuple[int, str | None]] | None = None

    def _frame(self, frame: Any) -> None:
        if isinstance(frame, dict) and frame.get("event") == "personal-message" and isinstance(frame.get("data"), dict):
            self.wire[frame["data"].get("id")] += 1

    def _got(self, client: EventClient, message: Any) -> None:
        position = client.position
        if not isinstance(message, dict) or type(message.get("id")) is not int:
            return
        push = (message["id"], position[1] if position is not None else None)
        if self.holding is not None:
            self.holding.append(push)
        else:
            self._apply(push)

    def _apply(self, push: tuple[int, str | None]) -> None:
        """Apply a message unless its id is not above the last one applied."""
        id, epoch = push
        if self.last_id is not None and id <= self.last_id:
            if id in self.got_set:
                self.dropped_duplicates += 1
            else:
                self.dropped_out_of_order += 1
            return
        self.last_id = id
        if epoch is not None:
            self.epoch = epoch
        self.got.append(id)
        self.got_set.add(id)

    async def sign_up(self) -> None:
        await self.user.sign_up(self.url)
        self.client = self.user.client

    async def open(self) -> EventClient:
        """A new socket, authenticated, resumed from the last id applied; pushes that arrive before
        the resume's answer are applied after the replay (dropped if the resume fails)."""
        since, epoch = self.last_id, self.epoch
        self.holding = []
        try:
            client = await self.user.open_socket(self.url)
            self.client = client
            await self.user._join(client)  # auth with the token, then presence: as the page does
            if since is not None and epoch is not None:
                try:
                    answer = await client.resume(str(since), epoch, timeout=5)
                except AckError as error:
                    if error.code != "too-old":
                        raise
                    self.notices.append(Notice("too-old", now(), [(epoch, (since, 0), None)]))
                else:
                    self.resumes += 1
                    self.recovered += answer.get("missed", 0) if isinstance(answer, dict) else 0
        except BaseException:
            self.holding = None
            raise
        held, self.holding = sorted(self.holding, key=lambda push: push[0]), None
        for push in held:
            self._apply(push)
        return client

    async def drop(self) -> None:
        await super().drop()
        self.user.client = None

    async def send_loop(self, stop: asyncio.Event, interval: tuple[float, float]) -> None:
        seq = 0
        while not stop.is_set():
            await sleep_unless(stop, self.rng.uniform(*interval))
            if stop.is_set():
                return
            seq += 1
            await self.send_one(seq)

    async def send_one(self, seq: int) -> None:
        """Send until acknowledged, every attempt with the same ``clientId``; a timeout or a
        closed socket reconnects first (a paused node holds its sockets open)."""
        assert self.partner is not None
        client_id = f"{self.name}-{seq}"
        data = {"to": self.partner.user.uid, "message": f"{client_id} to {self.partner.name}", "clientId": client_id}
        first = now()
        for attempt in range(1, MAX_ATTEMPTS + 1):
            client = await self.ready()
            if client is None:
                continue
            try:
                stored = await client.request("personal-message", data, timeout=SEND_TIMEOUT)
            except AckError as error:
                self.ledger.chat_errors[error.code] += 1
                self.ledger.refusals[f"chat:{error.code}"] += 1
                await asyncio.sleep(error.retry_after if error.retry_after else self.rng.uniform(0.1, 0.4))
                continue
            except TimeoutError:
                self.ledger.chat_errors["timeout"] += 1
                abort(client)
                continue
            except (ConnectionError, ConnectionClosed, WebSocketException, OSError):
                self.ledger.chat_errors["closed"] += 1
                await asyncio.sleep(self.rng.uniform(0.05, 0.2))
                continue
            t = now()
            self.ledger.chat_acked[client_id] = {
                "from": self.user.uid, "to": self.partner.user.uid, "id": stored.get("id"),
                "sender": self.name, "recipient": self.partner.name, "echo": stored.get("clientId"), "at": t}
            self.ledger.acks.append(Ack("chat", first, t, attempt == 1))
            return
        self.ledger.chat_gave_up.append(client_id)


# ----- the checks --------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def check_chat(chats: list[ChatClient], ledger: Ledger, db: Path) -> tuple[list[Check], dict[str, Any]]:
    acked = ledger.chat_acked
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as connection:
        rows = connection.execute("SELECT id, sender, recipient, body, client_id FROM messages").fetchall()
    stored: dict[tuple[str, str], list[int]] = defaultdict(list)
    for id, sender, _recipient, _body, client_id in rows:
        stored[(sender, client_id)].append(id)
    not_stored, twice, wrong_id, wrong_echo = [], [], [], []
    for client_id, message in acked.items():
        ids = stored.get((message["from"], client_id), [])
        if not ids:
            not_stored.append(client_id)
        elif len(ids) > 1:
            twice.append(client_id)
        elif ids[0] != message["id"]:
            wrong_id.append(client_id)
        if message["echo"] != client_id:
            wrong_echo.append(client_id)
    unacknowledged = sum(len(ids) for (_sender, client_id), ids in stored.items() if client_id not in acked)
    by_uid = {c.user.uid: c for c in chats}
    missing, echo_missing = [], []
    for client_id, message in acked.items():
        if message["id"] not in by_uid[message["to"]].got_set:
            missing.append(f"{client_id} (id {message['id']}) to {message['recipient']}")
        if message["id"] not in by_uid[message["from"]].got_set:
            echo_missing.append(client_id)
    wire_duplicates = sum(n - 1 for c in chats for n in c.wire.values() if n > 1)
    dropped_dup = sum(c.dropped_duplicates for c in chats)
    dropped_order = sum(c.dropped_out_of_order for c in chats)
    notices = sum(len(c.notices) for c in chats)
    figures = {
        "acked": len(acked), "rows": len(rows), "not_stored": not_stored, "stored_twice": twice,
        "wrong_id": wrong_id, "wrong_echo": wrong_echo, "stored_unacknowledged": unacknowledged,
        "gave_up": ledger.chat_gave_up, "undelivered": missing, "sender_echo_missing": len(echo_missing),
        "wire_duplicates": wire_duplicates, "filtered_duplicates": dropped_dup, "filtered_out_of_order": dropped_order,
        "too_old": notices, "resumes": sum(c.resumes for c in chats), "replayed": sum(c.recovered for c in chats),
        "errors": dict(ledger.chat_errors),
        "disconnected_at_end": [c.name for c in chats if not c.connected.is_set()],
    }
    checks = [
        Check("chat: every acknowledged message stored exactly once",
              not (not_stored or twice or wrong_id or wrong_echo),
              f"{len(acked)} acknowledged; {len(not_stored)} not stored, {len(twice)} stored twice, "
              f"{len(wrong_id)} under another id; {unacknowledged} stored without an acknowledgement (sends cut off "
              f"at the end or given up: allowed); {len(ledger.chat_gave_up)} given up"),
        Check("chat: delivered to the recipient exactly once (after the offset filter)", not missing,
              f"{len(acked) - len(missing)} of {len(acked)} delivered; {len(missing)} missing; duplicates on the "
              f"wire {wire_duplicates} (filtered: {dropped_dup} seen before, {dropped_order} below the last id "
              f"applied); {figures['resumes']} resumes replayed {figures['replayed']}; {notices} too-old"),
    ]
    return checks, figures


def check_minichat(minis: list[MiniClient], ledger: Ledger) -> tuple[list[Check], dict[str, Any]]:
    acked = ledger.mini_acked
    where: dict[str, set[tuple[str, Offset]]] = defaultdict(set)
    for client in minis:
        for epoch, offset, text in client.received:
            where[text].add((epoch, offset))
    two_offsets = sorted(t for t, places in where.items() if len(places) > 1)
    nowhere = sorted(t for t in acked if t not in where)
    refused_applied = sorted(t for t in where if ledger.outcomes.get(t, "").startswith("refused"))
    ambiguous_applied = sorted(t for t in where if ledger.outcomes.get(t) in AMBIGUOUS)
    stray = sorted(t for t in where if t not in ledger.outcomes)
    silent: dict[str, list[str]] = {}
    told: Counter = Counter()
    complete = duplicated = out_of_order = 0
    for client in minis:
        texts = Counter(text for _e, _o, text in client.received)
        duplicated += sum(n - 1 for n in texts.values() if n > 1)
        gaps = []
        for text in acked:
            if texts[text] or text not in where:
                continue
            epoch, offset = next(iter(where[text]))
            notice = next((n for n in client.notices if n.covers(epoch, offset)), None)
            if notice is None:
                gaps.append(text)
            else:
                told[notice.kind] += 1
        if gaps:
            silent[client.name] = gaps
        elif all(texts[t] for t in acked if t in where):
            complete += 1
        last: dict[str, int] = {}
        for _epoch, _offset, text in client.received:
            if text in acked:
                sender, seq, _t = acked[text]
                if seq <= last.get(sender, 0):
                    out_of_order += 1
                last[sender] = seq
    silent_total = sum(len(g) for g in silent.values())
    wire_duplicates = sum(n - 1 for c in minis for n in c.wire.values() if n > 1)
    notices = Counter(n.kind for c in minis for n in c.notices)
    # A node keeps 10,000 entries: at these rates none falls behind, so a 1013 or a too-old within
    # one epoch (not after a Redis wipe) announces a gap that is not there. Loud, not a loss: shown.
    within_epoch = sum(1 for c in minis for n in c.notices
                       if n.kind != "epoch-change" and all(hi is not None for _e, _lo, hi in n.ranges))
    closes: Counter = Counter()
    for client in minis:
        closes.update(client.closes)
    figures = {
        "clients": len(minis), "acked": len(acked), "complete": complete, "told": dict(told),
        "silent": {name: gaps[:10] for name, gaps in silent.items()}, "silent_total": silent_total,
        "in_no_stream": nowhere, "at_two_offsets": two_offsets, "refused_but_applied": refused_applied,
        "ambiguous_applied": len(ambiguous_applied), "stray": stray, "duplicated_after_filter": duplicated,
        "out_of_order": out_of_order, "wire_duplicates": wire_duplicates,
        "filtered_duplicates": sum(c.dropped_duplicates for c in minis),
        "filtered_out_of_order": sum(c.dropped_out_of_order for c in minis),
        "notices": dict(notices), "closes": {str(k): v for k, v in closes.items()},
        "gap_notices_within_an_epoch": within_epoch,
        "resumes": sum(c.resumes for c in minis), "replayed": sum(c.recovered for c in minis),
        "gave_up": ledger.mini_gave_up, "attempts": dict(Counter(o.split(":")[0] for o in ledger.outcomes.values())),
        "disconnected_at_end": [c.name for c in minis if not c.connected.is_set()],
    }
    told_text = ", ".join(f"{n} by {kind}" for kind, n in sorted(told.items())) or "none"
    checks = [
        Check("minichat: every client got every acknowledged message once, in order, or was told", not (
            silent or nowhere or duplicated or out_of_order or two_offsets),
              f"{len(acked)} acknowledged, {len(minis)} clients: {complete} complete; missing but told: {told_text}; "
              f"silent gaps {silent_total} in {len(silent)} clients; in no client's stream {len(nowhere)}; twice "
              f"after the filter {duplicated}; out of order {out_of_order}; at two offsets {len(two_offsets)}; "
              f"duplicates on the wire {wire_duplicates}; closes by code {figures['closes']}; notices {dict(notices)}"),
        Check("minichat: a send refused with `unavailable` was never applied", not (refused_applied or stray),
              f"{sum(1 for o in ledger.outcomes.values() if o.startswith('refused'))} attempts refused, "
              f"{len(refused_applied)} of them in the stream anyway; {len(ambiguous_applied)} attempts whose answer "
              f"was lost are in the stream (at-least-once retries: allowed); {len(stray)} unknown texts"),
    ]
    return checks, figures


async def read_bands(cluster: Cluster, timeout: float) -> tuple[list[Any], bool]:
    """Every node's welcome (``band-list``), asked directly, until they agree or ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        states: list[Any] = []
        for node in cluster.deployments["bands"].nodes:
            try:
                client = await EventClient.connect(node.url, name="auditor", **OPEN)
                try:
                    states.append(await client.wait_for("band-list", timeout=5))
                finally:
                    await asyncio.wait_for(client.aclose(), 3)
            except Exception as error:
                states.append(f"{type(error).__name__}: {error}")
        agree = all(isinstance(s, list) for s in states) and all(s == states[0] for s in states)
        if agree or time.monotonic() > deadline:
            return states, agree
        await asyncio.sleep(0.5)


def check_bands(states: list[Any], agree: bool, ledger: Ledger, wipes: list[Fault]) -> tuple[list[Check], dict]:
    votes = ledger.votes
    counted: dict[str, int] = {b["id"]: b["votes"] for b in states[0]} if isinstance(states[0], list) else {}
    maybe: Counter = Counter()
    for outcome in AMBIGUOUS:
        maybe.update(votes.get(outcome, Counter()))
    acked = votes.get("acked", Counter())
    lost = {b: acked[b] - counted.get(b, 0) for b in acked if acked[b] > counted.get(b, 0)}
    extra = {b: counted[b] - acked[b] - maybe[b] for b in counted if counted[b] > acked[b] + maybe[b]}
    refused = sum(n for outcome, bands in votes.items() if outcome.startswith("refused") for n in bands.values())
    summary = [{"node": f"node{k + 1}", "votes": {b["id"]: b["votes"] for b in s} if isinstance(s, list) else s}
               for k, s in enumerate(states)]
    figures = {"agree": agree, "nodes": summary, "acked": sum(acked.values()), "counted": sum(counted.values()),
               "answer_lost": sum(maybe.values()), "refused": refused, "lost": lost, "extra": extra,
               "redis_wipes": len(wipes)}
    per_node = "; ".join(
        f"{row['node']} {sum(row['votes'].values()) if isinstance(row['votes'], dict) else row['votes']}"
        for row in summary)
    checks = [
        Check("bands: every node welcomes with the same votes", agree, f"total per node: {per_node}"),
        Check("bands: votes counted = acknowledged, plus at most those whose answer was lost", not (lost or extra),
              f"{sum(acked.values())} acknowledged, {sum(counted.values())} counted, {sum(maybe.values())} answers "
              f"lost, {refused} refused; short {sum(lost.values())}, over {sum(extra.values())}"
              + (" (a Redis wipe happened: the state was seeded again from the first node back)" if wipes else "")),
    ]
    return checks, figures


# ----- the run ------------------------------------------------------------------------------------


def phases(faults: list[Fault], traffic_started: float, drain_started: float) -> list[tuple[str, float, float]]:
    done = [f for f in faults if f.started is not None]
    edges = [traffic_started] + [f.started for f in done] + [drain_started]  # type: ignore[misc]
    labels = ["baseline"] + [f"{k + 1}. {f.label}" for k, f in enumerate(done)]
    return [(labels[k], edges[k], edges[k + 1]) for k in range(len(labels))]


def latency_rows(acks: list[Ack], spans: list[tuple[str, float, float]]) -> list[dict[str, Any]]:
    rows = []
    for label, start, end in spans:
        for app in APPS:
            inside = [a for a in acks if a.app == app and start <= a.first < end]
            clean = [(a.acked - a.first) * 1000 for a in inside if a.clean]
            every = [(a.acked - a.first) * 1000 for a in inside]
            p50, p99 = percentiles(clean)
            a50, a99 = percentiles(every)
            rows.append({"phase": label, "app": app, "acks": len(inside), "retried": len(inside) - len(clean),
                         "p50_ms": p50, "p99_ms": p99, "all_p50_ms": a50, "all_p99_ms": a99})
    return rows


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "–" if value is None else format(value, spec)


async def main(plan: Plan, json_path: Path | None) -> int:
    processes.raise_file_limit()
    rng = random.Random(plan.seed)
    schedule = draw_schedule(rng, plan)
    ledger = Ledger()
    cluster = Cluster()
    users: list[Supervised] = []
    watcher: asyncio.Task | None = None
    log(f"starting Redis and {len(APPS)} apps x {NODES} nodes behind HAProxy")
    try:
        await cluster.start()
        watcher = asyncio.get_running_loop().create_task(cluster.watch())
        if not await cluster.recover(30):
            cluster.errors.append("not every node was UP behind its front door before the run")
        started_s = now()
        log(f"up after {started_s:.1f} s; signing up {plan.chat} chat users")
        chats = [ChatClient(f"chat{k}", cluster.url("chat"), random.Random(plan.seed * 7919 + k), ledger,
                            seed=plan.seed * 7919 + k) for k in range(plan.chat)]
        for k in range(0, plan.chat, 2):
            chats[k].partner, chats[k + 1].partner = chats[k + 1], chats[k]
        gate = asyncio.Semaphore(8)

        async def sign_up(chat: ChatClient) -> None:
            async with gate:
                await chat.sign_up()

        await asyncio.gather(*(sign_up(c) for c in chats))
        minis = [MiniClient(f"mini{k}", cluster.url("minichat"), random.Random(plan.seed * 104729 + k), ledger)
                 for k in range(plan.minichat)]
        voters = [Voter(f"voter{k}", cluster.url("bands"), random.Random(plan.seed * 1299709 + k), ledger)
                  for k in range(plan.bands)]
        users = [*chats, *minis, *voters]
        for user in users:
            user.start()
        if not await wait_until(lambda: all(u.connected.is_set() for u in users), 20, step=0.1):
            cluster.errors.append(f"{sum(not u.connected.is_set() for u in users)} users not connected at start")
        log(f"{len(users)} users connected after {now():.1f} s; traffic starts")
        stop = asyncio.Event()
        senders = [*chats, *minis[: plan.senders], *voters]
        send_tasks = [asyncio.get_running_loop().create_task(u.send_loop(stop, plan.interval[u.app])) for u in senders]
        traffic_started = now()
        # Every chat user needs an offset to resume from before anything fails: its first push.
        await wait_until(lambda: all(c.last_id is not None for c in chats), 15, step=0.1)
        await asyncio.sleep(max(0.0, traffic_started + plan.baseline - now()))
        before = cluster.resources()
        schedule_end = traffic_started + plan.seconds
        for k, fault in enumerate(schedule):
            estimate = fault.seconds + OVERHEAD[fault.kind]
            if now() + estimate > schedule_end or (plan.budget is not None and now() + estimate > plan.budget):
                fault.skipped = True
                fault.note = "skipped: out of time"
                continue
            log(f"fault {k + 1}/{len(schedule)}: {fault.label}")
            await cluster.inject(fault)
            if not await cluster.recover(20):
                cluster.errors.append(f"{now():.1f} s: not every node UP 20 s after {fault.label}")
            fault.recovered = now()
            gap = rng.uniform(*plan.gap)
            if plan.quick and k == len(schedule) - 1:
                gap = 0.0  # the drain is the recovery time of the last one
            await asyncio.sleep(min(gap, max(0.0, schedule_end - now())))
        if not plan.quick:
            await asyncio.sleep(max(0.0, schedule_end - now()))
        drain_started = now()
        log("draining: senders finish the message under way")
        stop.set()
        _done, pending = await asyncio.wait(send_tasks, timeout=plan.drain_send)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await cluster.recover(20)

        def arrived() -> int:
            return sum(len(m.received) for m in minis) + sum(len(c.got) for c in chats)

        last, quiet_since, deadline = -1, now(), now() + plan.drain_most
        while now() < deadline:
            count = arrived()
            if count != last:
                last, quiet_since = count, now()
            elif now() - quiet_since >= plan.drain_quiet and all(u.connected.is_set() for u in users):
                break
            await asyncio.sleep(0.1)
        log("checking")
        states, agree = await read_bands(cluster, 10 if plan.quick else 20)
        after = cluster.resources()
        cluster.check_processes()
        tracebacks = cluster.tracebacks()
        if watcher is not None:
            watcher.cancel()
        await asyncio.gather(*(asyncio.wait_for(u.aclose(), 5) for u in users), return_exceptions=True)
        chat_checks, chat_figures = check_chat(chats, ledger, cluster.db)
        mini_checks, mini_figures = check_minichat(minis, ledger)
        wipes = [f for f in schedule if f.kind == "redis-wipe" and f.started is not None]
        band_checks, band_figures = check_bands(states, agree, ledger, wipes)
        failed_faults = [f for f in schedule if f.error]
        checks = [*chat_checks, *mini_checks, *band_checks,
                  Check("processes: none died that the schedule did not kill", not cluster.deaths,
                        f"{len(cluster.deaths)} unexpected deaths" + "".join(
                            f"; {d['process']} pid {d['pid']} at {d['at']} s (exit {d['exit']})"
                            for d in cluster.deaths)),
                  Check("faults: every fault injected and recovered from", not (failed_faults or cluster.errors),
                        f"{sum(f.started is not None for f in schedule)} injected, "
                        f"{sum(f.skipped for f in schedule)} skipped for time, {len(failed_faults)} failed; "
                        f"{len(cluster.errors)} errors")]
        spans = phases(schedule, traffic_started, drain_started)
        latency = latency_rows(ledger.acks, spans)
        report = {
            "recorded": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "plan": asdict(plan), "cores": os.cpu_count(), "started_s": started_s,
            "faults": [asdict(f) | {"label": f.label, "target": f.target} for f in schedule],
            "checks": [asdict(c) for c in checks], "chat": chat_figures, "minichat": mini_figures,
            "bands": band_figures, "deaths": cluster.deaths, "errors": cluster.errors,
            "latency": latency, "resources": {"start": before, "end": after}, "wall_s": now(),
            "tracebacks": tracebacks,
        }
        print_report(report, checks, schedule, latency, before, after, cluster)
        if json_path is not None:
            json_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
        return 0 if all(c.ok for c in checks) else 1
    finally:
        if watcher is not None:
            watcher.cancel()
        await asyncio.gather(*(asyncio.wait_for(u.aclose(), 5) for u in users), return_exceptions=True)
        await cluster.aclose()


def print_report(report: dict[str, Any], checks: list[Check], schedule: list[Fault], latency: list[dict],
                 before: dict, after: dict, cluster: Cluster) -> None:
    plan = report["plan"]
    out = print
    length = "quick" if plan["quick"] else f"{plan['seconds'] / 60:g} min"
    out(f"# Chaos run: seed {plan['seed']}, {length}, {plan['chat'] + plan['minichat'] + plan['bands']} users\n")
    out(f"chat {plan['chat']} users ({plan['chat'] // 2} pairs), minichat {plan['minichat']} clients "
        f"({plan['senders']} of them sending), bands {plan['bands']} voters; {len(APPS)} apps x {NODES} nodes, "
        f"one redis-server (AOF), {report['cores']} cores; up after {report['started_s']:.1f} s, "
        f"{report['wall_s']:.1f} s in all.\n")
    verdict = "PASS" if all(c.ok for c in checks) else "FAIL"
    out(f"**{verdict}**\n")
    out("## Checks\n")
    out("| check | result | detail |\n| --- | --- | --- |")
    for check in checks:
        out(f"| {check.name} | {'ok' if check.ok else '**FAILED**'} | {check.detail} |")
    out("\n## Faults\n")
    out("| # | fault | started s | length s | recovered s | note |\n| --- | --- | --- | --- | --- | --- |")
    for k, f in enumerate(schedule, 1):
        length = f"{f.ended - f.started:.1f}" if f.started is not None and f.ended is not None else "–"
        note = f.note + (f"; **error** {f.error}" if f.error else "")
        out(f"| {k} | {f.label} | {fmt(f.started, '.1f')} | {length} | {fmt(f.recovered, '.1f')} | {note} |")
    out("\n## Acknowledgement latency per phase (ms)\n")
    out("Survivors: requests acknowledged at their first attempt, on the socket they were sent on; "
        "all: from the first attempt to the acknowledgement, retries and reconnections included. "
        "A phase runs from its fault's start to the next one's.\n")
    out("| phase | app | acks | retried | p50 | p99 | all p50 | all p99 |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in latency:
        out(f"| {row['phase']} | {row['app']} | {row['acks']} | {row['retried']} | {fmt(row['p50_ms'])} | "
            f"{fmt(row['p99_ms'])} | {fmt(row['all_p50_ms'])} | {fmt(row['all_p99_ms'])} |")
    out("\n## Resources (start: before the first fault; end: after the drain)\n")
    out("| process | pid | RSS MiB | FDs | pid at end | RSS MiB at end | FDs at end |\n"
        "| --- | --- | --- | --- | --- | --- | --- |")
    for name in after:
        a, b = before.get(name, {}), after[name]
        out(f"| {name} | {a.get('pid', '–')} | {fmt(a.get('rss_mib'), '.1f')} | {a.get('fds', '–')} | "
            f"{b.get('pid')} | {fmt(b.get('rss_mib'), '.1f')} | {b.get('fds', '–')} |")
    mini, chat, bands = report["minichat"], report["chat"], report["bands"]
    out("\n## Details\n")
    out(f"- minichat: {mini['acked']} acknowledged; attempts {mini['attempts']}; resumes {mini['resumes']} "
        f"(replayed {mini['replayed']}); closes by code {mini['closes']}; notices {mini['notices']}; "
        f"filtered {mini['filtered_duplicates']} duplicates and {mini['filtered_out_of_order']} out of order; "
        f"given up {len(mini['gave_up'])}; disconnected at the end {len(mini['disconnected_at_end'])}; gap "
        f"notices within one epoch {mini['gap_notices_within_an_epoch']} (nothing is trimmed at these rates: "
        "any is a node announcing a gap that is not there)")
    for name, gaps in mini["silent"].items():
        out(f"  - silent gap at {name}: {', '.join(gaps)}")
    for label in ("in_no_stream", "at_two_offsets", "refused_but_applied", "stray"):
        if mini[label]:
            out(f"  - {label.replace('_', ' ')}: {', '.join(mini[label][:20])}")
    out(f"- chat: {chat['acked']} acknowledged, {chat['rows']} rows in the database; errors seen by senders "
        f"{chat['errors']}; sender echoes missing {chat['sender_echo_missing']}; disconnected at the end "
        f"{len(chat['disconnected_at_end'])}")
    for label in ("not_stored", "stored_twice", "wrong_id", "wrong_echo", "undelivered"):
        if chat[label]:
            out(f"  - {label.replace('_', ' ')}: {', '.join(map(str, chat[label][:20]))}")
    out(f"- bands: acknowledged {bands['acked']}, counted {bands['counted']}, answer lost {bands['answer_lost']}, "
        f"refused {bands['refused']}; per node {[row['votes'] for row in bands['nodes']]}")
    for death in cluster.deaths:
        out(f"- unexpected death: {death['process']} pid {death['pid']} at {death['at']} s, exit {death['exit']}: "
            f"{death['stderr'][-500:]!r}")
    for error in cluster.errors:
        out(f"- error: {error}")
    for text in report["tracebacks"]:
        out(f"- a node's stderr shows a traceback: {text[-600:]!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 users, 4 faults: a smoke pass under 60 s")
    parser.add_argument("--seed", type=int, default=1, help="draws the schedule, its targets and the users' timing")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the fault schedule (not with --quick)")
    parser.add_argument("--users", type=int, default=None, help="simulated users in all (default 200; --quick 30)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args()
    for available, missing in ((redis_available, redis_missing), (haproxy_available, haproxy_missing)):
        if not available():
            print(f"chaos: skipped: {missing()}")
            sys.exit(1 if os.environ.get("CI") else 0)
    run_plan = Plan.make(args.quick, args.seed, args.minutes, args.users)
    # On the labtools loop (the children die with its thread), within a generous bound: a hang is a
    # finding too, and the deployment is torn down all the same.
    limit = 150.0 if run_plan.quick else run_plan.seconds + 600.0
    try:
        code = runtime.run(asyncio.wait_for(main(run_plan, args.json), limit))
    except TimeoutError:
        print(f"chaos: no result after {limit:.0f} s: something hung (see the log on stderr); 0 checks passed")
        code = 2
    print(f"\n({now():.0f} s)")
    runtime.shutdown()
    sys.exit(code)
