"""The chat as several nodes (lesson 11): one SQLite file, presence and bells on the bus.

Why the store stays SQLite, one file shared by the nodes of one machine: the nodes of a course
deployment run on one machine (the point is several processes behind a front door, not several
machines), and SQLite in WAL mode lets many processes read while one writes; a writer waits
for the lock (``busy_timeout``) rather than failing. SQLite admits one write transaction at a
time, and ids are drawn inside it, so ids increase in commit order across processes: when a
node sees id N committed, every smaller id is committed too. That makes the database itself the
log of messages, with the id as the offset, and nothing else has to be kept in Redis. (Nodes on
several machines would need a database server, e.g. PostgreSQL, with the same two properties.)

So the bus only rings the bell (*"new message, id N"*); it never carries the message. Every node
keeps a delivery cursor and, when a bell rings, reads ``WHERE id > cursor ORDER BY id`` and
pushes each message to its own sockets of the sender and the recipient, in id order. A bell
that is lost (pub/sub is fire-and-forget) costs nothing: the next bell, a heartbeat (which
carries its node's cursor) or the catch-up after a reconnection reads the same rows. The node
where a message was sent pushes it at once when nothing older is missing, and skips it when
the catch-up reads it again (the cursor is past it): a message reaches a socket at most once.

Presence is the union of the nodes' presence: each node announces the uids online on it when
that changes (at the end of the presence window, so coalesced as on one node), and again in a
heartbeat every ``ChatLimits.heartbeat`` seconds. A node not heard from for three heartbeats is
taken for gone (killed, cut off), and its users go offline; a node that stops says so at once.
The cap of sockets per user stays per node: counting sockets across nodes would cost a round
trip per connection, for a limit that protects each node's own memory anyway.

New accounts are announced on the bus; a uid a node does not know (the announcement was
missed) is looked up in the database before it is refused, so a real user is never refused.
Typing indicators travel through the event server's adapter: each socket joins its user's
room, ``user:{uid}``, and a broadcast to that room reaches the other nodes' members.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from typing import Any

from ... import runtime
from ...cluster.bus import Bus
from ...events import EventServer
from .mailbox import Mailbox
from .presence import Presence
from .store import Store

#: Rows read by one catch-up query (then the next ones, until none is left).
CATCH_UP_ROWS = 1000
#: Heartbeats a node may miss before its users are taken offline.
MISSED_HEARTBEATS = 3
#: The bus channels of the chat (besides the event server's broadcasts).
PRESENCE, USERS, BELLS = "presence", "users", "messages"


class SharedMailbox(Mailbox):
    """The mailbox of one node among several: the database is the log, the bus the bell."""

    def __init__(self, server: EventServer, presence: Presence, store: Store, bus: Bus) -> None:
        super().__init__(server, presence, store)
        self.bus = bus
        self.catch_ups = 0
        self._catching: asyncio.Task | None = None
        self._again = False
        self._closed = False
        bus.subscribe(BELLS, self._bell)
        bus.on_reconnect(self.wake)

    def stored(self, message: dict[str, Any]) -> None:
        """Ring the other nodes; push here now unless an older message is still to be read."""
        self.bus.post(BELLS, {"id": message["id"]})
        if message["id"] == self.cursor + 1:
            self.deliver(message)
        else:
            self.wake()

    def _bell(self, message: dict[str, Any]) -> None:
        last = message.get("id")
        if type(last) is int and last > self.cursor:
            self.wake()

    def wake(self) -> None:
        """Read what is stored past the cursor (again, if a read is under way: it may be too early)."""
        if self._closed:
            return
        if self._catching is not None:
            self._again = True
            return
        self._catching = asyncio.get_running_loop().create_task(self._catch_up())

    async def _catch_up(self) -> None:
        try:
            while True:
                self._again = False
                self.catch_ups += 1
                rows = await self.store.after(self.cursor, CATCH_UP_ROWS)
                for message in rows:
                    self.deliver(message)  # skips what the cursor has passed meanwhile
                if len(rows) < CATCH_UP_ROWS and not self._again:
                    return
        except Exception as error:  # the store closing under it; the next bell tries again
            self.server.errors.append(f"catch-up: {error!r}")
        finally:
            self._catching = None

    async def close(self) -> None:
        self._closed = True
        await runtime.cancel(self._catching)


class Nodes:
    """Presence and accounts across the nodes: what this node says on the bus, what it hears.

    ``presence.remote`` (uid -> nodes it is online on) is kept here; ``Presence`` reads it.
    ``learn(uid)`` is how the chat asks for a user it does not know (the database decides).
    """

    def __init__(self, presence: Presence, store: Store, bus: Bus, mailbox: SharedMailbox, *,
                 heartbeat: float, emails: set[str]) -> None:
        """``emails``: the chat's set of registered emails, kept up to date with announced users."""
        if heartbeat <= 0:
            raise ValueError("the heartbeat must be positive")
        self.presence = presence
        self.store = store
        self.bus = bus
        self.mailbox = mailbox
        self.heartbeat = heartbeat
        self.emails = emails
        self.peers: dict[str, tuple[frozenset[str], float]] = {}  # node -> (uids online there, heard at)
        self.announced: frozenset[str] = frozenset()
        self._task: asyncio.Task | None = None
        self._learning: set[asyncio.Task] = set()
        bus.subscribe(PRESENCE, self._heard)
        bus.subscribe(USERS, self._new_user)
        bus.on_reconnect(self._reconnected)
        presence.on_window.append(self.announce_if_changed)

    async def start(self) -> None:
        """Say hello (the others answer with their presence at once), then beat."""
        self.say(hello=True)
        self._task = asyncio.get_running_loop().create_task(self._beat())

    async def close(self) -> None:
        """Stop beating and tell the others this node's users are gone (not in three heartbeats)."""
        await runtime.cancel(self._task)
        self._task = None
        for task in list(self._learning):
            task.cancel()
        await asyncio.gather(*self._learning, return_exceptions=True)
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(self.bus.publish(PRESENCE, {"online": [], "bye": True}), self.heartbeat)

    # ----- what this node says ------------------------------------------------------------

    def say(self, *, hello: bool = False) -> None:
        """Announce the uids online on this node (and the cursor: a lost bell is found here)."""
        self.announced = frozenset(self.presence.connections)
        message: dict[str, Any] = {"online": sorted(self.announced), "cursor": self.mailbox.cursor}
        if hello:
            message["hello"] = True
        self.bus.post(PRESENCE, message)

    def announce_if_changed(self) -> None:
        """At the end of a presence window: tell the others when this node's online set changed."""
        if self.announced != self.presence.connections.keys():
            self.say()

    def signed_up(self, user: dict[str, str]) -> None:
        self.bus.post(USERS, {"user": user})

    async def _beat(self) -> None:
        """Say who is here every heartbeat; look for silent nodes four times as often, so that a
        dead node's users go offline little more than three heartbeats after its last word."""
        ticks = 0
        while True:
            await asyncio.sleep(self.heartbeat / 4)
            ticks += 1
            if ticks % 4 == 0:
                self.say()
            self.expire()

    def _reconnected(self) -> None:
        """Back on the bus: the others may have taken us for gone (the mailbox catches up itself)."""
        self.say(hello=True)

    # ----- what this node hears -----------------------------------------------------------

    def _heard(self, message: dict[str, Any]) -> None:
        node, online = message.get("node"), message.get("online")
        if not (isinstance(node, str) and isinstance(online, list) and all(isinstance(u, str) for u in online)):
            return
        if message.get("hello"):
            self.say()  # a node (re)joined: it should not wait a heartbeat to know who is here
        cursor = message.get("cursor")
        if type(cursor) is int and cursor > self.mailbox.cursor:
            self.mailbox.wake()
        if message.get("bye"):
            self._set(node, frozenset())
            self.peers.pop(node, None)
            return
        self._set(node, frozenset(online))
        self.peers[node] = (frozenset(online), time.monotonic())
        unknown = [uid for uid in online if uid not in self.presence.users]
        if unknown:
            self._spawn(self._learn_all(unknown))

    def expire(self) -> None:
        """Take the nodes not heard from for ``MISSED_HEARTBEATS`` heartbeats for gone."""
        silent_since = time.monotonic() - MISSED_HEARTBEATS * self.heartbeat
        for node, (_online, heard) in list(self.peers.items()):
            if heard < silent_since:
                self._set(node, frozenset())
                del self.peers[node]

    def _set(self, node: str, online: frozenset[str]) -> None:
        """``node`` now has exactly ``online``: note the users whose presence, all nodes together, changed."""
        before = self.peers.get(node, (frozenset(), 0.0))[0]
        remote = self.presence.remote
        for uid in online - before:
            was = self.presence.is_online(uid)
            remote.setdefault(uid, set()).add(node)
            if not was:
                self.presence.changed(uid)
        for uid in before - online:
            nodes = remote.get(uid)
            if nodes is None:
                continue
            nodes.discard(node)
            if not nodes:
                del remote[uid]
            if not self.presence.is_online(uid):
                self.presence.changed(uid)

    def _new_user(self, message: dict[str, Any]) -> None:
        user = message.get("user")
        if isinstance(user, dict) and all(isinstance(user.get(k), str) for k in ("uid", "name", "email")):
            self.add_user({"uid": user["uid"], "name": user["name"], "email": user["email"]})

    def add_user(self, user: dict[str, str]) -> None:
        if user["uid"] not in self.presence.users:
            self.presence.users[user["uid"]] = user
            self.emails.add(user["email"])
            self.presence.changed(user["uid"])

    async def learn(self, uid: str) -> bool:
        """True when ``uid`` is a user, looked up in the database if this node has not heard of it."""
        if uid in self.presence.users:
            return True
        user = await self.store.user(uid)
        if user is not None:
            self.add_user(user)
        return user is not None

    async def _learn_all(self, uids: Iterable[str]) -> None:
        for uid in uids:
            await self.learn(uid)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._learning.add(task)
        task.add_done_callback(self._learning.discard)

    def online_elsewhere(self) -> dict[str, list[str]]:
        """uid -> the other nodes it is online on (for a look from a cell)."""
        return {uid: sorted(nodes) for uid, nodes in self.presence.remote.items()}

