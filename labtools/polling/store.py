"""The polling server's message store: who wrote what to whom, and who is waiting for it.

It is also a machine of the server's log (``apply``, ``snapshot``, ``restore``): with several
polling nodes (lesson 11) every node applies the same posts in the same order, so a message has
the same id everywhere and any node can answer any poll.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..events.replicated import Applied

#: Messages kept, all recipients together: older ones are forgotten (PROTOCOL.md, limits).
KEEP = 10_000
#: Messages in one answer at most; a client whose answer was full asks again from its last id.
PAGE = 100


class Gap(Exception):
    """Messages after ``since`` were forgotten: resuming from ``resume`` gives what is kept."""

    def __init__(self, since: int, resume: int) -> None:
        super().__init__(f"messages after {since} up to {resume} are no longer kept")
        self.since = since
        self.resume = resume


@dataclass(frozen=True)
class Page:
    """One answer's messages, oldest first, and whether more were waiting after them."""

    messages: list[dict]
    more: bool


class MessageStore:
    """Messages with increasing integer ids, indexed by recipient, the last ``keep`` of them.

    ``since`` look-ups are a binary search in the recipient's own list, so a poll that finds
    nothing (the common case) costs O(log n) whatever the number of messages. Memory is bounded
    by ``keep``; what was forgotten is remembered as one id per recipient (``forgotten``), so a
    client asking from before it hears about the gap instead of silently missing messages.
    """

    def __init__(self, keep: int = KEEP, page: int = PAGE) -> None:
        if keep < 1 or page < 1:
            raise ValueError(f"keep and page must be at least 1, not {keep} and {page}")
        self.keep = keep
        self.page = page
        self._next_id = 1
        self._order: deque[str] = deque()  # each kept message's recipient, oldest first
        self._inbox: dict[str, list[dict]] = {}
        self._inbox_ids: dict[str, list[int]] = {}
        self._forgotten: dict[str, int] = {}  # recipient -> id of its last forgotten message
        self._listeners: dict[str, set[Callable[[dict], None]]] = {}

    def add(self, sender: str, to: str, text: str, at: float | None = None) -> dict:
        """Store a message, forget the oldest beyond ``keep``, and wake everyone listening for ``to``."""
        message = {"id": self._next_id, "from": sender, "to": to, "text": text, "at": time.time() if at is None else at}
        self._next_id += 1
        self._inbox.setdefault(to, []).append(message)
        self._inbox_ids.setdefault(to, []).append(message["id"])
        self._order.append(to)
        if len(self._order) > self.keep:
            self._forget_oldest()
        for listener in list(self._listeners.get(to, ())):
            listener(message)
        return message

    def _forget_oldest(self) -> None:
        """Drop the oldest message; it is first in its recipient's list, ids being increasing."""
        to = self._order.popleft()
        ids = self._inbox_ids[to]
        self._forgotten[to] = ids[0]
        del ids[0], self._inbox[to][0]
        if not ids:
            del self._inbox_ids[to], self._inbox[to]

    def check(self, user: str, since: int) -> None:
        """Raise ``Gap`` when messages to ``user`` after ``since`` were forgotten."""
        forgotten = self._forgotten.get(user, 0)
        if since < forgotten:
            raise Gap(since, forgotten)

    def page_since(self, user: str, since: int) -> Page:
        """Up to ``page`` messages to ``user`` with an id above ``since``, oldest first."""
        self.check(user, since)
        ids = self._inbox_ids.get(user)
        if not ids:
            return Page([], False)
        start = bisect.bisect_right(ids, since)
        return Page(self._inbox[user][start : start + self.page], len(ids) - start > self.page)

    def since(self, user: str, since: int) -> list[dict]:
        """The first page of messages to ``user`` after ``since`` (``page_since``'s messages)."""
        return self.page_since(user, since).messages

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

    async def wait(self, user: str, since: int, seconds: float) -> None:
        """Long polling: return once a message to ``user`` above ``since`` is stored, or after
        ``seconds``. The caller then reads the page (``page_since``), gap check included."""
        ids = self._inbox_ids.get(user)
        if (ids and ids[-1] > since) or seconds <= 0:
            return
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

    # ----- as a machine of the log (events.replicated) ---------------------------------------

    def apply(self, command: dict[str, Any], origin: int | None) -> Applied:
        """A post from the log: stored with the next id (the same on every node)."""
        return Applied(self.add(command["from"], command["to"], command["text"], command["at"]))

    def snapshot(self) -> dict[str, Any]:
        kept = sorted((m for inbox in self._inbox.values() for m in inbox), key=lambda m: m["id"])
        return {"next": self._next_id, "messages": kept, "forgotten": dict(self._forgotten)}

    def restore(self, data: dict[str, Any]) -> None:
        self._order.clear()
        self._inbox.clear()
        self._inbox_ids.clear()
        for message in data["messages"]:
            to = message["to"]
            self._inbox.setdefault(to, []).append(message)
            self._inbox_ids.setdefault(to, []).append(message["id"])
            self._order.append(to)
        self._forgotten = dict(data["forgotten"])
        self._next_id = data["next"]

    @property
    def count(self) -> int:
        """Messages stored since the start, forgotten ones included."""
        return self._next_id - 1

    @property
    def kept(self) -> int:
        """Messages held now (at most ``keep``)."""
        return len(self._order)
