"""What the chat keeps per connection: one typed slot, ``client.session``, made by the event server.

Why a dataclass and not a dict: the fields are few and fixed (who the socket is, where its pushes
stand, its login attempts), every handler reads them, and a misspelt key in a dict is a silent
``None`` where a misspelt attribute is an error. Slots keep it small: a server holds one per
open socket.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...events.limits import TokenBucket


@dataclass(slots=True)
class ChatSession:
    """One socket's chat data (``EventServer(..., session=ChatSession)`` makes one per connection).

    ``uid``: the user this socket is, once authenticated (``presence``). ``covered`` and
    ``offset``: the id from which its live pushes began, and the last id it was sent
    (``mailbox``). ``attempts``: its bucket of login and sign-up attempts, made at its first
    attempt (most sockets never make one).
    """

    uid: str | None = None
    covered: int = 0
    offset: int = 0
    attempts: TokenBucket | None = None
