"""The private chat (PROTOCOL.md ``chat``): accounts, an authenticated socket, presence,
private messages that are stored before they are acknowledged, and history to catch up.

Who may do what is decided by the connection, never by the data: a connection becomes a user
only by presenting a token the server signed, and every message it sends is stored ``from``
that user, whatever the frame claims. History is always "between me and ``with``", so nobody
can ask for another pair's conversation.

Presence is counted per user, not per socket: a user with two tabs open is online until the
last one closes, and news of it goes out only when that changes, coalesced (``presence``).

Password guessing is slowed down at three places (``throttle``, ``accounts``): a bounded
hashing queue, a bucket of login/sign-up attempts per connection, and doubling, expiring
windows after repeated failures per account and per (non-loopback) address. Sign-up hashes
the password before it looks the email up, so a taken email is not answered faster than a
login is.

One node or several, the code is the same: it talks to ``server.bus``, which reaches no one on
one node and the other nodes when the serving code attached a Redis adapter. The nodes share one
SQLite file (the log of messages, ``mailbox``), new accounts go on the bus (``directory``), who is
online where too (``cluster_presence``), and typing is a broadcast to the recipient's room, which
the event server carries to every node. Every ``personal-message`` push carries its ``offset``
(the message id) and ``epoch``, and ``resume`` replays what a socket missed (``mailbox``).
"""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from ...events import Bus, Client, EventError, EventServer, require
from ...events.frames import Json, dumps
from ...events.limits import TokenBucket
from ...measure.metrics import Trace
from .accounts import (
    MAX_HASH_QUEUE,
    MAX_HASH_WAIT_S,
    SECRET_ENV,
    TOKEN_TTL_S,
    Accounts,
    load_secret,
)
from .cluster_presence import ClusterPresence
from .directory import Directory
from .mailbox import Mailbox
from .presence import Presence, user_room
from .session import ChatSession
from .store import MAX_ID, EmailTaken, Store
from .throttle import FailureThrottle, is_loopback, rate_limited

MAX_TEXT = 2000
MAX_NAME = 40
MIN_PASSWORD = 8
MAX_PASSWORD = 256
MAX_CLIENT_ID = 100
MAX_MARKS = 2  # combining marks after one base character in a name (enough for any script)
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")  # always fullmatch: no "$" that lets a newline through
LOGIN_COST = 10  # frames of the sender's rate limit that one login or sign-up weighs (it hashes)
HIDDEN = ("Cc", "Cf")  # control and format characters: NUL, newlines, RTL overrides, zero-width spaces
# The refusals of a message, written once (not formatted again for every message that passes).
BAD_TEXT = f"'message' must be a non-empty string of at most {MAX_TEXT} characters"
BAD_CLIENT_ID = f"'clientId' must be a string of 1 to {MAX_CLIENT_ID} characters"
SHARED_DB = "a chat node with a broker needs db=FILE (--db), the one file its nodes share"


@dataclass(frozen=True)
class ChatLimits:
    """What one user, connection or address may cost the server (PROTOCOL.md, the chat's limits).

    ``exempt``: addresses whose failures are not counted per address (loopback: on Binder and
    in the lessons every client comes from 127.0.0.1, so that address is everyone).
    """

    presence_window: float = 0.2  # seconds presence changes are collected before one announcement
    max_sockets: int = 5  # open sockets per user; one more closes the oldest with 4001
    attempts_burst: float = 5  # login/sign-up attempts one connection may make at once...
    attempts_per_second: float = 0.2  # ...then one every 5 s
    account_failures: int = 5  # failed logins per account before its window closes
    address_failures: int = 20  # failed logins/sign-ups per address before its window closes
    lockout_base: float = 1.0  # the first window (seconds), doubling with each further failure
    lockout_longest: float = 300.0  # the longest window: a lockout never lasts longer
    forget_after: float = 3600.0  # a key's failures are forgotten this long after the last one
    hash_max_wait: float = MAX_HASH_WAIT_S
    hash_max_queue: int = MAX_HASH_QUEUE
    exempt: Callable[[str], bool] = is_loopback
    heartbeat: float = 2.0  # seconds between a node's presence heartbeats (three missed: gone)


def _fields(data: Any, event: str, shape: str) -> dict[str, Any]:
    require(isinstance(data, dict), f"{event} takes {shape}")
    return data


def _visible(text: str, field: str) -> None:
    """Refuse control and format characters: they hide or reorder text on other people's screens."""
    hidden = next((c for c in text if unicodedata.category(c) in HIDDEN), None)
    require(hidden is None, f"'{field}' must not contain control or format characters "
                            f"(found U+{ord(hidden or ' '):04X})")


