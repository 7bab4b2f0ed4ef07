"""Fan-out benchmark: how many chat deliveries per second one minichat server process sustains.

    .venv/bin/python benchmarks/fanout.py            # the full ladder (< 4 min)
    .venv/bin/python benchmarks/fanout.py --quick    # one rate per size, a CI smoke (< 30 s)

For C connected clients (100 and 1,000), 10 of them send chat messages at a fixed aggregate
rate (a ladder of rates, open loop: the schedule does not wait for the server), and every
client receives every message (PROTOCOL.md's minichat). Reported per step: deliveries per
second, p50/p99 delivery latency (the sender embeds ``time.monotonic()``, which is
system-wide on Linux, so the receiver in the same process can subtract it), messages lost
(must be 0), and the server's CPU time per delivered message (from the server process's own
counters, not the load generator's). Per size: RSS per idle connection ((RSS with C idle
clients − RSS with none) / C) and the highest rate sustained with p99 < 100 ms and nothing lost.

Two servers run the same workload, each in its own process (``python -m labtools serve
minichat``, and a peer: a bare ``websockets`` server relaying with ``broadcast()``,
compression off) so that server and load generator each get a core. The load generator is
lean on purpose: ``labtools.experiments.scale.RawClient``, raw asyncio protocols that speak just
enough WebSocket (handshake, frame headers, pongs) with a codec of their own, not the event
layer's, so that it checks the server rather than agreeing with it, and so that its own cost
does not end up in the server's latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install needed

import psutil
from websockets.frames import Opcode

from labtools.experiments.scale import RawClient, open_loop
from labtools.measure.metrics import percentile

ROOT = Path(__file__).resolve().parents[1]
SENDERS = 10
P99_GOAL_MS = 100.0


# ----- the peer: a bare websockets server doing the same chat ---------------------------------


def run_peer(host: str, port: int) -> None:
    """The reference: ``websockets.broadcast`` of one JSON reply per message, compression off."""
    import signal

    from websockets.asyncio.server import broadcast, serve
    from websockets.exceptions import ConnectionClosed

    async def main() -> None:
        clients: set = set()

        async def handler(ws) -> None:  # type: ignore[no-untyped-def]
            clients.add(ws)
            try:
                async for message in ws:
                    data = json.loads(message)["data"]
                    reply = {"text": data["text"], "at": time.time(), "sentAt": data["sentAt"]}
                    broadcast(clients, json.dumps({"event": "msg-from-server", "data": reply}, separators=(",", ":")))
            except ConnectionClosed:
                pass
            finally:
                clients.discard(ws)

        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with serve(handler, host, port, compression=None) as server:
            bound = next(iter(server.sockets)).getsockname()
            print(f"http://{bound[0]}:{bound[1]}/", flush=True)
            await stop.wait()

    asyncio.run(main())


# ----- the load generator ------------------------------------------------------------------------


@dataclass
class Step:
    """What one rate of the ladder measured."""

    server: str
    clients: int
    rate: float
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.delivered * 1e6 if self.delivered else float("nan")

    @property
    def sustained(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.sent > 0 and self.percentile_ms(99) < P99_GOAL_MS


class Load:
    """C raw clients on one server; 10 of them send."""

    def __init__(self, url: str) -> None:
        host_port = url.split("//", 1)[1].rstrip("/")
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.latencies: list[float] = []
        self.clients: list[RawClient] = []

    async def connect(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(64)

        async def one() -> RawClient:
            async with gate:
                _t, client = await loop.create_connection(
                    lambda: RawClient(self.host, self.port, self.latencies), self.host, self.port
                )
                await client.upgraded
                return client

        self.clients += await asyncio.gather(*(one() for _ in range(count)))

    def close(self) -> None:
        for client in self.clients:
            if client.transport is not None:
                client.transport.abort()
        self.clients.clear()

    async def step(self, name: str, rate: float, seconds: float, process: psutil.Process) -> Step:
        """Send at ``rate`` messages/s for ``seconds``, then wait for the last deliveries."""
        step = Step(name, len(self.clients), rate)
        senders = self.clients[:SENDERS]
        before = [c.received for c in self.clients]
        self.latencies.clear()
        for client in self.clients:
            client.record = True
        loop = asyncio.get_running_loop()
        cpu0 = sum(process.cpu_times()[:2])
        start = loop.time()
        total = max(1, round(rate * seconds))

        async def send(k: int) -> None:
            text = f'{{"event":"msg-to-server","data":{{"text":"message {k}","sentAt":{time.monotonic()!r}}}}}'
            senders[k % len(senders)].send_frame(Opcode.TEXT, text.encode())

        await open_loop(rate, total, send)
        step.sent = total
        expected = total * len(self.clients)
        deadline = loop.time() + 3.0
        while loop.time() < deadline:
            got = sum(c.received for c in self.clients) - sum(before)
            if got >= expected:
                break
            await asyncio.sleep(0.02)
        step.seconds = loop.time() - start
        step.cpu_s = sum(process.cpu_times()[:2]) - cpu0
        for client in self.clients:
            client.record = False
        counts = [c.received - b for c, b in zip(self.clients, before, strict=True)]
        step.delivered = sum(counts)
        step.lost = sum(max(0, total - n) for n in counts)
        step.duplicated = sum(max(0, n - total) for n in counts)
        step.latencies = list(self.latencies)
        return step


# ----- orchestration -----------------------------------------------------------------------------


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))


def start_server(kind: str) -> tuple[subprocess.Popen, str]:
    """``python -m labtools serve minichat`` or the peer, in a process of its own; returns its URL."""
    if kind == "labtools":
        command = [sys.executable, "-m", "labtools", "serve", "minichat", "--port", "0"]
    else:
        command = [sys.executable, __file__, "--peer-server"]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, text=True, preexec_fn=_raise_fd_limit
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url.startswith("http://"):
        process.kill()
        raise RuntimeError(f"{kind} server did not start: {url!r}")
    return process, url


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def measure(kind: str, clients: int, rates: list[float], seconds: float) -> tuple[float, list[Step]]:
    """One server process: RSS per idle connection, then the rate ladder."""
    process, url = start_server(kind)
    try:
        server = psutil.Process(process.pid)
        load = Load(url)
        # Warm the server's code paths (first connection, first broadcast) before the baseline.
        await load.connect(SENDERS)
        await load.step(kind, 10, 0.2, server)
        load.close()
        await asyncio.sleep(0.5)
        rss0 = server.memory_info().rss
        await load.connect(clients)
        await asyncio.sleep(1.0)
        rss_per_client = (server.memory_info().rss - rss0) / clients
        steps = []
        for rate in rates:
            steps.append(await load.step(kind, rate, seconds, server))
            await asyncio.sleep(0.3)
        load.close()
        await asyncio.sleep(0.2)  # let the server see the resets before it is told to stop
        return rss_per_client, steps
    finally:
        stop_server(process)


LADDERS = {100: [50, 100, 200, 400, 800], 1000: [5, 10, 20, 40]}
QUICK = {100: [100], 1000: [10]}


async def main(quick: bool) -> int:
    _raise_fd_limit()
    ladders = QUICK if quick else LADDERS
    seconds = 1.5 if quick else 4.0
    print(f"fan-out: {SENDERS} senders, every client receives every message; {os.cpu_count()} cores")
    print(
        f"{'server':9} {'C':>5} {'msg/s':>6} {'deliv/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'lost':>5} {'CPU µs/deliv':>12}"
    )
    summary = []
    failures = 0
    for clients, rates in ladders.items():
        per_server = {}
        for kind in ("labtools", "websockets"):
            rss, steps = await measure(kind, clients, rates, seconds)
            for s in steps:
                print(
                    f"{kind:9} {clients:>5} {s.rate:>6g} {s.per_second:>8.0f} {s.percentile_ms(50):>7.1f} "
                    f"{s.percentile_ms(99):>7.1f} {s.lost + s.duplicated:>5} {s.cpu_us:>12.1f}",
                    flush=True,
                )
                failures += kind == "labtools" and (s.lost + s.duplicated) > 0
            ok = [s for s in steps if s.sustained]
            best = max(ok, key=lambda s: s.rate) if ok else None
            per_server[kind] = (rss, best, steps)
        summary.append((clients, per_server))
    print()
    print(
        f"{'server':9} {'C':>5} {'KB/idle conn':>12} {'max msg/s @p99<100ms':>21} {'deliv/s':>8} {'CPU µs/deliv':>12}"
    )
    for clients, per_server in summary:
        for kind, (rss, best, _steps) in per_server.items():
            rate = f"{best.rate:g}" if best else "none"
            deliv = f"{best.per_second:.0f}" if best else "-"
            cpu = f"{best.cpu_us:.1f}" if best else "-"
            print(f"{kind:9} {clients:>5} {rss / 1024:>12.1f} {rate:>21} {deliv:>8} {cpu:>12}")
        ours, peer = per_server["labtools"], per_server["websockets"]
        # Compare CPU at the rates both ran, over all steps (the per-delivery cost is what matters).
        ratio = sum(s.cpu_s for s in ours[2]) / max(1, sum(s.delivered for s in ours[2]))
        ratio /= sum(s.cpu_s for s in peer[2]) / max(1, sum(s.delivered for s in peer[2]))
        print(
            f"  C={clients}: labtools / bare websockets: CPU per delivery x{ratio:.2f}, "
            f"RSS per idle conn x{ours[0] / peer[0]:.2f}"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one rate per size: a smoke test under 30 s")
    parser.add_argument("--peer-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_server:
        run_peer("127.0.0.1", 0)
    else:
        started = time.monotonic()
        code = asyncio.run(main(args.quick))
        print(f"({time.monotonic() - started:.0f} s)")
        sys.exit(code)
