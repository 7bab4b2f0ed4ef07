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
"""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from ...events import Client, EventError, EventServer
from ...events.server import require
from ...measure.metrics import Trace
from .accounts import (
    MAX_HASH_QUEUE,
    MAX_HASH_WAIT_S,
    SECRET_ENV,
    TOKEN_TTL_S,
    Accounts,
    RateLimited,
    load_secret,
)
from .presence import Presence
from .store import MAX_ID, EmailTaken, Store
from .throttle import AttemptBucket, FailureThrottle, is_loopback

MAX_TEXT = 2000
MAX_NAME = 40
MIN_PASSWORD = 8
MAX_PASSWORD = 256
MAX_CLIENT_ID = 100
MAX_MARKS = 2  # combining marks after one base character in a name (enough for any script)
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")  # always fullmatch: no "$" that lets a newline through
HIDDEN = ("Cc", "Cf")  # control and format characters: NUL, newlines, RTL overrides, zero-width spaces


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


class ChatServer:
    """The chat app: an ``EventServer`` with the chat's handlers, a ``Store`` and ``Accounts``."""

    def __init__(self, store: Store, accounts: Accounts, *, limits: ChatLimits | None = None,
                 trace: Trace | None = None, temporary: tempfile.TemporaryDirectory | None = None) -> None:
        self.store = store
        self.accounts = accounts
        self.limits = limits = limits or ChatLimits()
        self.events = EventServer("chat", page="chat", trace=trace)
        self.users: dict[str, dict[str, str]] = {}  # uid -> {"uid", "name", "email"}, sign-up order
        self.emails: set[str] = set()
        self.presence = Presence(self.events, self.users, window=limits.presence_window,
                                 max_sockets=limits.max_sockets)
        self.account_failures = self._failures("account", limits.account_failures)
        # Emails with a login being checked now: one at a time per account, so that a crowd of
        # sockets cannot get many guesses past the failure count before its window closes.
        self._checking: set[str] = set()
        self.address_failures = self._failures("address", limits.address_failures)
        self._temporary = temporary
        self._closed = False
        self._register()

    def _failures(self, what: str, threshold: int) -> FailureThrottle:
        limits = self.limits
        return FailureThrottle(what, threshold=threshold, base=limits.lockout_base,
                               longest=limits.lockout_longest, forget=limits.forget_after)

    # ----- what ServerHandle and the CLI use ----------------------------------------------

    @property
    def url(self) -> str:
        return self.events.url

    @property
    def host(self) -> str:
        return self.events.host

    @property
    def port(self) -> int:
        return self.events.port

    @property
    def traffic(self) -> Any:
        return self.events.traffic

    @property
    def connections(self) -> dict[str, dict[Client, None]]:
        """uid -> that user's open, authenticated sockets (oldest first)."""
        return self.presence.connections

    async def start(self, host: str, port: int) -> None:
        await self.store.open()
        for user in await self.store.users():
            self.users[user["uid"]] = user
            self.emails.add(user["email"])
        await self.events.start(host, port)

    async def aclose(self) -> None:
        """Close every connection, then the database, then the temporary folder (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await self.events.aclose()
        self.presence.close()
        await self.store.close()
        self.accounts.close()
        if self._temporary is not None:
            self._temporary.cleanup()

    def user_list(self) -> list[dict[str, Any]]:
        return self.presence.user_list()

    # ----- who is asking ------------------------------------------------------------------

    def _uid(self, client: Client) -> str:
        uid = client.state.get("uid")
        require(uid is not None, "authenticate first: ?token= in the URL or an auth event", code="unauthorized")
        return uid

    def _known(self, value: Any, field: str) -> str:
        require(isinstance(value, str) and value in self.users, f"'{field}' must be the uid of a registered user")
        return value

    def _account(self, uid: str) -> dict[str, Any]:
        return {"user": dict(self.users[uid]), "token": self.accounts.issue(uid)}

    def _address(self, client: Client) -> str | None:
        """The peer's IP when its failures are counted per address; None when exempt (loopback)."""
        remote = client.connection.remote_address
        address = str(remote[0]) if remote else ""
        return None if self.limits.exempt(address) else address

    def _may_try(self, client: Client, email: str | None) -> str | None:
        """Spend one of the connection's attempts and check the lockouts; the address to blame."""
        bucket = client.state.get("attempts")
        if bucket is None:
            bucket = client.state["attempts"] = AttemptBucket(self.limits.attempts_burst,
                                                              self.limits.attempts_per_second)
        bucket.take()
        address = self._address(client)
        if address is not None:
            self.address_failures.check(address)
        if email is not None:
            self.account_failures.check(email)
        return address

    # ----- the events --------------------------------------------------------------------

    def _register(self) -> None:
        on = self.events.on
        on("sign-up")(self.sign_up)
        on("login")(self.login)
        on("auth")(self.auth)
        on("subscribe-presence")(self.subscribe_presence)
        on("personal-message")(self.personal_message)
        on("typing")(self.typing)
        on("history")(self.history)
        self.events.connected(self.on_connect)
        self.events.disconnected(self.presence.detach)

    def on_connect(self, client: Client) -> None:
        """``?token=`` authenticates at once; a bad one leaves the socket unauthenticated, and says why."""
        tokens = parse_qs(client.query).get("token")
        if not tokens:
            return
        try:
            uid = self.accounts.check(tokens[0])
            require(uid in self.users, "the token's user does not exist here: sign up again", code="unauthorized")
        except EventError as error:
            client.emit("error", error.as_data())
            return
        self.presence.attach(client, uid)

    async def sign_up(self, client: Client, data: Any) -> dict[str, Any]:
        data = _fields(data, "sign-up", '{"name", "email", "password"}')
        name = _name(data.get("name"))
        email = _email(data.get("email"))
        password = data.get("password")
        require(isinstance(password, str) and MIN_PASSWORD <= len(password) <= MAX_PASSWORD,
                f"'password' must have between {MIN_PASSWORD} and {MAX_PASSWORD} characters")
        address = self._may_try(client, None)
        # Hash first, taken or not: "already registered" takes as long as a login's answer.
        password_hash = await self.accounts.hash(password)
        uid = uuid.uuid4().hex
        try:
            require(email not in self.emails, "that email is already registered: log in instead")
            await self.store.add_user(uid, name, email, password_hash)
        except (EventError, EmailTaken):  # EmailTaken: the same email signed up twice at once
            if address is not None:
                self.address_failures.failed(address)
            raise EventError("invalid-data", "that email is already registered: log in instead") from None
        self.users[uid] = {"uid": uid, "name": name, "email": email}
        self.emails.add(email)
        self.presence.changed(uid)
        return self._account(uid)

    async def login(self, client: Client, data: Any) -> dict[str, Any]:
        data = _fields(data, "login", '{"email", "password"}')
        email, password = data.get("email"), data.get("password")
        require(isinstance(email, str) and isinstance(password, str) and len(password) <= MAX_PASSWORD,
                "login takes a string 'email' and 'password'")
        email = _email(email)
        address = self._may_try(client, email)
        if email in self._checking:
            raise RateLimited("a login for this account is being checked already: try again in a moment",
                              self.accounts.hash_seconds)
        self._checking.add(email)
        try:
            found = await self.store.credentials(email)
            uid, password_hash = found if found is not None else (None, None)
            ok = await self.accounts.verify(password_hash, password)
        finally:
            self._checking.discard(email)
        if not (ok and uid in self.users):
            # Unknown emails count too, so a lockout does not tell which emails have accounts.
            self.account_failures.failed(email)
            if address is not None:
                self.address_failures.failed(address)
            raise EventError("unauthorized", "wrong email or password")
        self.account_failures.succeeded(email)
        return self._account(uid)

    def auth(self, client: Client, data: Any) -> dict[str, Any]:
        data = _fields(data, "auth", '{"token": TOKEN}')
        uid = self.accounts.check(data.get("token"))
        require(uid in self.users, "the token's user does not exist here: sign up again", code="unauthorized")
        current = client.state.get("uid")
        require(current in (None, uid), "this connection is another user's: open a new one")
        if current is None:
            self.presence.attach(client, uid)
        else:
            client.emit("user-list", self.user_list())
        return {"user": dict(self.users[uid])}

    def subscribe_presence(self, client: Client, data: Any) -> list[dict[str, Any]]:
        """Opt in to ``user-status`` per change instead of ``user-list``; acknowledged with the list."""
        self._uid(client)
        return self.presence.subscribe(client)

    async def personal_message(self, client: Client, data: Any) -> dict[str, Any]:
        sender = self._uid(client)
        data = _fields(data, "personal-message", '{"to": UID, "message": STR}')
        recipient = self._known(data.get("to"), "to")
        text = data.get("message")
        require(isinstance(text, str) and text.strip() != "" and len(text) <= MAX_TEXT,
                f"'message' must be a non-empty string of at most {MAX_TEXT} characters")
        client_id = data.get("clientId")
        require(client_id is None or (isinstance(client_id, str) and 0 < len(client_id) <= MAX_CLIENT_ID),
                f"'clientId' must be a string of 1 to {MAX_CLIENT_ID} characters")
        message, new = await self.store.add_message(sender, recipient, text, client_id)
        if new:  # a retry was delivered the first time; only its acknowledgement got lost
            targets = {*self.presence.sockets(sender), *self.presence.sockets(recipient)}
            self.events.broadcast("personal-message", message, to=targets)
        return message

    def typing(self, client: Client, data: Any) -> None:
        sender = self._uid(client)
        data = _fields(data, "typing", '{"to": UID}')
        recipient = self._known(data.get("to"), "to")
        self.events.broadcast("typing", {"from": sender}, to=self.presence.sockets(recipient))

    async def history(self, client: Client, data: Any) -> list[dict[str, Any]]:
        me = self._uid(client)
        data = _fields(data, "history", '{"with": UID, "after"?: MESSAGE_ID}')
        other = self._known(data.get("with"), "with")
        after = data.get("after")
        require(after is None or (type(after) is int and 0 <= after <= MAX_ID),
                f"'after' must be a message id (an integer from 0 to {MAX_ID})")
        return await self.store.history(me, other, after=after)


def build(
    db: str | None = None,
    *,
    secret: str | None = None,
    token_ttl: float = TOKEN_TTL_S,
    fast_hashing: bool = False,
    limits: ChatLimits | None = None,
    trace: Trace | None = None,
) -> ChatServer:
    """The chat on ``db`` (a temporary database when None, deleted at ``aclose``), not started.

    The token secret is ``secret``, else ``$LABTOOLS_CHAT_SECRET``, else one generated and kept
    in ``DB.secret`` beside the database (so tokens outlive a restart, and each install has
    its own). ``fast_hashing`` lowers argon2's cost for tests and crowds only. ``limits``:
    what one user, connection or address may cost (``ChatLimits``' defaults when None).
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
    return ChatServer(Store(db), accounts, limits=limits, trace=trace, temporary=temporary)