def _email(value: Any) -> str:
    require(isinstance(value, str) and len(value) <= 254, "'email' must be an email address")
    _visible(value, "email")
    email = value.strip().lower()
    require(EMAIL.fullmatch(email) is not None, "'email' must be an email address")
    return email


def _name(value: Any) -> str:
    """A display name: NFC, stripped, visible characters only, at most ``MAX_MARKS`` marks per base."""
    message = f"'name' must be a non-empty string of at most {MAX_NAME} characters"
    require(isinstance(value, str) and len(value) <= 4 * MAX_NAME, message)
    name = unicodedata.normalize("NFC", value)
    _visible(name, "name")
    name = name.strip()
    require(0 < len(name) <= MAX_NAME, message)
    marks = 0
    for character in name:
        marks = marks + 1 if unicodedata.category(character).startswith("M") else 0
        require(marks <= MAX_MARKS, f"'name' may carry at most {MAX_MARKS} combining marks on one character")
    return name


class ChatState:
    """What the chat holds between events: its users, who is online, its mail, who is guessing.

    The handlers below read and change it; the ``Store`` (SQLite) and ``Accounts`` (argon2,
    tokens) do the slow work off the event loop. ``open`` and ``close`` run when the server
    starts and stops (``EventServer.starting`` and ``closed``).
    """

    def __init__(self, server: EventServer, store: Store, accounts: Accounts, limits: ChatLimits,
                 temporary: tempfile.TemporaryDirectory | None = None) -> None:
        """``temporary``: the folder of a temporary database, deleted at ``close`` (None: a file of the user's)."""
        self.server = server
        self.store = store
        self.accounts = accounts
        self.limits = limits
        self.directory = Directory(store)
        self.presence = Presence(server, self.directory, window=limits.presence_window, max_sockets=limits.max_sockets)
        self.mailbox = Mailbox(server, self.presence, store)
        self.cluster = ClusterPresence(self.presence, self.directory, self.mailbox, heartbeat=limits.heartbeat)
        self.account_failures = self._failures("account", limits.account_failures)
        self.address_failures = self._failures("address", limits.address_failures)
        # Emails with a login being checked now: one at a time per account, so that a crowd of
        # sockets cannot get many guesses past the failure count before its window closes.
        self.checking: set[str] = set()
        self.temporary = temporary

    def _failures(self, what: str, threshold: int) -> FailureThrottle:
        limits = self.limits
        return FailureThrottle(what, threshold=threshold, base=limits.lockout_base,
                               longest=limits.lockout_longest, forget=limits.forget_after)

    async def open(self, bus: Bus) -> None:
        """Open the database and everything that reads it; with other nodes, it must be their file."""
        if bus.reaches_others and self.temporary is not None:
            raise ValueError(SHARED_DB)
        await self.store.open()
        await self.directory.open(bus)
        await self.mailbox.open(bus)
        await self.cluster.start(bus)

    async def close(self) -> None:
        """Say goodbye to the other nodes, close the database, then the temporary folder."""
        await self.cluster.close()
        await self.mailbox.close()
        self.presence.close()
        await self.store.close()
        self.accounts.close()
        if self.temporary is not None:
            self.temporary.cleanup()

    @property
    def connections(self) -> dict[str, dict[Client, None]]:
        """uid -> that user's open, authenticated sockets on this node (oldest first)."""
        return self.presence.connections

    def user_list(self) -> list[dict[str, Any]]:
        return self.presence.user_list()

    # ----- who is asking ------------------------------------------------------------------

    @staticmethod
    def uid(client: Client) -> str:
        uid = client.session.uid
        require(uid is not None, "authenticate first: an auth event (or ?token= in the URL)", code="unauthorized")
        return uid

    async def known(self, value: Any, field: str) -> str:
        if not (isinstance(value, str) and await self.directory.find(value)):
            raise EventError("invalid-data", f"'{field}' must be the uid of a registered user")
        return value

    def attach(self, client: Client, uid: str) -> None:
        """``client`` is ``uid``'s socket from now on (presence, and where its live pushes begin)."""
        self.mailbox.attached(client)
        self.presence.attach(client, uid)

    def account(self, uid: str) -> dict[str, Any]:
        return {"user": self.directory.user(uid), "token": self.accounts.issue(uid)}

    def address(self, client: Client) -> str | None:
        """The peer's IP when its failures are counted per address; None when exempt (loopback)."""
        remote = client.remote_address
        address = str(remote[0]) if remote else ""
        return None if self.limits.exempt(address) else address

    def may_try(self, client: Client, email: str | None) -> str | None:
        """Spend one of the connection's attempts and check the lockouts; the address to blame.

        Besides weighing more in the event layer's rate limit (``LOGIN_COST``), login and
        sign-up have a slower bucket of their own per connection: each one costs a hash.
        """
        session = client.session
        if session.attempts is None:
            session.attempts = TokenBucket(self.limits.attempts_burst, self.limits.attempts_per_second)
        attempts = session.attempts
        wait = attempts.wait(1)
        if wait > 0:
            raise rate_limited("too many login or sign-up attempts on this connection: slow down", wait)
        attempts.take(1)
        address = self.address(client)
        if address is not None:
            self.address_failures.check(address)
        if email is not None:
            self.account_failures.check(email)
        return address


