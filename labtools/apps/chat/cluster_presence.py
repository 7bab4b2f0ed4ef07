"""Who is online on the other nodes of the chat: announcements and heartbeats on the bus.

Why each node announces its own users: presence is the union of the nodes' presence, and only a
node knows its own sockets. So each node says what changed on it (at the end of the presence
window, so coalesced as on one node: the uids ``added`` and ``removed``, with the new ``version``
of its set), and sends a heartbeat every ``ChatLimits.heartbeat`` seconds; ``Presence.online_on``
merges what the others say.

Why deltas and versions, not the whole set each time: at 1,000 users a node's set is tens of
kilobytes, and a heartbeat every 2 s would carry it to every node for nothing. A heartbeat
carries only the version; pub/sub may lose a message, so a node that sees a version it did not
reach step by step (a lost delta) asks that node for its whole set (``ask``), and it answers
with it (``online``). A node that (re)joins says ``hello`` with its whole set, and the others
answer with theirs.

Why heartbeats: a node that is killed or cut off never says goodbye. A node not heard from for
``MISSED_HEARTBEATS`` heartbeats is taken for gone, and its users go offline; a node that stops
says so at once (``bye``). A node that (re)joins says ``hello``, and the others answer at once,
so it does not wait a heartbeat to know who is online. A heartbeat also carries its node's
delivery cursor: a node that sees a larger one missed a bell, and its mailbox catches up.

Why the cap of sockets per user stays per node: counting sockets across nodes would cost a round
trip per connection, for a limit that protects each node's own memory anyway.

On one node (the bus reaches no one) nothing of this runs: no timer, no message.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine, Iterable
from typing import Any

from ... import runtime
from ...events import Bus
from .directory import Directory
from .mailbox import Mailbox
from .presence import Presence

#: Heartbeats a node may miss before its users are taken offline.
MISSED_HEARTBEATS = 3
#: The bus channel of presence. Every message carries ``version`` (of the sender's set) and
#: ``cursor``, and is one of: the whole set ``{"online": [UID, ...], "hello"?: true}``, a change
#: ``{"added": [...], "removed": [...]}`` (from ``version - 1``), a heartbeat (nothing more),
#: ``{"ask": NODE}`` (NODE sends its whole set) or ``{"bye": true}`` (the sender stops).
PRESENCE = "presence"
#: The most uids one presence message may name (a hostile bus must not make a node hold more).
MAX_UIDS = 100_000


class ClusterPresence:
    """What this node tells the others about its users, and what it hears about theirs.

    ``heard`` (node -> when it last spoke) is what decides that a silent node is gone.
    """

    bus: Bus  # set by ``start``: the server's bus exists only once it starts

    def __init__(self, presence: Presence, directory: Directory, mailbox: Mailbox, *, heartbeat: float) -> None:
        if heartbeat <= 0:
            raise ValueError("the heartbeat must be positive")
        self.presence = presence
        self.directory = directory
        self.mailbox = mailbox
        self.heartbeat = heartbeat
        self.heard: dict[str, float] = {}
        self.announced: frozenset[str] = frozenset()
        self.version = 0  # of this node's set: one more at each change it announces
        self.versions: dict[str, int] = {}  # another node -> the version of its set this node holds
        self._task: asyncio.Task | None = None
        self._learning: set[asyncio.Task] = set()

    async def start(self, bus: Bus) -> None:
        """With other nodes to reach: listen, say hello (the others answer at once), then beat."""
        if not bus.reaches_others:
            return
        self.bus = bus
        bus.subscribe(PRESENCE, self._heard)
        bus.on_reconnect(self._reconnected)
        self.presence.on_window.append(self.announce_if_changed)
        self.say(hello=True)
        self._task = asyncio.get_running_loop().create_task(self._beat())

    async def close(self) -> None:
        """Stop beating and tell the others this node's users are gone (not in three heartbeats)."""
        if self._task is None:  # never started, or one node
            return
        await runtime.cancel(self._task)
        self._task = None
        for task in list(self._learning):
            task.cancel()
        await asyncio.gather(*self._learning, return_exceptions=True)
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(self.bus.publish(PRESENCE, {"bye": True, "version": self.version}),
                                   self.heartbeat)

    # ----- what this node says ------------------------------------------------------------

    def _post(self, message: dict[str, Any]) -> None:
        """Every message says the version of this node's set, and the cursor (a lost bell is found here)."""
        self.bus.post(PRESENCE, {**message, "version": self.version, "cursor": self.mailbox.cursor})

    def say(self, *, hello: bool = False) -> None:
        """Announce the whole set of uids online on this node."""
        self._catch_up_set()
        self._post({"online": sorted(self.announced), **({"hello": True} if hello else {})})

    def _catch_up_set(self) -> tuple[frozenset[str], frozenset[str]]:
        """Take this node's current set as the announced one (a new version if it changed)."""
        now = frozenset(self.presence.connections)
        added, removed = now - self.announced, self.announced - now
        if added or removed:
            self.announced = now
            self.version += 1
        return added, removed

    def announce_if_changed(self) -> None:
        """At the end of a presence window: tell the others what changed in this node's set."""
        added, removed = self._catch_up_set()
        if added or removed:
            self._post({"added": sorted(added), "removed": sorted(removed)})

    async def _beat(self) -> None:
        """Say who is here every heartbeat; look for silent nodes four times as often, so that a
        dead node's users go offline little more than three heartbeats after its last word."""
        ticks = 0
        while True:
            await asyncio.sleep(self.heartbeat / 4)
            ticks += 1
            if ticks % 4 == 0:
                self.announce_if_changed()
                self._post({})  # the heartbeat: only the version
            self.expire()

    def _reconnected(self) -> None:
        """Back on the bus: the others may have taken us for gone (the mailbox catches up itself)."""
        self.say(hello=True)

    # ----- what this node hears -----------------------------------------------------------

    def _heard(self, message: dict[str, Any]) -> None:
        node, version = message.get("node"), message.get("version")
        if not isinstance(node, str) or type(version) is not int:
            return
        if "ask" in message:  # another node lost track of someone's set
            if message["ask"] == self.bus.node:
                self.say()
            return
        cursor = message.get("cursor")
        if type(cursor) is int and cursor > self.mailbox.cursor:
            self.mailbox.wake()
        if message.get("bye"):
            self.presence.online_on(node, frozenset())
            self.heard.pop(node, None)
            self.versions.pop(node, None)
            return
        self.heard[node] = time.monotonic()
        online, added, removed = (uids(message.get(key)) for key in ("online", "added", "removed"))
        if online is not None:
            if message.get("hello"):
                self.say()  # a node (re)joined: it should not wait to know who is here
            self._set(node, version, online)
        elif added is not None and removed is not None and self.versions.get(node) == version - 1:
            self._set(node, version, (self.presence.others.get(node, frozenset()) | added) - removed)
        elif self.versions.get(node) != version:  # a change was lost (pub/sub), or never seen: ask
            self.bus.post(PRESENCE, {"ask": node, "version": self.version})

    def _set(self, node: str, version: int, online: frozenset[str]) -> None:
        self.versions[node] = version
        self.presence.online_on(node, online)
        unknown = [uid for uid in online if uid not in self.directory]
        if unknown:
            self._spawn(self._find_all(unknown))

    def expire(self) -> None:
        """Take the nodes not heard from for ``MISSED_HEARTBEATS`` heartbeats for gone."""
        silent_since = time.monotonic() - MISSED_HEARTBEATS * self.heartbeat
        for node, heard in list(self.heard.items()):
            if heard < silent_since:
                self.presence.online_on(node, frozenset())
                del self.heard[node]
                self.versions.pop(node, None)

    async def _find_all(self, uids: Iterable[str]) -> None:
        """Users online elsewhere whose sign-up this node has not heard of: the database knows them."""
        for uid in uids:
            await self.directory.find(uid)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._learning.add(task)
        task.add_done_callback(self._learning.discard)


def uids(value: Any) -> frozenset[str] | None:
    """A list of uids from the bus, or None when it is not one (absent, or of another shape)."""
    if not (isinstance(value, list) and len(value) <= MAX_UIDS and all(isinstance(u, str) for u in value)):
        return None
    return frozenset(value)
