"""``RedisAdapter``: an event server becomes one node of an app, through Redis.

The other half of ``labtools.events.adapter``: what ``--broker URL`` and ``nodes=N`` attach to
a server after its app's ``build()`` (``server.use(RedisAdapter(url))``), so that the app's
code is the same on one node or many. It gives the server:

* a ``RedisBus`` (pub/sub): broadcasts of events that are not recoverable, fire and forget,
  and the app's own small talk between nodes (the chat's presence);
* a ``RedisLog`` (a Stream): the changes and recoverable events, in one order, kept.

Keys and channels are named after the server's name (``labtools:NAME:...``): two servers of
one name on one Redis (and database number) are one app and share them, which is what several
nodes of one app want, and what two different apps must avoid by naming themselves apart.
"""

from __future__ import annotations

from ..events.adapter import default_node
from .broker import check_broker_url, redacted
from .bus import RedisBus
from .redis_log import RedisLog


class RedisAdapter:
    """The adapter of a node of an app whose nodes meet at the Redis at ``url``."""

    def __init__(self, url: str, node: str | None = None) -> None:
        """``url``: the broker (``broker.FORMS``); ``node``: this node's name (default: host, process, random)."""
        self.url = check_broker_url(url)
        self.node = node or default_node()

    def bus(self, app: str) -> RedisBus:
        return RedisBus(self.url, app, self.node)

    def log(self, app: str, *, keep: int) -> RedisLog:
        return RedisLog(self.url, app, keep=keep)

    def __repr__(self) -> str:
        return f"<RedisAdapter {redacted(self.url)} node={self.node}>"
