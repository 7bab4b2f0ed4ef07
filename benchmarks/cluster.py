"""Cluster benchmark: one broadcast chat room on 1, 2 and 4 server processes sharing through
Redis, labtools' minichat beside Socket.IO with its Redis adapter.

    .venv/bin/python benchmarks/cluster.py                 # default sizes (about 3 minutes)
    .venv/bin/python benchmarks/cluster.py --quick         # a CI smoke pass (< 60 s)
    .venv/bin/python benchmarks/cluster.py --json out.json # also write the figures

The workload, the same for every system (``Workload``):

* C clients (200; --quick 40) connect directly to the nodes' ports, round-robin;
* S = 10 of them send, open loop (the schedule does not wait for the servers), R messages/s in
  all (100; --quick 100), each message carrying its send time; every client receives every
  message, so R × C deliveries/s are due;
* a warm-up step (not measured), then D seconds (8; --quick 2) measured, plus the drain: until
  every delivery arrived, or none arrived for 2 s (what never comes is lost; late is not lost).

Measured over that window: deliveries/s delivered, delivery latency p50/p99 (the sender's
stamp subtracted from the receive time on the same clock of the same process), lost
deliveries (must be 0), and the CPU seconds of each node process and of redis-server
(``labtools.processes.cpu_seconds``), shown as CPU % of one core, and the load generator's and
the rest of the machine's ("other": on a shared machine, a large one makes the rest noise).
Also Redis's own ceiling:
PUBLISH and XADD per second through one redis-server from one pipelined connection.

Systems: ``python -m labtools serve minichat`` with no broker (the embedded default, the
baseline) and with ``--broker redis://…`` as 1, 2 and 4 nodes; Socket.IO 4 (Node,
benchmarks/peers/server_sio_redis.mjs, ``@socket.io/redis-adapter``) as 1, 2 and 4 nodes. Each
system gets a fresh ``labtools.deploy.redis.RedisServer``. The load generator runs in a process
of its own: benchmarks/peers/loadgen.mjs (socket.io-client) for Socket.IO, and this file's
``--loadgen`` mode (``labtools.experiments.scale.RawClient``: raw frames, its own codec) for labtools.

Skips (exit 0) when redis-server is missing, unless CI is set; skips Socket.IO when node or npm
is missing. Exits 1 when a delivery was lost or a system failed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install needed

import psutil
import redis.asyncio as aioredis
from websockets.frames import Opcode

from labtools import processes
from labtools.deploy.redis import RedisServer, missing_message, redis_available
from labtools.experiments.scale import RawClient, open_loop

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "benchmarks" / "peers"
STALL_S = 2.0  # the drain ends when no delivery arrived for this long
TWO_CORES = (
    "On {cores} cores this measures the broker's overhead, not scaling: the nodes, Redis and the load "
    "generator share the same cores."
)


@dataclass(frozen=True)
class Workload:
    """One broadcast room, the same for every system."""

    clients: int = 200
    senders: int = 10
    rate: float = 100.0  # messages/s from all senders together: 20,000 deliveries/s, within 2 cores
    seconds: float = 8.0
    warmup: float = 1.0


QUICK = Workload(clients=40, rate=100.0, seconds=2.0, warmup=0.5)


@dataclass
class Row:
    """One system at one node count: what the load generator saw and the processes spent."""

    system: str
    nodes: int
    broker: str  # "redis" or "embedded"
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    dropped_connections: int = 0
    seconds: float = 0.0
    deliveries_per_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    node_cpu_pct: list[float] = field(default_factory=list)
    redis_cpu_pct: float | None = None
    loadgen_cpu_pct: float | None = None
    other_cpu_pct: float | None = None  # the rest of the machine (a shared machine shows here)
    error: str | None = None

    @property
    def cpu_us_per_delivery(self) -> float | None:
        """CPU of all nodes and Redis per delivery: the cost a broker adds shows here first."""
        if not self.delivered:
            return None
        cpu_s = (sum(self.node_cpu_pct) + (self.redis_cpu_pct or 0.0)) / 100 * self.seconds
        return cpu_s / self.delivered * 1e6


# ----- the Python load generator (labtools' clients), run as ``cluster.py --loadgen CONFIG`` ---------


class RoomClient(RawClient):
    """A ``RawClient`` that counts only the current step's messages (late warm-up ones are not)."""

    def __init__(self, host: str, port: int, latencies: list[float]) -> None:
        super().__init__(host, port, latencies)
        self.record = True
        self.tag = b"\x00"

    def on_text(self, payload: bytearray) -> None:
        if self.tag in payload:
            super().on_text(payload)


