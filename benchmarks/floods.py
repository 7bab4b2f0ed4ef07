"""What a flood costs a bystander: the figures behind the hardening tests.

    .venv/bin/python benchmarks/floods.py            # the full run (about a minute)
    .venv/bin/python benchmarks/floods.py --quick    # a CI smoke pass (about 15 s)

The tests prove that under every flood the servers were probed with a bystander is still
answered and the server's buffers stay bounded; they do not time anything. This script measures
how long the bystander waits. The mini chat runs in its own process (``processes.spawn``), and
so does each flood (this script again, with ``--flood NAME URL``), so that neither the server
nor the bystander shares an event loop with the attacker; a bystander sends acknowledged
messages (``request``) one after the other and records each round trip, first alone, then
while one flood runs:

* **big frames**: 8 clients each send a 0.8 MB frame 4 times a second (under the frame rate
  limit; the byte budget, taken before parsing, refuses most of them unparsed);
* **deaf pinger**: one raw client sends pings as fast as it can and never reads a pong;
* **junk**: one client sends text that is not JSON as fast as it can;
* **deaf listeners**: 100 clients that never read while the bystander's messages are broadcast.

Reported per flood: the bystander's p50 / p99 round trip and their ratio to the quiet run,
how many round trips failed, and the server's RSS at the end. The figures vary with the
machine; the ratios are what to read.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, no install needed

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from labtools import processes, runtime
from labtools.events import AckError, EventClient
from labtools.measure.metrics import LatencyLog

Flood = Callable[[str, asyncio.Event], Awaitable[None]]


async def big_frames(url: str, stop: asyncio.Event, clients: int = 8, per_second: float = 4) -> None:
    frame = json.dumps({"event": "msg-to-server", "data": {"text": "x", "pad": "y" * 800_000}})

    async def one() -> None:
        with contextlib.suppress(ConnectionClosed, OSError):
            async with connect(url, max_size=None, compression=None) as ws:
                while not stop.is_set():
                    await ws.send(frame)
                    await asyncio.sleep(1 / per_second)

    await asyncio.gather(*(one() for _ in range(clients)))


async def deaf_pinger(url: str, stop: asyncio.Event) -> None:
    """A raw socket: the upgrade, then masked pings forever, never reading an answer."""
    host, port = url.removeprefix("ws://").rstrip("/").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer.write(
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    ping = bytes([0x89, 0x80 | 125]) + b"\x00\x00\x00\x00" + b"p" * 125  # zero mask: the payload as is
    with contextlib.suppress(ConnectionError, OSError):
        while not stop.is_set():
            writer.write(ping * 64)
            await writer.drain()
    writer.close()


async def junk(url: str, stop: asyncio.Event) -> None:
    with contextlib.suppress(ConnectionClosed, OSError):
        async with connect(url, compression=None) as ws:
            while not stop.is_set():
                await ws.send("{not json")
                await asyncio.sleep(0)


async def deaf_listeners(url: str, stop: asyncio.Event, clients: int = 100) -> None:
    """Clients that connect and never read: the bystander's broadcasts pile up for them."""
    host, port = url.removeprefix("ws://").rstrip("/").split(":")
    writers = []
    for _ in range(clients):
        _reader, writer = await asyncio.open_connection(host, int(port))
        writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.write(
            f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        writer.transport.pause_reading()
        writers.append(writer)
    await stop.wait()
    for writer in writers:
        writer.close()


FLOODS: dict[str, Flood] = {
    "big frames": big_frames,
    "deaf pinger": deaf_pinger,
    "junk": junk,
    "deaf listeners": deaf_listeners,
}


async def bystander(url: str, seconds: float) -> tuple[LatencyLog, int]:
    """Acknowledged messages, one after the other, for ``seconds``: round trips and failures.

    The text is a kilobyte, so a broadcast to listeners that never read fills their buffers.
    """
    log, failed = LatencyLog(), 0
    client = await EventClient.connect(url, name="bystander")
    try:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            start = time.perf_counter()
            try:
                await client.request("msg-to-server", {"text": "b" * 1000}, timeout=5)
                log.add(time.perf_counter() - start)
            except (AckError, TimeoutError, ConnectionError):
                failed += 1
            await asyncio.sleep(0.01)
    finally:
        await client.aclose()
    return log, failed


def start_flood(name: str, url: str) -> subprocess.Popen:
    """The flood ``name`` in a process of its own, until it is killed (an attacker gets no
    clean shutdown; a flood blocked on a full socket could not notice one anyway)."""
    return subprocess.Popen([sys.executable, __file__, "--flood", name, url])


def run_flood(name: str, url: str) -> None:
    """In the flood's own process: flood until killed."""

    async def main() -> None:
        await FLOODS[name](url, asyncio.Event())

    asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s per flood: a CI smoke pass")
    parser.add_argument("--flood", nargs=2, metavar=("NAME", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood:
        run_flood(*args.flood)
        return 0
    seconds = 2.0 if args.quick else 8.0
    print(f"{'flood':<16}{'p50 ms':>8}{'p99 ms':>8}{'p50 x':>7}{'p99 x':>7}{'failed':>8}{'server RSS MB':>15}")
    quiet = None
    worst_failed = 0
    for name, flood in [("(none)", None), *FLOODS.items()]:
        server = processes.spawn("minichat", name="floods-minichat")  # a fresh server per flood
        url = "ws" + server.url.removeprefix("http")
        attacker = start_flood(name, url) if flood is not None else None
        try:
            time.sleep(1.0 if attacker is not None else 0)  # let the flood build up
            log, failed = runtime.run(bystander(url, seconds))
        finally:
            if attacker is not None:
                attacker.kill()
                attacker.wait()
        summary = log.summary()
        quiet = quiet or summary
        rss = server.rss() / 1e6
        print(f"{name:<16}{summary['p50_ms']:8.2f}{summary['p99_ms']:8.2f}"
              f"{summary['p50_ms'] / quiet['p50_ms']:7.1f}{summary['p99_ms'] / quiet['p99_ms']:7.1f}"
              f"{failed:8d}{rss:15.1f}")
        worst_failed = max(worst_failed, failed)
        server.stop()
    runtime.shutdown()
    # A bystander that is not answered is a failed hardening, not a figure.
    return 0 if worst_failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
