"""Shared state changes: the app's functions that every node applies in the same order.

An app whose state is shared (the band votes, the ticket queue) registers each way of changing
it with ``@server.change``; a handler asks for one with ``await server.update(fn, data,
sender=client)``. The server appends ``(fn's name, data)`` to its log (``log``), and every node
calls ``fn(state, data[, sender])`` on its own copy as the entry comes by, in the log's order:
two desks asking for "the next ticket" at once on two nodes get two different tickets, and every
node ends with the same queue. ``update`` returns what ``fn`` returned on this node.

A change must therefore be deterministic: the same state and data give the same result on every
node (draw random ids and read clocks in the handler, before ``update``, and pass them in the
data), and it validates before it changes anything (an ``EventError`` it raises is raised on
every node alike, and the sender gets it). Inside a change, ``server.broadcast`` is not sent at
once: it is collected (``Push``) and each node delivers it to its own sockets once the change
is applied, so a change's broadcasts reach every node exactly once, in the log's order.

``Changes`` is the app's machine for ``replicated.Replicated``: besides the registered
functions it applies the recoverable broadcasts made outside any change (``"b"`` entries).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .replicated import Applied, Push

if TYPE_CHECKING:  # only for the type: a Client is looked up by id, never imported at run time
    from .connection import Client

#: ``fn(state, data)`` or ``fn(state, data, sender)``: sender is the ``Client`` that asked, on
#: its own node, and None on the others.
Change = Callable[..., Any]


class Changes:
    """The registered changes of one app and the pushes of the change being applied."""

    def __init__(self, state: Any, client_of: Callable[[int], Client | None]) -> None:
        """``client_of(id)``: this node's client of that id, if still connected."""
        self.state = state
        self.client_of = client_of
        self.functions: dict[str, tuple[Change, bool]] = {}
        self._pushes: list[Push] | None = None

    def register(self, fn: Change) -> str:
        """Register ``fn`` under its name (the name is what the log carries)."""
        name = fn.__name__
        if name in self.functions and self.functions[name][0] is not fn:
            raise ValueError(f"two changes are called {name!r}: the log names a change by its function's name")
        self.functions[name] = (fn, len(inspect.signature(fn).parameters) >= 3)
        return name

    def name_of(self, fn: Change | str) -> str:
        name = fn if isinstance(fn, str) else fn.__name__
        if name not in self.functions:
            raise ValueError(f"{name!r} is not a change of this server: register it with @server.change")
        return name

    @property
    def applying(self) -> bool:
        """Whether a change is being applied now (its broadcasts are collected, not sent)."""
        return self._pushes is not None

    def collect(self, push: Push) -> None:
        assert self._pushes is not None
        self._pushes.append(push)

    def apply(self, command: dict[str, Any], origin: int | None) -> Applied:
        """One entry of the log: a change (its result and the broadcasts it made) or a broadcast."""
        sender = self.client_of(origin) if origin is not None else None
        if "b" in command:  # a recoverable broadcast made outside any change
            exclude = sender if command.get("x") else None
            return Applied(pushes=[Push(command["b"], command.get("d"), command.get("to"), exclude)])
        fn, wants_sender = self.functions[command["c"]]
        self._pushes = pushes = []
        try:
            result = fn(self.state, command.get("d"), sender) if wants_sender else fn(self.state, command.get("d"))
        finally:
            self._pushes = None
        return Applied(result, pushes)

    def snapshot(self) -> Any:
        """The state as JSON data (None: a stateless app): ``state.snapshot()``, else its attributes."""
        state = self.state
        if state is None:
            return None
        if hasattr(state, "snapshot"):
            return state.snapshot()
        return dict(vars(state))

    def restore(self, data: Any) -> None:
        state = self.state
        if hasattr(state, "restore"):
            state.restore(data)
        else:
            vars(state).update(data)
