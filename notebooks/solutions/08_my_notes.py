"""My private notes (lesson 08, build it yourself): every note needs a login token.

* ``login`` ``{"name": NAME, "password": PASSWORD}``: the first login with a name makes the
  account; later ones need the same password, else ``unauthorized``. Acknowledged with
  ``{"token": TOKEN}``: a new unguessable token, which the server remembers as NAME's;
* ``auth`` ``{"token": TOKEN}``: the socket is now NAME's, acknowledged with ``{"name": NAME}``;
  a token the server did not give is refused with ``unauthorized`` and changes nothing;
* ``add-note`` ``{"text": TEXT}`` (1 to 200 characters) and ``my-notes`` (no data) are
  acknowledged with the socket's user's notes, oldest first, and only theirs; on a socket that
  has not authenticated they are refused with ``unauthorized``.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

from labtools.events import Client, EventError, EventServer, require

MAX_NAME, MAX_PASSWORD, MAX_NOTE = 20, 100, 200
hasher = PasswordHasher()


async def hash_password(password: str) -> str:
    """An argon2 hash, made on a thread: it takes a core for a moment, the loop serves on."""
    return await asyncio.to_thread(hasher.hash, password)


async def password_matches(stored_hash: str, password: str) -> bool:
    try:
        return await asyncio.to_thread(hasher.verify, stored_hash, password)
    except VerificationError:
        return False


@dataclass
class Notes:
    """The shared state: password hashes and notes by name, and each token's name."""

    hashes: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Session:
    """Who this socket is: None until it authenticates."""

    name: str | None = None


def text_field(data: Any, key: str, longest: int) -> str:
    """``data[key]``, a str of 1 to ``longest`` characters (else ``invalid-data``)."""
    value = data.get(key) if isinstance(data, dict) else None
    require(isinstance(value, str) and 0 < len(value) <= longest, f"'{key}' is 1 to {longest} characters")
    return value


def build() -> EventServer[Notes]:
    server = EventServer("my-notes", Notes(), session=Session)

    @server.change
    def sign_up(notes: Notes, account: dict[str, str]) -> str:
        """The stored hash of the name: the one given, unless someone signed up with it first."""
        return notes.hashes.setdefault(account["name"], account["hash"])

    @server.change
    def give_token(notes: Notes, grant: dict[str, str]) -> None:
        notes.tokens[grant["token"]] = grant["name"]

    @server.change
    def add(notes: Notes, note: dict[str, str]) -> list[str]:
        mine = notes.notes.setdefault(note["name"], [])
        mine.append(note["text"])
        return list(mine)

    def user_of(client: Client) -> str:
        """The name this socket authenticated as; ``unauthorized`` while it has not."""
        if client.session.name is None:
            raise EventError("unauthorized", "log in, then auth with your token")
        return client.session.name

    @server.on("login")
    async def login(client: Client, data: Any) -> dict[str, str]:
        name, password = text_field(data, "name", MAX_NAME), text_field(data, "password", MAX_PASSWORD)
        stored = server.state.hashes.get(name)
        if stored is None:  # the first login with this name makes the account
            account = {"name": name, "hash": await hash_password(password)}
            stored = await server.update(sign_up, account, sender=client)
        if not await password_matches(stored, password):
            raise EventError("unauthorized", "wrong name or password")
        token = secrets.token_urlsafe(24)  # unguessable; drawn here, so every node stores the same one
        await server.update(give_token, {"token": token, "name": name}, sender=client)
        return {"token": token}

    @server.on("auth")
    def auth(client: Client, data: Any) -> dict[str, str]:
        token = data.get("token") if isinstance(data, dict) else None
        name = server.state.tokens.get(token) if isinstance(token, str) else None
        if name is None:
            raise EventError("unauthorized", "not a token of this server: log in again")
        client.session.name = name
        return {"name": name}

    @server.on("add-note")
    async def add_note(client: Client, data: Any) -> list[str]:
        name = user_of(client)  # the user comes from the token, never from the data
        text = text_field(data, "text", MAX_NOTE)
        return await server.update(add, {"name": name, "text": text}, sender=client)

    @server.on("my-notes")
    def my_notes(client: Client, data: Any) -> list[str]:
        return list(server.state.notes.get(user_of(client), []))

    return server
