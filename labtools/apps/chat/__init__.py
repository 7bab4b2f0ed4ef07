"""The private chat app (PROTOCOL.md ``chat``), one module per job:

* ``server``: the events, ``ChatState`` (what the handlers share), ``ChatLimits`` and ``build``;
* ``session``: ``ChatSession``, what the chat keeps per connection;
* ``accounts``: passwords (argon2, a bounded hashing queue) and signed tokens;
* ``throttle``: slowing password guessing down, per account, address and connection;
* ``store``: users and messages in SQLite, off the event loop, with group commit;
* ``directory``: every registered user and email in memory, the one owner of both;
* ``presence``: who is online (this node's sockets and the other nodes' users), coalesced;
* ``mailbox``: pushes with offsets, in id order, from the database when the bus rings, and ``resume``;
* ``cluster_presence``: what the nodes tell each other about their users (heartbeats).

The same code runs on one node and on several: it talks to ``server.bus``, which reaches the
other nodes only when the serving code attached a Redis adapter. ``build`` is what
``serve("chat")`` and ``python -m labtools serve chat --db PATH`` call.
"""

from .server import ChatLimits, ChatState, build
from .session import ChatSession

__all__ = ["ChatLimits", "ChatSession", "ChatState", "build"]