def mark(window: str) -> None:
    """Tell the driver the measured window starts or ends (it reads the servers' CPU then)."""
    print(json.dumps({"window": window}), flush=True)


async def python_step(clients: list[RoomClient], work: Workload, seconds: float, tag: str, marks: bool) -> dict:
    """The mirror of loadgen.mjs's ``broadcastStep``: open-loop sends, then the drain."""
    latencies: list[float] = []
    for client in clients:
        client.tag, client.latencies, client.received = f'"text":"{tag} '.encode(), latencies, 0
    senders = clients[: work.senders]
    total = max(1, round(work.rate * seconds))
    if marks:
        mark("start")
    start = time.monotonic()

    async def send(k: int) -> None:
        text = json.dumps({"event": "msg-to-server", "data": {"text": f"{tag} {k}", "sentAt": time.monotonic()}})
        senders[k % len(senders)].send_frame(Opcode.TEXT, text.encode())

    await open_loop(work.rate, total, send)
    expected, last, quiet_since = total * len(clients), -1, time.monotonic()
    while (got := sum(c.received for c in clients)) < expected and time.monotonic() - quiet_since < STALL_S:
        if got > last:
            last, quiet_since = got, time.monotonic()
        await asyncio.sleep(0.02)
    elapsed = time.monotonic() - start
    if marks:
        mark("end")
    counts = [c.received for c in clients]
    ordered = sorted(latencies)

    def pct(q: float) -> float | None:
        return round(ordered[min(len(ordered) - 1, round((len(ordered) - 1) * q))] * 1000, 2) if ordered else None

    return {
        "sent": total, "delivered": sum(counts), "lost": sum(max(0, total - n) for n in counts),
        "duplicated": sum(max(0, n - total) for n in counts), "seconds": elapsed,
        "deliveriesPerS": sum(counts) / elapsed, "p50": pct(0.50), "p99": pct(0.99),
    }


async def python_loadgen(config: dict) -> dict:
    """C raw clients round-robin over the nodes, a warm-up step, the measured step."""
    work = Workload(**config["work"])
    urls = [url.split("//", 1)[1].rstrip("/").rsplit(":", 1) for url in config["urls"]]
    gate = asyncio.Semaphore(64)

    async def connect(i: int) -> RoomClient:
        host, port = urls[i % len(urls)]
        async with gate:
            return await RoomClient.connect(host, int(port), [])  # type: ignore[return-value]

    clients = await asyncio.gather(*(connect(i) for i in range(work.clients)))
    await python_step(clients, work, work.warmup, f"{config['runTag']}w", marks=False)
    result = await python_step(clients, work, work.seconds, config["runTag"], marks=True)
    result["droppedConnections"] = sum(c.transport is None or c.transport.is_closing() for c in clients)
    for client in clients:
        await client.aclose()
    return result


# ----- processes ------------------------------------------------------------------------------------------


class Child:
    """A server or load generator process; ``url`` is the first line a server prints."""

    def __init__(self, process: asyncio.subprocess.Process, url: str = "") -> None:
        self.process = process
        self.url = url
        self.ps = psutil.Process(process.pid)

    @classmethod
    async def server(cls, command: list[str], cwd: Path) -> Child:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=processes.prepare_child
        )
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        if not line.startswith("http://"):
            if process.returncode is None:
                process.kill()
            await process.wait()
            raise RuntimeError(f"{command[:4]} did not start (printed {line!r})")
        return cls(process, line)

    async def aclose(self) -> None:
        """SIGTERM, SIGKILL after 5 s."""
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def node_command(system: str, broker: str | None, k: int, node: str | None) -> tuple[list[str], Path]:
    """The command line of node ``k`` of ``system``, and where it runs."""
    if system == "labtools":
        command = [sys.executable, "-m", "labtools", "serve", "minichat", "--port", "0", "--exit-with-stdin"]
        return ([*command, "--broker", broker, "--node", f"n{k}"] if broker else command), ROOT
    assert node is not None and broker is not None
    return [node, "server_sio_redis.mjs", "--redis", broker, "--node", f"n{k}", "--port", "0"], PEERS


