"""The event layer: PROTOCOL.md's frames (emit, acknowledgements, errors) over WebSockets.

It gives the seed's glossary names in code: a client *emits* an *event*, the server *listens*
with ``@server.on("name")``, and *broadcasts* to everyone, to a room, or to all but the sender;
shared state changes with ``@server.change`` and ``server.update``, the same on every node.

Modules, bottom up: ``frames`` (the wire format, ``EventError``, ``require``), ``limits`` (what
a client may cost), ``origins`` (which pages may connect), ``forwarded`` (who the client is
behind the front door), ``pages`` (static files, the health check), ``rooms``
(membership), ``connection`` (one socket: ``Connection``; ``Client``, what handlers get),
``turn`` (frames held until the loop's turn ends, one write per socket), ``inline`` (a
coroutine run inline until it suspends), ``dispatch`` (one frame to its handler), ``log`` (the
ordered history: ``MemoryLog``), ``replicated`` (a state machine over a log), ``changes`` (an
app's registered changes), ``recovery`` (offsets, resume), ``adapter`` (how a server reaches
other nodes: ``LocalAdapter``), ``server`` (``EventServer``), ``client`` (``EventClient``, the
simulated and test client).
"""

from .adapter import Bus
from .client import AckError, EventClient
from .connection import Client
from .frames import EventError, require
from .server import EventServer

__all__ = ["AckError", "Bus", "Client", "EventClient", "EventError", "EventServer", "require"]
