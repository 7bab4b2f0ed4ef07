"""Lesson 09's servers in a process of their own: ``python -m labtools.experiments.scale_server WHAT``.

* ``broadcast --compression off|on|no-context-takeover``: a plain ``websockets`` server that
  sends every text message it receives to every connection (``websockets.broadcast``), with
  per-message deflate off, on (the websockets default: each connection keeps its compressor
  between messages) or on without context takeover (each message compressed from scratch);
* any app ``lt.serve`` knows by name (``relay`` included, which the CLI does not serve).

Like ``python -m labtools serve``, it prints its URL once listening and ends when its stdin
ends (the parent that holds the pipe died). ``experiments.scale.spawn_server`` starts it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

from .. import cli, serving

COMPRESSION = ("off", "on", "no-context-takeover")


def deflate(setting: str) -> list[ServerPerMessageDeflateFactory] | None:
    """The server's extension factories for ``setting`` (None: compression off)."""
    if setting == "off":
        return None
    # websockets' defaults for compression="deflate": 12-bit server window, memLevel 5.
    return [
        ServerPerMessageDeflateFactory(
            server_no_context_takeover=setting == "no-context-takeover",
            server_max_window_bits=12,
            client_max_window_bits=12,
            compress_settings={"memLevel": 5},
        )
    ]


async def run_broadcast(host: str, port: int, compression: str, stop: asyncio.Event) -> None:
    """Every text message received goes to every open connection."""

    async def handler(connection: ServerConnection) -> None:
        async for message in connection:
            broadcast(server.connections, message)

    async with serve(handler, host, port, extensions=deflate(compression), compression=None) as server:
        sock = next(iter(server.sockets))
        print(f"http://{host}:{sock.getsockname()[1]}/", flush=True)
        await stop.wait()


async def run_app(app: str, host: str, port: int, stop: asyncio.Event) -> None:
    server = await serving.start(serving.build(app), host, port)
    print(server.url, flush=True)
    try:
        await stop.wait()
    finally:
        await server.aclose()


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m labtools.experiments.scale_server")
    parser.add_argument("what", help="broadcast, or an app's name")
    parser.add_argument("--compression", choices=COMPRESSION, default="off")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    stop = asyncio.Event()
    cli.watch_stdin(asyncio.get_running_loop(), stop)
    if args.what == "broadcast":
        await run_broadcast(args.host, args.port, args.compression, stop)
    else:
        await run_app(args.what, args.host, args.port, stop)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
