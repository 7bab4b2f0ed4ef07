"""Who is registered: every user of the chat in memory, and the emails taken, with one owner.

Why in memory: every ``user-list`` names every user, and every message checks that its recipient
exists; reading the users table for each would put a database round trip on the hot path. The
table is small (a uid, a name and an email per user) and changes only at sign-up, so it is read
once when the server starts and kept up to date from then on.

Why one owner: the handlers, presence and the cluster's presence all read users; if each kept its
own copy, a user added to one and not another would be registered for some questions and not for
others. So ``Directory`` is the only place users are added, and the others ask it.

With several nodes, a sign-up on one node is announced on the bus (channel ``users``); the others
add it as they hear it. The bus is fire-and-forget, so an announcement can be missed: ``find``
looks a uid this node has not heard of up in the database (one file all the nodes share) before
it is refused, so a real user is never refused. On one node the same code runs: the bus reaches
no one, and memory holds every user, so an unknown uid costs no query.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ...events import Bus
from .store import Store

#: The bus channel of new accounts: ``{"user": {"uid", "name", "email"}}``.
USERS = "users"
USER_FIELDS = ("uid", "name", "email")


class Directory:
    """Registered users (uid -> ``{"uid", "name", "email"}``, in sign-up order) and their emails."""

    bus: Bus  # set by ``open``: the server's bus exists only once it starts

    def __init__(self, store: Store) -> None:
        self.store = store
        self.users: dict[str, dict[str, str]] = {}
        self.emails: set[str] = set()
        #: Called with the uid of each user added after ``open`` (presence announces them).
        self.on_new: list[Callable[[str], None]] = []

    async def open(self, bus: Bus) -> None:
        """Read every user from the database, then listen for the other nodes' sign-ups."""
        for user in await self.store.users():
            self._keep(user)
        self.bus = bus
        bus.subscribe(USERS, self._heard)

    def __contains__(self, uid: object) -> bool:
        return uid in self.users

    def __iter__(self) -> Iterator[str]:
        return iter(self.users)

    def user(self, uid: str) -> dict[str, str]:
        """``{"uid", "name", "email"}`` of a registered ``uid`` (a copy: callers may send it away)."""
        return dict(self.users[uid])

    def name(self, uid: str) -> str:
        return self.users[uid]["name"]

    def taken(self, email: str) -> bool:
        return email in self.emails

    def signed_up(self, user: dict[str, str]) -> None:
        """A user this node just stored: keep them and tell the other nodes."""
        self.add(user)
        self.bus.post(USERS, {"user": user})

    def add(self, user: dict[str, str]) -> None:
        """Keep ``user`` (stored already, here or by another node) and say so, unless known."""
        if user["uid"] not in self.users:
            self._keep(user)
            for callback in self.on_new:
                callback(user["uid"])

    def _keep(self, user: dict[str, str]) -> None:
        self.users[user["uid"]] = {field: user[field] for field in USER_FIELDS}
        self.emails.add(user["email"])

    async def find(self, uid: str) -> bool:
        """True when ``uid`` is a registered user: known here, or found in the database (another
        node's sign-up whose announcement this node missed or has not heard yet)."""
        if uid in self.users:
            return True
        if not self.bus.reaches_others:  # no other node signs anyone up: memory is the whole table
            return False
        user = await self.store.user(uid)
        if user is not None:
            self.add(user)
        return user is not None

    def _heard(self, message: dict[str, Any]) -> None:
        user = message.get("user")
        if isinstance(user, dict) and all(isinstance(user.get(field), str) for field in USER_FIELDS):
            self.add(user)
