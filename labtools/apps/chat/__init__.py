"""The private chat app (PROTOCOL.md ``chat``): ``accounts`` (passwords and tokens), ``store``
(SQLite off the event loop) and ``server`` (the events). ``build`` is what ``serve("chat")``
and ``python -m labtools serve chat --db PATH`` call."""

from .server import ChatServer, build

__all__ = ["ChatServer", "build"]
