"""Starting the lesson servers by name, in the kernel (``serve``) or from the CLI.

Every app module exposes ``async def start(host, port, **options)`` returning a running server
with ``url``, ``host``, ``port``, ``traffic`` and ``aclose()``. ``serve`` runs it on the labtools
loop under a name, so running the same cell twice replaces the server instead of failing with
"address already in use", and hands the cell a ``ServerHandle`` with a plain sync API.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from . import runtime

APPS: dict[str, str] = {
    "polling": "labtools.polling.server",
    "minichat": "labtools.apps.minichat",
    "bands": "labtools.apps.bands",
    "tickets": "labtools.apps.tickets",
    "map": "labtools.apps.map",
    "chat": "labtools.apps.chat",
}


def app_module(app: str) -> Any:
    """The module that implements ``app`` (a name of ``APPS``)."""
    if app not in APPS:
        raise ValueError(f"unknown app {app!r}; choose one of {', '.join(APPS)}")
    return importlib.import_module(APPS[app])


class ServerHandle:
    """What a cell holds of a server that runs on the labtools loop."""

    def __init__(self, name: str, server: Any) -> None:
        self.name = name
        self.server = server

    @property
    def url(self) -> str:
        """The server's own address, for clients in this kernel: ``http://127.0.0.1:PORT/``."""
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def ws_url(self) -> str:
        """The WebSocket address of a WebSocket app: ``ws://127.0.0.1:PORT/``."""
        return "ws" + self.url.removeprefix("http")

    def page_url(self) -> str:
        """Where a browser reaches the app's page: through Binder's proxy when there is one."""
        return browser_url(self.port)

    def stats(self) -> dict:
        """A snapshot of the server's traffic counters (PROTOCOL.md's ``/stats`` shape)."""
        return runtime.call(self.server.traffic.as_dict)

    def reset_stats(self) -> None:
        runtime.call(self.server.traffic.reset)

    def stop(self) -> None:
        runtime.run(runtime.unregister_and_close(self.name, self.server))

    async def astop(self) -> None:
        await runtime.arun(runtime.unregister_and_close(self.name, self.server))

    def __repr__(self) -> str:
        return f"<{self.name} server at {self.url}>"


def browser_url(port: int) -> str:
    """``http://127.0.0.1:PORT/`` locally; ``PREFIX/proxy/PORT/`` under JupyterHub or Binder.

    On Binder the browser cannot reach the kernel's ports directly; jupyter-server-proxy
    forwards ``/user/.../proxy/PORT/`` to them (WebSocket upgrades included).
    """
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
    if prefix:
        return f"{prefix.rstrip('/')}/proxy/{port}/"
    return f"http://127.0.0.1:{port}/"


async def astart(
    app: str, *, name: str | None = None, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> ServerHandle:
    module = app_module(app)
    name = name or app

    async def start() -> Any:
        return await module.start(host=host, port=port, **options)

    server = await runtime.register(name, start)
    return ServerHandle(name, server)


def serve(app: str, *, name: str | None = None, host: str = "127.0.0.1", port: int = 0, **options: Any) -> ServerHandle:
    """Start lesson server ``app`` on the labtools loop (replacing one of the same ``name``)."""
    return runtime.run(astart(app, name=name, host=host, port=port, **options))


async def aserve(
    app: str, *, name: str | None = None, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> ServerHandle:
    """``serve`` for top-level ``await``."""
    return await runtime.arun(astart(app, name=name, host=host, port=port, **options))
