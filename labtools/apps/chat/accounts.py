"""Accounts and tokens: argon2 password hashes and signed, expiring JWTs.

Why argon2: a leaked database must not give away passwords. argon2 is slow and memory-hard on
purpose (about 0.1 s and 64 MiB per hash with the library's defaults), so guessing is
expensive; that is also why hashing runs on a small thread pool of its own: the event loop
keeps serving messages while someone signs up, and at most one hash per core holds its memory.

Why tokens: the login is checked once; afterwards the browser proves who it is with a token
signed by the server (HS256). A WebSocket opened by a browser cannot carry an ``Authorization``
header, so the token travels as ``?token=`` in the socket URL or in an ``auth`` event. The
secret is generated once per install and stored beside the database, never a constant in the
code: anyone who knows the secret can sign tokens for any user.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ...events import EventError

TOKEN_TTL_S = 12 * 3600
SECRET_ENV = "LABTOOLS_CHAT_SECRET"
ALGORITHM = "HS256"


def load_secret(path: Path) -> str:
    """The signing secret stored at ``path``, created (readable by the owner only) on first use."""
    try:
        secret = path.read_text(encoding="ascii").strip()
        if secret:
            return secret
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(secret + "\n")
    return secret


def password_hasher(fast: bool) -> PasswordHasher:
    """argon2 with the library's defaults; ``fast`` (tests and crowds only) cuts the cost ~100×."""
    if fast:
        return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    return PasswordHasher()


class Accounts:
    """Hashing and checking passwords off the loop; issuing and checking tokens."""

    def __init__(self, secret: str, *, token_ttl: float = TOKEN_TTL_S, fast_hashing: bool = False) -> None:
        if len(secret) < 16:
            raise ValueError("the token secret must be at least 16 characters")
        self.secret = secret
        self.token_ttl = token_ttl
        self.hasher = password_hasher(fast_hashing)
        self._executor = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="chat-hash")
        # Logging in with an unknown email still costs one verification, so the answer's timing
        # does not tell which emails have accounts. Hashed on first need, on the pool.
        self._decoy: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when ``password`` matches; ``None`` (no such account) verifies against a decoy."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._verify, password_hash, password)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        if password_hash is None:
            if self._decoy is None:
                self._decoy = self.hasher.hash(secrets.token_urlsafe(16))
            candidate = self._decoy
        else:
            candidate = password_hash
        try:
            return self.hasher.verify(candidate, password) and password_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    def issue(self, uid: str, ttl: float | None = None) -> str:
        """A token saying "this is ``uid``", valid for ``ttl`` seconds (the server's default)."""
        now = int(time.time())
        expires = now + int(self.token_ttl if ttl is None else ttl)
        return jwt.encode({"sub": uid, "iat": now, "exp": expires}, self.secret, algorithm=ALGORITHM)

    def check(self, token: object) -> str:
        """The uid a token was issued to; ``unauthorized`` when it is missing, forged or expired."""
        if not isinstance(token, str) or not token:
            raise EventError("unauthorized", "a token is required: log in first")
        try:
            claims = jwt.decode(token, self.secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]})
        except jwt.ExpiredSignatureError:
            raise EventError("unauthorized", "the token has expired: log in again") from None
        except jwt.InvalidTokenError:
            raise EventError("unauthorized", "the token is not valid: log in again") from None
        uid = claims["sub"]
        if not isinstance(uid, str):
            raise EventError("unauthorized", "the token is not valid: log in again")
        return uid

    def close(self) -> None:
        self._executor.shutdown(wait=True)
