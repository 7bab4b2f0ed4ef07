"""The private chat app (PROTOCOL.md ``chat``): ``accounts`` (passwords and tokens), ``store``
(SQLite off the event loop), ``presence`` (who is online, coalesced), ``throttle`` (slowing
password guessing), ``mailbox`` (pushes with offsets, and ``resume``), ``nodes`` (the chat as
several nodes sharing one database and a Redis bus) and ``server`` (the events and their
``ChatLimits``). ``build`` is what ``serve("chat")`` and ``python -m labtools serve chat --db PATH``
call."""

from .server import ChatLimits, ChatState, build

__all__ = ["ChatLimits", "ChatState", "build"]