# ----- the events: each handler gets the chat's state, the connection and the frame's data ---


async def on_connect(chat: ChatState, client: Client) -> None:
    """``?token=`` authenticates at once; a bad one leaves the socket unauthenticated, and says why."""
    tokens = parse_qs(client.query).get("token")
    if not tokens:
        return
    try:
        uid = chat.accounts.check(tokens[0])
        require(await chat.directory.find(uid), "the token's user does not exist here: sign up again",
                code="unauthorized")
    except EventError as error:
        client.emit("error", error.as_data())
        return
    chat.attach(client, uid)


async def sign_up(chat: ChatState, client: Client, data: Any) -> dict[str, Any]:
    data = _fields(data, "sign-up", '{"name", "email", "password"}')
    name = _name(data.get("name"))
    email = _email(data.get("email"))
    password = data.get("password")
    require(isinstance(password, str) and MIN_PASSWORD <= len(password) <= MAX_PASSWORD,
            f"'password' must have between {MIN_PASSWORD} and {MAX_PASSWORD} characters")
    address = chat.may_try(client, None)
    # Hash first, taken or not: "already registered" takes as long as a login's answer.
    password_hash = await chat.accounts.hash(password)
    uid = uuid.uuid4().hex
    try:
        require(not chat.directory.taken(email), "that email is already registered: log in instead")
        await chat.store.add_user(uid, name, email, password_hash)
    except (EventError, EmailTaken):  # EmailTaken: the same email signed up twice at once
        if address is not None:
            chat.address_failures.failed(address)
        raise EventError("invalid-data", "that email is already registered: log in instead") from None
    chat.directory.signed_up({"uid": uid, "name": name, "email": email})
    return chat.account(uid)


async def login(chat: ChatState, client: Client, data: Any) -> dict[str, Any]:
    data = _fields(data, "login", '{"email", "password"}')
    email, password = data.get("email"), data.get("password")
    require(isinstance(email, str) and isinstance(password, str) and len(password) <= MAX_PASSWORD,
            "login takes a string 'email' and 'password'")
    email = _email(email)
    address = chat.may_try(client, email)
    if email in chat.checking:
        raise rate_limited("a login for this account is being checked already: try again in a moment",
                          chat.accounts.hash_seconds)
    chat.checking.add(email)
    try:
        found = await chat.store.credentials(email)
        uid, password_hash = found if found is not None else (None, None)
        ok = await chat.accounts.verify(password_hash, password)
    finally:
        chat.checking.discard(email)
    if not (ok and uid is not None and await chat.directory.find(uid)):
        # Unknown emails count too, so a lockout does not tell which emails have accounts.
        chat.account_failures.failed(email)
        if address is not None:
            chat.address_failures.failed(address)
        raise EventError("unauthorized", "wrong email or password")
    chat.account_failures.succeeded(email)
    return chat.account(uid)


async def auth(chat: ChatState, client: Client, data: Any) -> dict[str, Any]:
    data = _fields(data, "auth", '{"token": TOKEN}')
    uid = chat.accounts.check(data.get("token"))
    require(await chat.directory.find(uid), "the token's user does not exist here: sign up again", code="unauthorized")
    current = client.session.uid
    require(current in (None, uid), "this connection is another user's: open a new one")
    if current is None:
        chat.attach(client, uid)
    else:
        client.emit("user-list", chat.user_list())
    return {"user": chat.directory.user(uid)}


def subscribe_presence(chat: ChatState, client: Client, data: Any) -> list[dict[str, Any]]:
    """Opt in to ``user-status`` per change instead of ``user-list``; acknowledged with the list."""
    chat.uid(client)
    return chat.presence.subscribe(client)