def loadgen_command(system: str, config: dict, node: str | None) -> tuple[list[str], Path]:
    if system == "labtools":
        return [sys.executable, __file__, "--loadgen", json.dumps(config)], ROOT
    assert node is not None
    work = config["work"]
    options = {"workload": "cluster", "urls": config["urls"], "runTag": config["runTag"], "watchdogS": 600,
               "clients": work["clients"], "senders": work["senders"], "rate": work["rate"],
               "seconds": work["seconds"], "warmupSeconds": work["warmup"]}
    return [node, "loadgen.mjs", json.dumps(options)], PEERS


async def run_system(system: str, nodes: int, broker: bool, work: Workload, node: str | None) -> Row:
    """Fresh Redis (unless embedded), ``nodes`` nodes, one load generator; CPU over its window."""
    row = Row(system, nodes, "redis" if broker else "embedded")
    redis = await RedisServer.start() if broker else None
    children: list[Child] = []
    try:
        for k in range(1, nodes + 1):
            children.append(await Child.server(*node_command(system, redis.url if redis else None, k, node)))
        watched = [c.ps for c in children] + ([psutil.Process(redis.pid)] if redis else [])
        config = {"urls": [c.url for c in children], "work": asdict(work), "runTag": f"r{int(time.time())}"}
        command, cwd = loadgen_command(system, config, node)
        process = await asyncio.create_subprocess_exec(*command, cwd=cwd, stdout=subprocess.PIPE,
                                                       preexec_fn=processes.prepare_child)
        children.append(Child(process))
        watched.append(children[-1].ps)
        assert process.stdout is not None
        cpu: dict[str, list[float]] = {}
        result: dict[str, Any] = {}
        while line := await asyncio.wait_for(process.stdout.readline(), 120):
            message = json.loads(line)
            if "window" in message:  # the machine's busy seconds last: the rest is other processes'
                cpu[message["window"]] = [*(processes.cpu_seconds(p) for p in watched), machine_busy_seconds()]
            else:
                result = message
        if "error" in result or "start" not in cpu or "end" not in cpu:
            raise RuntimeError(str(result.get("error", "the load generator ended without a result"))[:500])
        row.sent, row.delivered, row.lost = result["sent"], result["delivered"], result["lost"]
        row.duplicated, row.dropped_connections = result["duplicated"], result["droppedConnections"]
        row.seconds, row.deliveries_per_s = result["seconds"], result["deliveriesPerS"]
        row.p50_ms, row.p99_ms = result["p50"], result["p99"]
        used = [(b - a) / row.seconds * 100 for a, b in zip(cpu["start"], cpu["end"], strict=True)]
        row.node_cpu_pct = used[:nodes]
        row.redis_cpu_pct = used[nodes] if redis else None
        row.loadgen_cpu_pct = used[-2]
        row.other_cpu_pct = max(0.0, used[-1] - sum(used[:-1]))
    except (RuntimeError, OSError, TimeoutError, json.JSONDecodeError, KeyError, psutil.Error) as error:
        row.error = f"{type(error).__name__}: {error}"
    finally:
        for child in reversed(children):
            await child.aclose()
        if redis is not None:
            await redis.aclose()
    return row


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy (not idle, not waiting for the disk)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0) - getattr(times, "guest", 0.0) - getattr(
        times, "guest_nice", 0.0)


# ----- Redis's own ceiling -----------------------------------------------------------------------------------


