"""Every server of the course, the learner's own included, starts here and nowhere else.

A server is anything with the shape ``Server`` below: ``await start(host, port)``, ``url``,
``host``, ``port``, ``traffic`` and an idempotent ``aclose()``. ``serve`` accepts

* the name of a lesson app (``"polling"``, ``"minichat"``, ...): its module's ``build(**options)``
  makes the server;
* a learner's build function by where it lives: ``"my_app.py:build"`` (a file) or
  ``"my_package.my_app:build"`` (an importable module), exactly as ``python -m labtools serve``
  takes it;
* a build function of the learner's (``serve(my_build, **options)``), called with the options;
* a server object not yet started (an ``EventServer`` with the learner's handlers, a
  ``HandmadeServer``);
* a start coroutine of the learner's, ``async def start(host, port)``, that starts a plain
  ``websockets`` server (``return await websockets.asyncio.server.serve(handler, host, port)``):
  lesson 04's smallest chat, before any labtools. labtools does not meter such a server.

It starts the server on the labtools loop under a name, so running the same cell twice replaces
the server instead of failing with "address already in use", and hands the cell a
``ServerHandle`` with a plain sync API.

How a server talks to other nodes is decided here, after the app's ``build()`` and never in it:
``broker=URL`` attaches a ``RedisAdapter`` (``server.use``), so this kernel's server is one node
of an app whose other nodes use the same Redis. ``serve("chat", nodes=2)`` (or
``serve("my_app.py:build", nodes=2)``) deploys the app as several processes instead (lesson 11):
Redis, the nodes and HAProxy in front, a ``labtools.deploy.Deployment``; the cell gets a
``DeploymentHandle`` whose ``url`` is the front door.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from websockets.asyncio.server import Server as WebsocketsServer

from . import runtime
from .cluster.adapter import RedisAdapter
from .deploy.deployment import Deployment
from .events.adapter import Adapter, LocalAdapter
from .measure.metrics import Traffic

T = TypeVar("T")

APPS: dict[str, str] = {
    "polling": "labtools.polling.server",
    "minichat": "labtools.apps.minichat",
    "bands": "labtools.apps.bands",
    "tickets": "labtools.apps.tickets",
    "map": "labtools.apps.map",
    "chat": "labtools.apps.chat",
}
#: Servers of a lesson's experiment only, served in the kernel by name but not by the CLI
#: (PROTOCOL.md's apps each have a page; these have none).
EXPERIMENTS: dict[str, str] = {
    "relay": "labtools.apps.relay",
}


@runtime_checkable
class Server(Protocol):
    """What every course server is, whichever module or learner made it."""

    url: str
    host: str
    port: int
    traffic: Traffic

    async def start(self, host: str, port: int) -> Any: ...

    async def aclose(self) -> None: ...


#: ``PATH.py:function`` or ``package.module:function``: a learner's build function by where it lives.
SPEC = re.compile(r"(?P<where>[^:]+):(?P<function>[A-Za-z_][A-Za-z0-9_]*)")


def app_module(app: str) -> Any:
    """The module that implements ``app`` (a name of ``APPS`` or ``EXPERIMENTS``)."""
    modules = APPS | EXPERIMENTS
    if app not in modules:
        raise ValueError(f"unknown app {app!r}; choose one of {', '.join(modules)}, "
                         "or give your own build function as PATH.py:build or module:function")
    return importlib.import_module(modules[app])


def is_spec(app: str) -> bool:
    """Whether ``app`` names a build function by where it lives (``PATH.py:build``, ``module:function``)."""
    return SPEC.fullmatch(app) is not None


def absolute_spec(app: str) -> str:
    """``app`` with its file made absolute (``my_app.py:build`` -> ``/home/.../my_app.py:build``),
    so that processes started elsewhere find the same file; a lesson app's name or a module as is."""
    match = SPEC.fullmatch(app)
    if match is None or not match["where"].endswith(".py"):
        return app
    return f"{Path(match['where']).resolve()}:{match['function']}"


def builder(app: str) -> Callable[..., Any]:
    """The build function ``app`` names: a lesson app's, or a learner's by ``PATH.py:build`` or
    ``module:function``. A learner's file is loaded afresh each time (it may have been edited)."""
    match = SPEC.fullmatch(app)
    if match is None:
        return app_module(app).build
    where, function = match["where"], match["function"]
    if where.endswith(".py"):
        module = load_file(Path(where))
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as error:
            raise ValueError(f"{app}: cannot import module {where!r} ({error})") from None
    build_function = getattr(module, function, None)
    if not callable(build_function):
        raise ValueError(f"{app}: {where} has no function {function!r}")
    return build_function


