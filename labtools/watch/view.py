"""``lt.watch(server)``: the watch served beside a running server, shown in the cell as its page.

It is registered with the runtime under a name (``watch NAME`` by default), like every server,
so running the cell again replaces the view; ``lt.stop_all()`` stops it, and so does stopping
(or re-serving) the watched server. The page comes from ``page_url()``: on Binder, through the
server proxy, like the lesson apps' pages.
"""

from __future__ import annotations

import html

from .. import runtime
from ..serving import ServerHandle, astart
from .app import PERIOD, build
from .sampler import Sample

WIDTH = "100%"
HEIGHT = 460


class View(ServerHandle):
    """What ``watch`` returns: the watch's own server, which a cell shows as its page."""

    def __init__(self, handle: ServerHandle, watched: ServerHandle) -> None:
        super().__init__(handle.name, handle.server)
        self.watched = watched

    def samples(self) -> list[Sample]:
        """The samples the page can draw now (the last two minutes), read on the loop thread."""
        return self.read(list)

    def _repr_html_(self) -> str:
        src = html.escape(self.page_url(), quote=True)
        title = html.escape(f"live view of {self.watched.name}", quote=True)
        return (f'<iframe src="{src}" title="{title}" width="{WIDTH}" height="{HEIGHT}" '
                'style="border:1px solid #ccc;border-radius:4px"></iframe>')

    def __repr__(self) -> str:
        return f"<{self.name}: a live view of {self.watched.name}, at {self.url}>"


async def start(server: ServerHandle, name: str | None, period: float) -> View:
    """On the loop: check that ``server`` runs and has counters, then serve its watch."""
    if not isinstance(server, ServerHandle):
        raise TypeError(f"watch() takes what lt.serve returned for one server, not {server!r}")
    if getattr(server.server, "traffic", None) is None:
        raise TypeError(f"{server.name} is a plain websockets server: it counts nothing to watch")
    if not 0.05 <= period <= 10:
        raise ValueError(f"period must be between 0.05 and 10 seconds, not {period!r}")
    if runtime.services().get(server.name) is not server.server:
        raise ValueError(f"{server.name} is not running: serve it again, then watch it")
    name = name or f"watch {server.name}"
    handle = await astart(build(server, name=name, period=period), name=name)
    assert isinstance(handle, ServerHandle)
    return View(handle, server)


def watch(server: ServerHandle, *, name: str | None = None, period: float = PERIOD) -> View:
    """A live view of ``server`` (what ``lt.serve`` returned): requests, bytes and open
    connections per second, and the share of empty answers for the polling server, sampled
    every ``period`` seconds. The cell shows it; running the cell again replaces it."""
    return runtime.run(start(server, name, period))


async def awatch(server: ServerHandle, *, name: str | None = None, period: float = PERIOD) -> View:
    """``watch`` for top-level ``await``."""
    return await runtime.arun(start(server, name, period))