async def redis_ceiling(seconds: float, batch: int = 1000) -> list[dict]:
    """PUBLISH (to one subscribed connection) and XADD (MAXLEN ~ 1000, minichat's retention) per
    second from one pipelined connection: the most one redis-server takes from one client."""
    redis = await RedisServer.start()
    client = aioredis.from_url(redis.url)
    # A subscriber that reads and drops: PUBLISH to nobody would skip the fan-out Redis does.
    reader, writer = await asyncio.open_connection("127.0.0.1", redis.port)
    writer.write(b"SUBSCRIBE room\r\n")

    async def drain() -> None:
        while await reader.read(1 << 16):
            pass

    draining = asyncio.create_task(drain())
    payload = json.dumps({"event": "msg-from-server", "data": {"text": "message 1234", "at": time.time(),
                                                               "sentAt": time.monotonic()}})
    server = psutil.Process(redis.pid)
    lines = []
    try:
        for name in ("PUBLISH", "XADD"):
            cpu0, start, done = processes.cpu_seconds(server), time.monotonic(), 0
            while time.monotonic() - start < seconds:
                pipe = client.pipeline(transaction=False)
                for _ in range(batch):
                    if name == "PUBLISH":
                        pipe.publish("room", payload)
                    else:
                        pipe.xadd("room-log", {"m": payload}, maxlen=1000, approximate=True)
                await pipe.execute()
                done += batch
            elapsed = time.monotonic() - start
            lines.append({"command": name, "per_s": done / elapsed, "batch": batch,
                          "redis_cpu_pct": (processes.cpu_seconds(server) - cpu0) / elapsed * 100})
    finally:
        draining.cancel()
        writer.close()
        await client.aclose()
        await redis.aclose()
    return lines


# ----- the table -------------------------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "–" if value is None else format(value, spec)


def ratio(value: float | None, reference: float | None) -> str:
    return "–" if value is None or not reference else f"{value / reference:.2f}×"


def print_rows(rows: list[Row], ceiling: list[dict]) -> None:
    print(f"{'system':10} {'nodes':>5} {'broker':8} {'deliv/s':>8} {'p50 ms':>7} {'p99 ms':>8} {'lost':>6} "
          f"{'CPU µs/deliv':>12} {'redis %':>7} {'loadgen %':>9} {'other %':>7}  CPU % per node")
    for r in rows:
        if r.error:
            print(f"{r.system:10} {r.nodes:>5} {r.broker:8} failed: {r.error}")
            continue
        print(f"{r.system:10} {r.nodes:>5} {r.broker:8} {r.deliveries_per_s:>8,.0f} {fmt(r.p50_ms, '.1f'):>7} "
              f"{fmt(r.p99_ms, '.1f'):>8} {r.lost + r.duplicated:>6} {fmt(r.cpu_us_per_delivery, '.1f'):>12} "
              f"{fmt(r.redis_cpu_pct):>7} {fmt(r.loadgen_cpu_pct):>9} {fmt(r.other_cpu_pct):>7}  "
              + " ".join(f"{c:.0f}" for c in r.node_cpu_pct))
    for line in ceiling:
        print(f"{'redis':10} {1:>5} {line['command']:8} {line['per_s']:>8,.0f} msg/s from one connection, "
              f"pipelined {line['batch']} at a time; redis-server at {line['redis_cpu_pct']:.0f} % of a core")


def print_ratios(rows: list[Row]) -> None:
    ok = {(r.system, r.broker, r.nodes): r for r in rows if not r.error}
    print("\nratios against the same system's 1 node through Redis (deliveries/s, p99, CPU µs per delivery):")
    for (system, broker, nodes), r in ok.items():
        one = ok.get((system, "redis", 1))
        if one is not None and r is not one:
            cost = ratio(r.cpu_us_per_delivery, one.cpu_us_per_delivery)
            print(f"  {system:10} {nodes} {broker:8}: deliv/s {ratio(r.deliveries_per_s, one.deliveries_per_s)}, "
                  f"p99 {ratio(r.p99_ms, one.p99_ms)}, CPU/deliv {cost}")
    print("labtools / Socket.IO at each node count (above 1× is more cost or latency):")
    for nodes in sorted({n for _s, b, n in ok if b == "redis"}):
        ours, theirs = ok.get(("labtools", "redis", nodes)), ok.get(("socket.io", "redis", nodes))
        if ours and theirs:
            print(f"  {nodes} nodes: p99 {ratio(ours.p99_ms, theirs.p99_ms)}, "
                  f"CPU/deliv {ratio(ours.cpu_us_per_delivery, theirs.cpu_us_per_delivery)}, "
                  f"redis CPU {ratio(ours.redis_cpu_pct, theirs.redis_cpu_pct)}")