async def personal_message(chat: ChatState, client: Client, data: Any) -> Json:
    sender = chat.uid(client)
    data = _fields(data, "personal-message", '{"to": UID, "message": STR}')
    recipient = await chat.known(data.get("to"), "to")
    text = data.get("message")
    require(isinstance(text, str) and 0 < len(text) <= MAX_TEXT and not text.isspace(), BAD_TEXT)
    client_id = data.get("clientId")
    require(client_id is None or (isinstance(client_id, str) and 0 < len(client_id) <= MAX_CLIENT_ID), BAD_CLIENT_ID)
    # Stored (with the messages that arrived meanwhile, in one transaction) before anyone hears of it.
    message, new = await chat.store.add_message(sender, recipient, text, client_id)
    encoded = Json(dumps(message))  # once, for the pushes and the acknowledgement
    if new:  # a retry was delivered the first time; only its acknowledgement got lost
        # Pushed to every open socket of the sender and the recipient (on every node), with its offset.
        chat.mailbox.stored(message, encoded)
    return encoded


async def typing(chat: ChatState, client: Client, data: Any) -> None:
    sender = chat.uid(client)
    data = _fields(data, "typing", '{"to": UID}')
    recipient = await chat.known(data.get("to"), "to")
    # To a room: with several nodes, the recipient's sockets on the other nodes get it too.
    chat.server.broadcast("typing", {"from": sender}, to=user_room(recipient))


async def history(chat: ChatState, client: Client, data: Any) -> list[dict[str, Any]]:
    me = chat.uid(client)
    data = _fields(data, "history", '{"with": UID, "after"?: MESSAGE_ID}')
    other = await chat.known(data.get("with"), "with")
    after = data.get("after")
    require(after is None or (type(after) is int and 0 <= after <= MAX_ID),
            f"'after' must be a message id (an integer from 0 to {MAX_ID})")
    return await chat.store.history(me, other, after=after)


async def resume(chat: ChatState, client: Client, data: Any) -> dict[str, Any]:
    """``{"offset", "epoch"}``: the pushes missed since ``offset``, in order, then how many (``mailbox``)."""
    return await chat.mailbox.resume(client, chat.uid(client), data)


#: Every event of the chat, its handler, and what it costs of the sender's rate limit: a login
#: or sign-up hashes a password (hundreds of milliseconds of a worker), so it weighs more.
EVENTS: dict[str, tuple[Callable[..., Any], int]] = {
    "sign-up": (sign_up, LOGIN_COST),
    "login": (login, LOGIN_COST),
    "auth": (auth, 1),
    "subscribe-presence": (subscribe_presence, 1),
    "personal-message": (personal_message, 1),
    "typing": (typing, 1),
    "history": (history, 1),
    "resume": (resume, 1),
}


def build(
    db: str | None = None,
    *,
    secret: str | None = None,
    token_ttl: float = TOKEN_TTL_S,
    fast_hashing: bool = False,
    limits: ChatLimits | None = None,
    max_batch: int | None = None,
    trace: Trace | None = None,
) -> EventServer[ChatState]:
    """The chat on ``db`` (a temporary database when None, deleted at ``aclose``), not started.

    The token secret is ``secret``, else ``$LABTOOLS_CHAT_SECRET``, else one generated and kept
    in ``DB.secret`` beside the database (so tokens outlive a restart, and each install has
    its own). ``fast_hashing`` lowers argon2's cost for tests and crowds only. ``limits``:
    what one user, connection or address may cost (``ChatLimits``' defaults when None).
    ``max_batch``: the most messages one commit stores (None: all that wait; 1: one commit per
    message, for comparison).

    The serving code may make it one node of several (``server.use``, a Redis adapter): the
    nodes then share ``db``, which must be a file (``starting`` refuses a temporary one).
    """
    limits = limits or ChatLimits()
    temporary = None
    if db is None or db == ":memory:":
        temporary = tempfile.TemporaryDirectory(prefix="labtools-chat-")
        folder = Path(temporary.name)
        db = db or str(folder / "chat.db")
        secret_path = folder / "chat.db.secret"
    else:
        secret_path = Path(db + ".secret")
    secret = secret or os.environ.get(SECRET_ENV) or load_secret(secret_path)
    accounts = Accounts(secret, token_ttl=token_ttl, fast_hashing=fast_hashing,
                        max_wait=limits.hash_max_wait, max_queue=limits.hash_max_queue)
    server: EventServer[ChatState] = EventServer("chat", page="chat", trace=trace, session=ChatSession)
    chat = server.state = ChatState(server, Store(db, max_batch=max_batch), accounts, limits, temporary)
    for event, (handler, cost) in EVENTS.items():
        server.on(event, cost=cost)(partial(handler, chat))
    server.connected(partial(on_connect, chat))
    server.disconnected(chat.presence.detach)
    server.starting(lambda: chat.open(server.bus))
    server.closed(chat.close)
    return server