def load_file(path: Path) -> Any:
    """Import the learner's file ``path`` as a module of its own (registered under a name of its
    path, so that dataclasses and pickling find it)."""
    path = path.resolve()
    if not path.is_file():
        raise ValueError(f"{path}: no such file (write it first, e.g. with %%writefile {path.name})")
    name = "labtools_app_" + re.sub(r"\W", "_", str(path.with_suffix("")))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


class PlainWebsockets:
    """A plain ``websockets`` server that a learner's start coroutine started, in ``Server``'s shape.

    It has no ``traffic``: only labtools' own servers count their bytes.
    """

    def __init__(self, start: Callable[[str, int], Awaitable[WebsocketsServer]], name: str) -> None:
        self.starter = start
        self.name = name
        self.websockets: WebsocketsServer | None = None
        self.host = ""
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        server = await self.starter(host, port)
        if not isinstance(server, WebsocketsServer):
            raise TypeError(f"{self.name}() returned {server!r}: a start coroutine returns websockets' serve(...)")
        self.websockets = server
        self.host, self.port = next(iter(server.sockets)).getsockname()[:2]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def aclose(self) -> None:
        server, self.websockets = self.websockets, None
        if server is not None:
            server.close()
            await server.wait_closed()


def build(app: str | Callable[..., Server] | Server, *, broker: str | None = None, node: str | None = None,
          **options: Any) -> Server:
    """The server ``app`` names, makes or is, not started yet; with ``broker``, one node of an
    app whose nodes share that Redis (``node`` names it). The app's code is the same either way:
    only the server's adapter differs, attached here, after the app's build."""
    server = make(app, **options)
    if broker is not None:
        use_adapter(server, RedisAdapter(broker, node))
    elif node is not None:
        use_adapter(server, LocalAdapter(node))
    return server


def use_adapter(server: Server, adapter: Adapter) -> None:
    use = getattr(server, "use", None)
    if use is None:
        raise TypeError(f"{type(server).__name__} has no adapter (an EventServer or the polling server has): "
                        "it cannot run as one of several nodes")
    use(adapter)


def page_beside(server: Server, path: Path) -> None:
    """A learner's ``page=Path("my_page")`` is the folder beside their build's file (``path``),
    wherever the server runs from."""
    page = getattr(server, "page", None)
    if isinstance(page, Path) and not page.is_absolute():
        server.page = path.resolve().parent / page  # type: ignore[attr-defined]


def make(app: str | Callable[..., Server] | Server, **options: Any) -> Server:
    """The server ``app`` names, makes or is (see the module's docstring)."""
    if isinstance(app, str):
        build_function = builder(app)
        server = make(build_function, **options)
        if is_spec(app):
            page_beside(server, Path(inspect.getfile(build_function)))
        return server
    if isinstance(app, Server):
        if options:
            raise TypeError(f"{sorted(options)}: options go to an app's name or a build function, not a server")
        return app
    if inspect.iscoroutinefunction(app):
        if options:
            raise TypeError(f"{sorted(options)}: a start coroutine takes only host and port")
        return PlainWebsockets(app, default_name(app))  # type: ignore[return-value]
    if callable(app):
        server = app(**options)
        if not isinstance(server, Server):
            raise TypeError(f"{getattr(app, '__name__', app)!r} returned {server!r}, not a server (start, url, aclose)")
        return server
    raise TypeError(f"serve() takes an app's name, a build function or a server, not {app!r}")


def deployable(app: Any, options: dict[str, Any]) -> str:
    """What ``nodes=`` deploys: a lesson app's name, or a learner's build by where it lives (its
    file made absolute). Every node is a process of its own that imports the build function, so
    a function defined in a cell (which no other process can import) is refused."""
    if not isinstance(app, str):
        what = getattr(app, "__name__", type(app).__name__)
        raise ValueError(f"nodes= starts processes that import your build function, and {what!r} lives in this "
                         "kernel only: write it to a file (%%writefile my_app.py) and serve "
                         '"my_app.py:build" with nodes=')
    if not (app in APPS or is_spec(app)):
        raise ValueError(f"nodes= deploys a lesson app ({', '.join(APPS)}) or your build function as "
                         f"PATH.py:build or module:function, not {app!r}")
    if is_spec(app) and options:
        raise TypeError(f"{sorted(options)}: with nodes=, your build() is called with no options "
                        "(each node runs it as it is)")
    builder(app)  # fail here, with the reason, rather than in every node's process
    return absolute_spec(app)


def default_name(app: str | Callable[..., Server] | Server) -> str:
    """The registry name of ``app`` when the cell gives none: re-running replaces the same one."""
    if isinstance(app, str):
        return app
    return str(getattr(app, "name", None) or getattr(app, "__name__", None) or type(app).__name__.lower())


