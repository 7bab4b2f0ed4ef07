"""The command line: run one server outside the notebook until Ctrl-C or SIGTERM.

``APP`` is a lesson app's name or the learner's own build function, ``PATH.py:build`` or
``module:function``, served exactly as a lesson app is. ``--broker redis://HOST:PORT[/DB]`` (or
another form of ``cluster.broker``) makes the server one node of several sharing through that
Redis (its adapter, attached after the build: the app's code is the same), ``--node NAME``
names it (lesson 11; ``labtools.deploy`` starts such nodes).

The server runs on uvloop's event loop when uvloop is installed, else on asyncio's own;
``LABTOOLS_LOOP=asyncio`` or ``LABTOOLS_LOOP=uvloop`` chooses (``loop_factory``). Only these
processes: the kernel's labtools loop (``runtime``) is asyncio's, whatever is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from . import serving
from .cluster.broker import check_broker_url

#: The environment variable that chooses a server process's event loop (``loop_factory``).
LOOP_ENV = "LABTOOLS_LOOP"
LOOPS = ("asyncio", "uvloop")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m labtools", description="The course's lesson servers.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run a lesson server (or yours) until Ctrl-C or SIGTERM")
    serve.add_argument("app", type=app_name, metavar="APP",
                       help=f"{', '.join(serving.APPS)}, or your own build function: PATH.py:build or module:function")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port (the default)")
    serve.add_argument("--db", default=None, help="SQLite file for the chat (default: temporary)")
    serve.add_argument("--broker", default=None, type=broker_url, metavar="URL",
                       help="share through this Redis: redis://[[USER]:PASSWORD@]HOST:PORT[/DB], rediss://... or "
                            "unix:///PATH[?db=N]; a password also from $LABTOOLS_BROKER_PASSWORD "
                            "(default: one process, nothing else)")
    serve.add_argument("--node", default=None, metavar="NAME",
                       help="this node's name (default: host, pid and a random suffix)")
    # labtools.processes: stop when stdin reaches end of file (the parent that holds its pipe died).
    serve.add_argument("--exit-with-stdin", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def app_name(app: str) -> str:
    """``APP``: a lesson app's name or a build function's place, refused with the forms to use."""
    if app in serving.APPS or serving.is_spec(app):
        return app
    raise argparse.ArgumentTypeError(f"{app!r} is neither a lesson app ({', '.join(serving.APPS)}) "
                                     "nor a build function given as PATH.py:build or module:function")


def broker_url(url: str) -> str:
    """``--broker``'s value, refused with the form it should have."""
    try:
        return check_broker_url(url)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Set ``stop`` once stdin ends: the parent holding the other end of the pipe is gone.

    Works wherever pipes do (Linux, macOS), also when the parent was killed with SIGKILL.
    """
    fd = sys.stdin.fileno()

    def readable() -> None:
        try:
            more = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            more = b""
        if not more:
            loop.remove_reader(fd)
            stop.set()

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)


async def serve(
    app: str,
    host: str,
    port: int,
    db: str | None,
    exit_with_stdin: bool = False,
    broker: str | None = None,
    node: str | None = None,
) -> None:
    options: dict[str, Any] = {"db": db} if db is not None else {}
    if db is not None and app != "chat":
        raise SystemExit(f"--db is for the chat app, not {app!r}")
    try:
        server = serving.build(app, broker=broker, node=node, **options)
        server = await serving.start(server, host, port)
    except (ValueError, TypeError, ConnectionError) as error:  # no such file, a chat node without --db...
        raise SystemExit(f"labtools serve {app}: {error}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if exit_with_stdin:
        watch_stdin(loop, stop)
    settle_heap()
    print(server.url, flush=True)
    try:
        await stop.wait()
    finally:
        await server.aclose()


def settle_heap() -> None:
    """Once the server is up: collect what starting left behind, then freeze every object that
    remains (modules, classes, the app's state) out of the garbage collector's sight.

    Why: a server process holds some 50,000 objects from its start that never become garbage,
    and every full pass of the collector walks all of them. Measured under the peers' chat load
    (P=100, 8 s): 7 full passes took 200 ms, the longest 43 ms, which every message in flight
    then waited for; frozen, the same passes took 14 ms, the longest 4. The collector still
    finds the cycles made after this point (``gc.freeze`` only sets aside what exists now).
    """
    gc.collect()
    gc.freeze()


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop a server process runs on: uvloop's when it is installed, else asyncio's
    (``None``: the loop ``asyncio.run`` makes). ``$LABTOOLS_LOOP`` chooses explicitly: ``asyncio``,
    or ``uvloop`` (refused in one line when uvloop is not installed); unset or empty, the default.

    Why uvloop for a server: its event loop and its transports are written in C on libuv, so the
    per-frame work that is not the app's (waking up on a readable socket, the read, the protocol
    callback, the write) costs less CPU than asyncio's pure-Python selector loop, and a server
    process spends most of its time there. Only the processes of ``python -m labtools serve`` (a
    deployment's nodes and ``processes.spawn``'s children are such processes) run on it: the
    kernel's own loop is ipykernel's, and labtools' loop in the kernel (``runtime``) stays
    asyncio's, which is what every learner has.
    """
    choice = os.environ.get(LOOP_ENV, "").strip()
    if choice not in ("", *LOOPS):
        raise SystemExit(f"labtools serve: {LOOP_ENV}={choice!r} is not an event loop: "
                         f"choose {' or '.join(LOOPS)} (unset: uvloop when installed, else asyncio)")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SystemExit(f"labtools serve: {LOOP_ENV}=uvloop, but uvloop is not installed here "
                             f"(pip install uvloop; not on Windows), or set {LOOP_ENV}=asyncio") from None
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(args.app, args.host, args.port, args.db, args.exit_with_stdin, args.broker, args.node))
    sys.stdout.flush()
    return 0
