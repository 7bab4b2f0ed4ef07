"""What a cell shows: ``plots.traffic`` (crowds: requests, bytes, latency, sequence diagrams,
cost models), ``plots.apps`` (the apps' lessons: votes, tickets, markers), ``plots.embed``
(app pages side by side in the notebook), ``plots.nodes`` (lesson 11's
latency by path and CPU per delivery), ``plots.source`` (``lt.show``) and ``plots.figures``
(what every figure goes through before a cell shows it).

The submodules load on first use: a server started with ``python -m labtools serve`` imports
labtools but draws nothing, and must not pay for matplotlib (tens of megabytes).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["apps", "embed", "figures", "nodes", "source", "traffic"]


def __getattr__(name: str) -> ModuleType:
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