async def start(server: Server, host: str = "127.0.0.1", port: int = 0) -> Server:
    """Start ``server``; a server that fails to start is closed again (its files, its port)."""
    try:
        await server.start(host, port)
    except BaseException:
        await server.aclose()
        raise
    return server


class Handle:
    """What a cell holds of anything serving an app, one server or a deployment: its name in
    the runtime, its address (``url``, ``port``, ``ws_url``, ``page_url``) and ``stop``."""

    def __init__(self, name: str, target: Any) -> None:
        self.name = name
        self.target = target

    @property
    def url(self) -> str:
        """The address for clients in this kernel: ``http://127.0.0.1:PORT/``."""
        return self.target.url

    @property
    def port(self) -> int:
        return self.target.port

    @property
    def ws_url(self) -> str:
        """The WebSocket address of a WebSocket app: ``ws://127.0.0.1:PORT/``."""
        return "ws" + self.url.removeprefix("http")

    def page_url(self) -> str:
        """Where a browser reaches the app's page: through Binder's proxy when there is one."""
        return browser_url(self.port)

    def stop(self) -> None:
        runtime.run(runtime.unregister_and_close(self.name, self.target))

    async def astop(self) -> None:
        await runtime.arun(runtime.unregister_and_close(self.name, self.target))


class ServerHandle(Handle):
    """What a cell holds of a server that runs on the labtools loop."""

    def __init__(self, name: str, server: Server) -> None:
        super().__init__(name, server)
        self.server = server

    def read(self, fn: Callable[[Any], T]) -> T:
        """``fn(state)`` on the loop thread: read the app's state without racing its handlers."""
        return runtime.call(lambda: fn(self.server.state))  # type: ignore[attr-defined]

    @property
    def traffic(self) -> Traffic:
        """The server's live counters; a plain ``websockets`` server has none."""
        traffic = getattr(self.server, "traffic", None)
        if traffic is None:
            raise TypeError(f"{self.name} is a plain websockets server: labtools only meters its own servers")
        return traffic

    def stats(self) -> dict:
        """A snapshot of the server's traffic counters (PROTOCOL.md's ``/stats`` shape)."""
        return runtime.call(self.traffic.as_dict)

    def reset_stats(self) -> None:
        runtime.call(self.traffic.reset)

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


class DeploymentHandle(Handle):
    """What a cell holds of a deployed app (``serve(APP, nodes=N)``): ``url`` is the front door,
    ``node_urls`` the nodes', and ``deployment`` the deployment itself (``kill``, ``restart_node``,
    ``redis``)."""

    def __init__(self, name: str, deployment: Deployment) -> None:
        super().__init__(name, deployment)
        self.deployment = deployment

    @property
    def node_urls(self) -> list[str]:
        """Each node's own address (behind the front door)."""
        return self.deployment.node_urls

    def __repr__(self) -> str:
        return f"<{self.name}: {len(self.node_urls)} nodes behind {self.url}>"


async def astart(
    app: str | Callable[..., Server] | Server,
    *,
    name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    nodes: int | None = None,
    broker: str | None = None,
    **options: Any,
) -> ServerHandle | DeploymentHandle:
    """Build and start ``app`` on the running labtools loop under ``name``, replacing an old one;
    with ``nodes``, deploy it as that many processes behind a front door on ``port``."""
    name = name or default_name(app)
    if nodes is not None:
        deployment = await Deployment.start(deployable(app, options), nodes=nodes, broker=broker, name=name,
                                            host=host, port=port, **options)
        return DeploymentHandle(name, deployment)

    async def make() -> Server:
        return await start(build(app, broker=broker, **options), host, port)

    return ServerHandle(name, await runtime.register(name, make))


def serve(
    app: str | Callable[..., Server] | Server,
    *,
    name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    nodes: int | None = None,
    broker: str | None = None,
    **options: Any,
) -> ServerHandle | DeploymentHandle:
    """Start ``app`` (a lesson app's name, a build function or a server) on the labtools loop.

    A server of the same ``name`` (by default the app's) is stopped first, so re-running the
    cell replaces it. ``nodes=N`` deploys the app (a lesson app's name, or ``"my_app.py:build"``)
    as N processes sharing through Redis (``broker``, or one started for them) behind HAProxy,
    and returns a ``DeploymentHandle``; ``broker`` alone makes this kernel's server one node
    of an app whose nodes share that Redis (its adapter, attached after the build).
    """
    return runtime.run(astart(app, name=name, host=host, port=port, nodes=nodes, broker=broker, **options))


async def aserve(
    app: str | Callable[..., Server] | Server,
    *,
    name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    nodes: int | None = None,
    broker: str | None = None,
    **options: Any,
) -> ServerHandle | DeploymentHandle:
    """``serve`` for top-level ``await``."""
    return await runtime.arun(astart(app, name=name, host=host, port=port, nodes=nodes, broker=broker, **options))
