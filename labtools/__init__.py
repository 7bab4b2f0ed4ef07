"""labtools: the helper package of the course.

It runs the lesson servers and crowds of simulated clients on a background event loop inside
the kernel, counts what crosses the wire, and plots it. Start here::

    import labtools as lt
    server = lt.serve("polling")        # a real server on a free port
    server.stats()                      # its counters, as PROTOCOL.md's /stats gives them
    lt.show(some_function)              # the code that runs, from its source, with file:line
    lt.stop_all()                       # everything stops (also at kernel shutdown)
"""

from .exercises import check, solution
from .plots.source import show
from .runtime import arun, errors, run, shutdown, stop_all
from .serving import ServerHandle, aserve, browser_url, serve

__all__ = [
    "ServerHandle",
    "arun",
    "aserve",
    "browser_url",
    "check",
    "errors",
    "run",
    "serve",
    "show",
    "shutdown",
    "solution",
    "stop_all",
]
