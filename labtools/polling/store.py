"""The polling server's message store: who wrote what to whom, and who is waiting for it."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable


class MessageStore:
    """Messages with increasing integer ids, indexed by recipient.

    ``since`` look-ups are a binary search in the recipient's own list, so a poll that finds
    nothing (the common case) costs O(log n) whatever the number of messages.
    """

    def __init__(self) -> None:
        self._next_id = 1
        self._inbox: dict[str, list[dict]] = {}
        self._inbox_ids: dict[str, list[int]] = {}
        self._listeners: dict[str, set[Callable[[dict], None]]] = {}

    def add(self, sender: str, to: str, text: str) -> dict:
        """Store a message and wake everyone listening for ``to``."""
        message = {"id": self._next_id, "from": sender, "to": to, "text": text, "at": time.time()}
        self._next_id += 1
        self._inbox.setdefault(to, []).append(message)
        self._inbox_ids.setdefault(to, []).append(message["id"])
        for listener in list(self._listeners.get(to, ())):
            listener(message)
        return message

    def since(self, user: str, since: int) -> list[dict]:
        """Messages addressed to ``user`` with an id above ``since``, oldest first."""
        ids = self._inbox_ids.get(user)
        if not ids:
            return []
        return self._inbox[user][bisect.bisect_right(ids, since) :]

    def listen(self, user: str, listener: Callable[[dict], None]) -> Callable[[], None]:
        """Call ``listener`` with each new message to ``user``; returns the unsubscribe."""
        self._listeners.setdefault(user, set()).add(listener)

        def unsubscribe() -> None:
            listeners = self._listeners.get(user)
            if listeners is not None:
                listeners.discard(listener)
                if not listeners:
                    del self._listeners[user]

        return unsubscribe

    async def wait(self, user: str, since: int, seconds: float) -> list[dict]:
        """Long polling: the messages after ``since``, waiting up to ``seconds`` for the first."""
        ready = self.since(user, since)
        if ready or seconds <= 0:
            return ready
        arrived = asyncio.get_running_loop().create_future()

        def wake(_message: dict) -> None:
            if not arrived.done():
                arrived.set_result(None)

        unsubscribe = self.listen(user, wake)
        try:
            await asyncio.wait_for(arrived, seconds)
        except TimeoutError:
            pass
        finally:
            unsubscribe()
        return self.since(user, since)

    @property
    def count(self) -> int:
        return self._next_id - 1
