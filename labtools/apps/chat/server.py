"""The private chat (PROTOCOL.md ``chat``): accounts, an authenticated socket, presence,
private messages that are stored before they are acknowledged, and history to catch up.

Who may do what is decided by the connection, never by the data: a connection becomes a user
only by presenting a token the server signed, and every message it sends is stored ``from``
that user, whatever the frame claims. History is always "between me and ``with``", so nobody
can ask for another pair's conversation.

Presence is counted per user, not per socket: a user with two tabs open is online until the
last one closes, and ``user-list`` goes out only when that changes (or to a connection that
has just authenticated).
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from ...events import Client, EventError, EventServer
from ...events.server import require
from ...measure.metrics import Trace
from .accounts import SECRET_ENV, TOKEN_TTL_S, Accounts, load_secret
from .store import EmailTaken, Store

MAX_TEXT = 2000
MAX_NAME = 40
MIN_PASSWORD = 8
MAX_PASSWORD = 256
MAX_CLIENT_ID = 100
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
ONLINE = "online"  # the room of every authenticated connection: who receives user-list


def _fields(data: Any, event: str, shape: str) -> dict[str, Any]:
    require(isinstance(data, dict), f"{event} takes {shape}")
    return data


def _email(value: Any) -> str:
    require(isinstance(value, str) and len(value) <= 254, "'email' must be an email address")
    email = value.strip().lower()
    require(EMAIL.fullmatch(email) is not None, "'email' must be an email address")
    return email


class ChatServer:
    """The chat app: an ``EventServer`` with the chat's handlers, a ``Store`` and ``Accounts``."""

    def __init__(self, store: Store, accounts: Accounts, *, trace: Trace | None = None,
                 temporary: tempfile.TemporaryDirectory | None = None) -> None:
        self.store = store
        self.accounts = accounts
        self.events = EventServer("chat", page="chat", trace=trace)
        self.users: dict[str, dict[str, str]] = {}  # uid -> {"uid", "name", "email"}, sign-up order
        self.emails: set[str] = set()
        self.connections: dict[str, set[Client]] = {}  # uid -> that user's open, authenticated sockets
        self._temporary = temporary
        self._closed = False
        self._register()

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
        await self.store.close()
        self.accounts.close()
        if self._temporary is not None:
            self._temporary.cleanup()

    # ----- presence ----------------------------------------------------------------------

    def user_list(self) -> list[dict[str, Any]]:
        return [
            {"uid": uid, "name": user["name"], "online": uid in self.connections} for uid, user in self.users.items()
        ]

    def _attach(self, client: Client, uid: str) -> None:
        """Make ``client`` a connection of ``uid``; everyone hears of it if the user was offline."""
        client.state["uid"] = uid
        client.name = self.users[uid]["name"]
        sockets = self.connections.setdefault(uid, set())
        first = not sockets
        sockets.add(client)
        client.join(ONLINE)
        if first:
            self.events.broadcast("user-list", self.user_list(), to=ONLINE)
        else:
            client.emit("user-list", self.user_list())

    def _detach(self, client: Client) -> None:
        uid = client.state.get("uid")
        if uid is None:
            return
        sockets = self.connections.get(uid, set())
        sockets.discard(client)
        if not sockets:
            self.connections.pop(uid, None)
            self.events.broadcast("user-list", self.user_list(), to=ONLINE)

    def _uid(self, client: Client) -> str:
        uid = client.state.get("uid")
        require(uid is not None, "authenticate first: ?token= in the URL or an auth event", code="unauthorized")
        return uid

    def _known(self, value: Any, field: str) -> str:
        require(isinstance(value, str) and value in self.users, f"'{field}' must be the uid of a registered user")
        return value

    def _account(self, uid: str) -> dict[str, Any]:
        return {"user": dict(self.users[uid]), "token": self.accounts.issue(uid)}

    # ----- the events --------------------------------------------------------------------

    def _register(self) -> None:
        on = self.events.on
        on("sign-up")(self.sign_up)
        on("login")(self.login)
        on("auth")(self.auth)
        on("personal-message")(self.personal_message)
        on("typing")(self.typing)
        on("history")(self.history)
        self.events.connected(self.on_connect)
        self.events.disconnected(self._detach)

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
        self._attach(client, uid)

    async def sign_up(self, client: Client, data: Any) -> dict[str, Any]:
        data = _fields(data, "sign-up", '{"name", "email", "password"}')
        name = data.get("name")
        require(isinstance(name, str) and 0 < len(name.strip()) <= MAX_NAME,
                f"'name' must be a non-empty string of at most {MAX_NAME} characters")
        email = _email(data.get("email"))
        password = data.get("password")
        require(isinstance(password, str) and MIN_PASSWORD <= len(password) <= MAX_PASSWORD,
                f"'password' must have between {MIN_PASSWORD} and {MAX_PASSWORD} characters")
        require(email not in self.emails, "that email is already registered: log in instead")
        password_hash = await self.accounts.hash(password)
        uid = uuid.uuid4().hex
        try:
            await self.store.add_user(uid, name.strip(), email, password_hash)
        except EmailTaken:  # the same email signed up twice at once: the database decided
            raise EventError("invalid-data", "that email is already registered: log in instead") from None
        self.users[uid] = {"uid": uid, "name": name.strip(), "email": email}
        self.emails.add(email)
        self.events.broadcast("user-list", self.user_list(), to=ONLINE)
        return self._account(uid)

    async def login(self, client: Client, data: Any) -> dict[str, Any]:
        data = _fields(data, "login", '{"email", "password"}')
        email, password = data.get("email"), data.get("password")
        require(isinstance(email, str) and isinstance(password, str) and len(password) <= MAX_PASSWORD,
                "login takes a string 'email' and 'password'")
        found = await self.store.credentials(email.strip().lower())
        uid, password_hash = found if found is not None else (None, None)
        ok = await self.accounts.verify(password_hash, password)
        require(ok and uid in self.users, "wrong email or password", code="unauthorized")
        return self._account(uid)

    def auth(self, client: Client, data: Any) -> dict[str, Any]:
        data = _fields(data, "auth", '{"token": TOKEN}')
        uid = self.accounts.check(data.get("token"))
        require(uid in self.users, "the token's user does not exist here: sign up again", code="unauthorized")
        current = client.state.get("uid")
        require(current in (None, uid), "this connection is another user's: open a new one")
        if current is None:
            self._attach(client, uid)
        else:
            client.emit("user-list", self.user_list())
        return {"user": dict(self.users[uid])}

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
            targets = self.connections.get(sender, set()) | self.connections.get(recipient, set())
            self.events.broadcast("personal-message", message, to=targets)
        return message

    def typing(self, client: Client, data: Any) -> None:
        sender = self._uid(client)
        data = _fields(data, "typing", '{"to": UID}')
        recipient = self._known(data.get("to"), "to")
        self.events.broadcast("typing", {"from": sender}, to=self.connections.get(recipient, ()))

    async def history(self, client: Client, data: Any) -> list[dict[str, Any]]:
        me = self._uid(client)
        data = _fields(data, "history", '{"with": UID, "after"?: MESSAGE_ID}')
        other = self._known(data.get("with"), "with")
        after = data.get("after")
        require(after is None or (type(after) is int and after >= 0), "'after' must be a message id")
        return await self.store.history(me, other, after=after)


def build(
    db: str | None = None,
    *,
    secret: str | None = None,
    token_ttl: float = TOKEN_TTL_S,
    fast_hashing: bool = False,
    trace: Trace | None = None,
) -> ChatServer:
    """The chat on ``db`` (a temporary database when None, deleted at ``aclose``), not started.

    The token secret is ``secret``, else ``$LABTOOLS_CHAT_SECRET``, else one generated and kept
    in ``DB.secret`` beside the database (so tokens outlive a restart, and each install has
    its own). ``fast_hashing`` lowers argon2's cost for tests and crowds only.
    """
    temporary = None
    if db is None or db == ":memory:":
        temporary = tempfile.TemporaryDirectory(prefix="labtools-chat-")
        folder = Path(temporary.name)
        db = db or str(folder / "chat.db")
        secret_path = folder / "chat.db.secret"
    else:
        secret_path = Path(db + ".secret")
    secret = secret or os.environ.get(SECRET_ENV) or load_secret(secret_path)
    return ChatServer(
        Store(db), Accounts(secret, token_ttl=token_ttl, fast_hashing=fast_hashing), trace=trace, temporary=temporary
    )
