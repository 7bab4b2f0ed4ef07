"""A live view of a running server, embedded in the notebook (``lt.watch``), bottom up:
``sampler`` (the server's counters read a few times a second and turned into rates: a
``Sample``), ``app`` (the watch itself, a small WebSocket app of the course's event layer that
samples on the labtools loop and pushes each sample to its page) and ``view`` (``watch``: the
app served beside the watched server under a name, shown in the cell as its page).
"""

from .view import View, awatch, watch

__all__ = ["View", "awatch", "watch"]
