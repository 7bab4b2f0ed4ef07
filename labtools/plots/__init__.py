"""What a cell shows: ``plots.traffic`` (crowds: requests, bytes, latency, sequence diagrams,
cost models), ``plots.apps`` (the apps' lessons: votes, tickets, markers) and ``plots.embed``
(app pages side by side in the notebook)."""

from . import apps, embed, traffic

__all__ = ["apps", "embed", "traffic"]