def print_headroom(rows: list[Row]) -> None:
    """What more cores would give: the messages one core a process would carry, from the CPU it
    spent per message here (not from its CPU %, which a starved process keeps low)."""
    print("\nwith a core per node and one for Redis, the busiest process caps the room at about (each node "
          "sends every message to its C/nodes clients; Redis takes it once and publishes it once per node):")
    for r in rows:
        if r.error or r.broker != "redis" or not r.node_cpu_pct:
            continue

        def per_core(pct: float | None, r: Row = r) -> str:
            return f"~{r.sent / (pct / 100 * r.seconds):,.0f} msg/s" if pct else "–"

        print(f"  {r.system:10} {r.nodes} nodes: busiest node {per_core(max(r.node_cpu_pct))}, "
              f"redis {per_core(r.redis_cpu_pct)}")


# ----- main ------------------------------------------------------------------------------------------------


def node_tools() -> str | None:
    """node, with benchmarks/peers/node_modules installed (the peers benchmark's ``npm ci``), or None."""
    node = shutil.which("node")
    if node is None or shutil.which("npm") is None:
        return None
    spec = importlib.util.spec_from_file_location("peers_run", PEERS / "run.py")
    assert spec is not None and spec.loader is not None
    peers_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peers_run)
    peers_run.install_node_modules(*peers_run.need_node())
    return node


def versions(node: str | None) -> dict[str, str]:
    found = {"python": platform.python_version(), "redis-server": subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2].removeprefix("v=")}
    if node is not None:
        found["node"] = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
        lock = json.loads((PEERS / "package-lock.json").read_text())["packages"]
        for name in ("socket.io", "@socket.io/redis-adapter", "redis", "socket.io-client"):
            found[name] = lock[f"node_modules/{name}"]["version"]
    return found


async def main(quick: bool, json_path: Path | None) -> int:
    processes.raise_file_limit()
    work = QUICK if quick else Workload()
    node = node_tools()
    cores = os.cpu_count() or 1
    print(f"cluster: a broadcast room, {work.clients} clients round-robin over the nodes, {work.senders} senders, "
          f"{work.rate:g} msg/s open loop ({work.rate * work.clients:,.0f} deliveries/s due), {work.seconds:g} s "
          f"after a {work.warmup:g} s warm-up; {cores} cores shared by the nodes, Redis and the load generator")
    print(TWO_CORES.format(cores=cores))
    if node is None:
        print("node or npm not found: Socket.IO is skipped")
    plan = [("labtools", 1, False)] + [("labtools", n, True) for n in (1, 2, 4)]
    plan += [("socket.io", n, True) for n in (1, 2, 4)] if node else []
    rows = []
    for system, nodes, broker in plan:
        rows.append(await run_system(system, nodes, broker, work, node))
    ceiling = await redis_ceiling(0.5 if quick else 2.0)
    print()
    print_rows(rows, ceiling)
    print_ratios(rows)
    print_headroom(rows)
    if json_path is not None:
        recorded = {
            "recorded": {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                         "machine": f"{platform.system()} {platform.machine()}", "cores": cores,
                         "versions": versions(node), "run": "quick" if quick else "full"},
            "workload": asdict(work),
            "rows": [{**asdict(r), "cpu_us_per_delivery": r.cpu_us_per_delivery} for r in rows],
            "redis_ceiling": ceiling,
        }
        json_path.write_text(json.dumps(recorded, indent=1) + "\n")
    failed = [r for r in rows if r.error or r.lost or r.duplicated or r.dropped_connections]
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke pass under 60 s")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--loadgen", help=argparse.SUPPRESS)  # the Python load generator's process
    args = parser.parse_args()
    if args.loadgen:
        print(json.dumps(asyncio.run(python_loadgen(json.loads(args.loadgen)))), flush=True)
        sys.exit(0)
    if not redis_available():
        print(f"cluster: skipped: {missing_message()}")
        sys.exit(1 if os.environ.get("CI") else 0)
    started = time.monotonic()
    code = asyncio.run(main(args.quick, args.json))
    print(f"({time.monotonic() - started:.0f} s)")
    sys.exit(code)
