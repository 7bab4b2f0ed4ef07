"""Who is online: each user's open sockets, capped, and presence news coalesced.

Why coalesced: a change of presence concerns every online socket, so sending the whole
``user-list`` at each change costs (changes × users × sockets) bytes: a few accounts
cycling their connections can push gigabytes to a hundred listeners. Changes are instead
collected for ``window`` seconds and then announced once: the latest ``user-list`` to each
socket that takes lists, and one ``user-status`` per changed user to each socket that
subscribed to deltas. However fast the changes come, a socket gets at most one list, or one
status per user, per window.

With several nodes, a user is online when a socket of theirs is open on any node. What the other
nodes say they hold arrives through ``cluster_presence`` (``online_on``); the union is kept here,
and the announcements go to this node's sockets only (``server.local``): every node announces to
its own, from the same union. On one node no other node ever speaks, and the union is this node.

Why a cap on sockets per user: each socket is a share of the server's memory and of every
broadcast. A user opening one more than ``max_sockets`` has their oldest socket closed with
``CLOSE_TOO_MANY`` (4001), which a page can tell apart from a network failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ...events import Client, EventServer
from .directory import Directory

#: The close code of a socket closed because its user opened too many (an application code).
CLOSE_TOO_MANY = 4001
CLOSE_TOO_MANY_REASON = "too many connections for this user"
LISTS = "presence:lists"  # authenticated sockets that receive user-list (the default)
DELTAS = "presence:deltas"  # sockets that sent subscribe-presence: user-status instead


def user_room(uid: str) -> str:
    """The room of a user's sockets: a broadcast to it reaches their sockets on every node."""
    return f"user:{uid}"


class Presence:
    """Users' open sockets and the coalesced ``user-list`` / ``user-status`` announcements."""

    def __init__(self, server: EventServer, directory: Directory, *, window: float, max_sockets: int) -> None:
        if window < 0 or max_sockets < 1:
            raise ValueError("the presence window must be >= 0 and max_sockets at least 1")
        self.server = server
        self.directory = directory
        self.window = window
        self.max_sockets = max_sockets
        self.connections: dict[str, dict[Client, None]] = {}  # uid -> open sockets here, oldest first
        self.others: dict[str, frozenset[str]] = {}  # another node -> the uids online there
        self.evicted = 0
        self._changed: dict[str, None] = {}  # uids whose presence changed since the last announcement
        self._timer: asyncio.TimerHandle | None = None
        #: Called at the end of each presence window (a node tells the others what changed here).
        self.on_window: list[Callable[[], None]] = []
        directory.on_new.append(self.changed)  # a new user is news for every list

    def sockets(self, uid: str) -> list[Client]:
        return list(self.connections.get(uid, ()))

    def user_list(self) -> list[dict[str, Any]]:
        return [self.status(uid) for uid in self.directory]

    def status(self, uid: str) -> dict[str, Any]:
        return {"uid": uid, "name": self.directory.name(uid), "online": self.is_online(uid)}

    def is_online(self, uid: str) -> bool:
        """Online here or on another node (the nodes are few: a look at each is cheap)."""
        return uid in self.connections or any(uid in online for online in self.others.values())

    # ----- sockets ------------------------------------------------------------------------

    def attach(self, client: Client, uid: str) -> None:
        """Make ``client`` a socket of ``uid`` (closing the user's oldest past the cap); send it the list."""
        client.session.uid = uid
        client.name = self.directory.name(uid)
        was_online = self.is_online(uid)  # here, or on another node
        sockets = self.connections.setdefault(uid, {})
        while len(sockets) >= self.max_sockets:
            self._evict(sockets, next(iter(sockets)))
        first = not sockets
        sockets[client] = None
        client.join(LISTS)
        client.join(user_room(uid))
        client.emit("user-list", self.user_list())
        if first:
            self._local_change(uid, announce=not was_online)

    def detach(self, client: Client) -> None:
        """Forget a closed socket; its user goes offline with their last one."""
        uid, client.session.uid = client.session.uid, None
        if uid is None:
            return
        sockets = self.connections.get(uid, {})
        sockets.pop(client, None)
        self._leave(client, uid)
        if not sockets:
            self.connections.pop(uid, None)
            self._local_change(uid, announce=not self.is_online(uid))

    def _evict(self, sockets: dict[Client, None], client: Client) -> None:
        """Detach ``client`` from its user's ``sockets`` now (no more deliveries), then close it."""
        self.evicted += 1
        uid, client.session.uid = client.session.uid, None
        sockets.pop(client, None)
        self._leave(client, uid)
        client.close(CLOSE_TOO_MANY, CLOSE_TOO_MANY_REASON)

    @staticmethod
    def _leave(client: Client, uid: str | None) -> None:
        client.leave(LISTS)
        client.leave(DELTAS)
        if uid is not None:
            client.leave(user_room(uid))

    def subscribe(self, client: Client) -> list[dict[str, Any]]:
        """From now on ``client`` gets ``user-status`` per change instead of ``user-list``; the list now."""
        client.leave(LISTS)
        client.join(DELTAS)
        return self.user_list()

    # ----- the other nodes ----------------------------------------------------------------

    def online_on(self, node: str, online: frozenset[str]) -> None:
        """Another ``node`` now has exactly ``online`` (empty: it is gone); note the users whose
        presence, all nodes together, changed."""
        flipped = self.others.get(node, frozenset()) ^ online
        was_online = {uid for uid in flipped if self.is_online(uid)}
        if online:
            self.others[node] = online
        else:
            self.others.pop(node, None)
        for uid in flipped:
            if self.is_online(uid) != (uid in was_online):
                self.changed(uid)

    # ----- announcements ------------------------------------------------------------------

    def changed(self, uid: str) -> None:
        """Note that ``uid``'s presence (or existence) changed; announce it at the end of the window."""
        self._changed[uid] = None
        self._end_window_later()

    def _local_change(self, uid: str, *, announce: bool) -> None:
        """This node gained ``uid``'s first socket or lost its last: the window's end tells the other
        nodes (``on_window``); the sockets hear of it only if ``uid`` is online, all nodes together,
        when it was not before, or the other way round (``announce``)."""
        if announce:
            self.changed(uid)
        else:
            self._end_window_later()

    def _end_window_later(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.window, self.announce)

    def announce(self) -> None:
        """Send what changed in the window: one status per changed user, one latest list.

        Each changed user's *current* status is sent, even when it changed back meanwhile: a
        socket that joined inside the window may have seen the intermediate state.
        """
        self._timer = None
        for callback in self.on_window:
            callback()
        changed, self._changed = self._changed, {}
        statuses = [self.status(uid) for uid in changed if uid in self.directory]
        if not statuses:
            return
        # To this node's sockets only: every node announces the union to its own.
        local = self.server.local
        for status in statuses:
            local.broadcast("user-status", status, to=DELTAS)
        local.broadcast("user-list", self.user_list(), to=LISTS)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
