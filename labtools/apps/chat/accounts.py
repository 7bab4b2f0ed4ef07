"""Accounts and tokens: argon2 password hashes and signed, expiring JWTs.

Why argon2: a leaked database must not give away passwords. argon2 is slow and memory-hard on
purpose (about 0.1 s and 64 MiB per hash with the library's defaults), so guessing is
expensive; that is also why hashing runs on a small thread pool of its own: the event loop
keeps serving messages while someone signs up, and at most one hash per core holds its memory.

Why tokens: the login is checked once; afterwards the browser proves who it is with a token
signed by the server (HS256). A WebSocket opened by a browser cannot carry an ``Authorization``
header, so the token travels as ``?token=`` in the socket URL or in an ``auth`` event. The
secret is generated once per install and stored beside the database, never a constant in the
code: anyone who knows the secret can sign tokens for any user. So the secret file is created
readable by its owner only, and a secret file that others could read or change, or that
another user owns, is refused rather than trusted.

Why a bounded hashing queue: a hash costs a core for ~0.1 s, so a crowd of logins can queue
far more work than the pool does in seconds, and a genuine user behind it waits unanswered.
A request that would wait longer than ``max_wait`` (estimated from the hashes measured so
far) is refused at once with ``rate-limited`` and a ``retryAfter``, which costs nothing.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ...events import EventError
from .throttle import rate_limited

TOKEN_TTL_S = 12 * 3600
SECRET_ENV = "LABTOOLS_CHAT_SECRET"
ALGORITHM = "HS256"
#: How long a login or sign-up may wait for the hashing pool before it is refused instead.
MAX_HASH_WAIT_S = 3.0
#: At most this many hashes queued or running, whatever the estimate says.
MAX_HASH_QUEUE = 256
T = TypeVar("T")


class UnsafeSecretFile(PermissionError):
    """A secret file that someone other than its owner could read or change: never trusted."""


def load_secret(path: Path) -> str:
    """The signing secret stored at ``path``, created (readable by the owner only) on first use.

    An existing file is read through one descriptor opened without following symlinks, and its
    owner and mode are checked on that descriptor: a file anyone else could read leaks every
    token; one anyone else could write lets them choose the secret.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return _new_secret(path)
    except OSError as error:  # ELOOP: a symlink
        raise UnsafeSecretFile(f"{path}: the token secret must be a regular file, not a symlink ({error})") from None
    with os.fdopen(descriptor, "r", encoding="ascii") as file:
        _check_private(path, os.fstat(descriptor))
        secret = file.read().strip()
    return secret or _new_secret(path, replace=True)


def _check_private(path: Path, info: os.stat_result) -> None:
    """Refuse a secret file that is not a regular file owned by us with no group/other bits."""
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeSecretFile(f"{path}: the token secret must be a regular file")
    if info.st_uid != os.getuid():
        raise UnsafeSecretFile(f"{path}: the token secret belongs to uid {info.st_uid}, not to this user "
                               f"(uid {os.getuid()}); delete it or set ${SECRET_ENV}")
    if info.st_mode & 0o077:
        raise UnsafeSecretFile(f"{path}: the token secret has mode {stat.S_IMODE(info.st_mode):o}, so other users "
                               f"can read or change it; run chmod 600 on it (then log in again if it leaked)")


def _new_secret(path: Path, *, replace: bool = False) -> str:
    """Write a fresh secret with mode 0600, whole, then put it in place.

    Several nodes of the chat may start at once on one database: the secret is written to a
    file of its own and linked to ``path`` only complete (``link`` fails when ``path``
    exists), so a node never reads a half-written secret, and a node that loses the race
    reads the winner's.
    """
    secret = secrets.token_urlsafe(32)
    draft = path.with_name(f"{path.name}.{secrets.token_hex(4)}.new")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(secret + "\n")
        if replace:
            os.replace(draft, path)
            return secret
        try:
            os.link(draft, path)
        except FileExistsError:
            return load_secret(path)
        return secret
    finally:
        draft.unlink(missing_ok=True)


def password_hasher(fast: bool) -> PasswordHasher:
    """argon2 with the library's defaults; ``fast`` (tests and crowds only) cuts the cost ~100×."""
    if fast:
        return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    return PasswordHasher()


def _timed(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    """``fn(*args)`` and how long it took on the worker thread."""
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


class Accounts:
    """Hashing and checking passwords off the loop; issuing and checking tokens."""

    def __init__(
        self,
        secret: str,
        *,
        token_ttl: float = TOKEN_TTL_S,
        fast_hashing: bool = False,
        max_wait: float = MAX_HASH_WAIT_S,
        max_queue: int = MAX_HASH_QUEUE,
    ) -> None:
        """``max_wait``: seconds a hash may be expected to queue before it is refused instead;
        ``max_queue``: hashes queued or running at most, whatever the estimate."""
        if len(secret) < 16:
            raise ValueError("the token secret must be at least 16 characters")
        if max_wait <= 0 or max_queue < 1:
            raise ValueError("max_wait must be positive and max_queue at least 1")
        self.secret = secret
        self.token_ttl = token_ttl
        self.hasher = password_hasher(fast_hashing)
        self.workers = os.cpu_count() or 2
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="chat-hash")
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.pending = 0  # hashes queued or running
        self.refused = 0  # requests refused because the queue was full
        # Seconds per hash, measured (a moving average); until the first one, argon2's usual
        # cost on one core (about 0.1 s at the default parameters, ~100x less when fast).
        self.hash_seconds = 0.001 if fast_hashing else 0.1
        # Logging in with an unknown email still costs one verification, so the answer's timing
        # does not tell which emails have accounts. Hashed on first need, on the pool.
        self._decoy: str | None = None

    def queue_wait(self) -> float:
        """Seconds a new hash should wait for a free worker, by the measured rate (0 when one is idle)."""
        ahead = self.pending - self.workers + 1  # hashes that must finish before a worker is free
        return max(0, ahead) / self.workers * self.hash_seconds

    def _admit(self) -> None:
        """Refuse a hash that would queue past ``max_wait`` (or overfill the queue): answered now, not in minutes.

        A hash that finds a worker idle always runs, however slow hashing is on this machine.
        """
        wait = self.queue_wait()
        if self.pending >= self.max_queue or wait > self.max_wait:
            self.refused += 1
            raise rate_limited(
                f"the server is busy hashing passwords ({self.pending} queued, about {self.hash_seconds:.2f} s "
                f"per hash): try again in a moment", wait - self.max_wait + self.hash_seconds)

    async def _hashing(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the hashing pool if the queue has room; measure its cost for the estimate."""
        self._admit()
        self.pending += 1
        try:
            result, seconds = await asyncio.get_running_loop().run_in_executor(self._executor, _timed, fn, *args)
        finally:
            self.pending -= 1
        self.hash_seconds += (seconds - self.hash_seconds) * 0.2
        return result

    async def hash(self, password: str) -> str:
        return await self._hashing(self.hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when ``password`` matches; ``None`` (no such account) verifies against a decoy."""
        return await self._hashing(self._verify, password_hash, password)

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
