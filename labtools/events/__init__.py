"""The event layer: PROTOCOL.md's frames (emit, acknowledgements, errors) over WebSockets.

It gives the seed's glossary names in code: a client *emits* an *event*, the server *listens*
with ``@server.on("name")``, and *broadcasts* to everyone, to a room, or to all but the sender.
"""

from .client import AckError, EventClient
from .connection import Client
from .frames import EventError
from .server import EventServer

__all__ = ["AckError", "Client", "EventClient", "EventError", "EventServer"]
