"""labtools: the helper package of the course.

It runs the lesson servers and crowds of simulated clients on a background event loop inside
the kernel, counts what crosses the wire, and plots it. Start here::

    import labtools as lt
    server = lt.serve("polling")        # a real server on a free port
    server.stats()                      # its counters, as PROTOCOL.md's /stats gives them
    lt.show(some_function)              # the code that runs, from its source, with file:line
    lt.stop_all()                       # everything stops (also at kernel shutdown)

Its rooms, each a module or a package with one job (CONTRIBUTING.md, "Layout"), from the bottom
up: ``runtime`` (the background loop and the registry of running services), ``measure``
(counters, bytes at the socket), ``httphead`` (HTTP/1.1 heads parsed without I/O), ``handmade``
(lesson 03's WebSocket by hand), ``events`` (the event layer every app runs on), ``cluster``
(several nodes of one app, on Redis), ``polling`` (the REST chat of lessons 01-02), ``apps``
(the lesson apps), ``serving`` (``lt.serve``: the one way to start any server), ``cli`` and
``__main__`` (``python -m labtools serve APP``), ``processes`` (servers in child processes),
``deploy`` (Redis, the nodes and HAProxy of lesson 11), ``sim`` (simulated users),
``experiments`` (the lessons' experiments that stay helpers), ``plots`` (what a cell shows),
``exercises`` (``lt.check``, ``lt.solution``) and ``watch`` (``lt.watch``: a live view of a running server).
"""

from .deploy import alaunch, launch
from .exercises import check, solution
from .plots.source import show
from .runtime import arun, errors, run, shutdown, stop_all
from .serving import ServerHandle, aserve, browser_url, serve
from .watch import awatch, watch

__all__ = [
    "ServerHandle",
    "alaunch",
    "arun",
    "aserve",
    "awatch",
    "browser_url",
    "check",
    "errors",
    "launch",
    "run",
    "serve",
    "show",
    "shutdown",
    "solution",
    "stop_all",
    "watch",
]
