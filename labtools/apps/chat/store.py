"""The chat's storage: users and messages in SQLite, without stalling the event loop.

Why a dedicated thread: ``sqlite3`` calls block, and the event loop that runs the server also
runs every other client's frames; a statement that waits (for another process's write lock, a
checkpoint's ``fsync``, a long read) would stall every conversation. So reads, sign-ups and
checkpoints go to one worker thread that owns its connection: statements never interleave,
nothing needs a lock, and the loop only awaits a future.

Why a batch of messages is written on the loop all the same: handing it to the thread costs
more than writing it. The thread must take Python's lock back after every SQLite call, and
under load the loop holds it: measured, a 100-message batch on the thread waited 12-20 ms for
the lock (``benchmarks/chat_timeline.py``). Written on the loop, in one ``executemany``, it
waits for nothing: a batch of about 100 costs the loop about 2.3 ms, its commit included (the
same benchmark, under the peers' load at P=100). Only when the write lock is free at once:
the loop's connection never waits (busy timeout 0) and never checkpoints, and a batch that
finds the lock taken (another node of the deployment is writing) goes to the thread, which
waits for it. (better-sqlite3, Node's synchronous SQLite, makes the same bet.)

Why WAL with ``synchronous=NORMAL``: a commit is then a write to the log without an ``fsync``,
so storing a message costs microseconds, and a committed message survives the server process
dying or restarting (what the lesson shows). Only a power cut can lose the last commits; a
bank would pay for ``synchronous=FULL``, a course chat does not. The log is copied into the
database (a checkpoint, which does ``fsync``) on the thread, every ``CHECKPOINT_EVERY`` messages.

Why group commit: each ``COMMIT`` is a write to the log, and each statement a trip into
SQLite. So messages are stored in batches: those that arrive in one turn of the event loop (or
while a batch is with the thread) go together, in one transaction. Each message is still
acknowledged only after the ``COMMIT`` that holds its row, and the UNIQUE (sender, client_id)
index still decides what is a retry, inside a batch too. An idle chat writes batches of one; a
busy one, batches of tens (``batches``, ``batched_messages`` and ``largest_batch`` count them).

Why a busy timeout and an epoch: several nodes of the chat on one machine share this one file
(``mailbox``). SQLite lets one writer at a time in; the thread's statements wait for the lock
(up to ``BUSY_TIMEOUT_S``) instead of failing at once. The ``meta`` table holds the database's
epoch, a random id drawn when the database is created: message ids are offsets in that epoch,
and a new database (a temporary one, a deleted file) is a new epoch, so a client's old offset
is recognised as meaningless rather than misread.

Why mode 0600: the file holds password hashes, emails and private messages. The database is
created readable by its owner only, before SQLite opens it, and SQLite gives the WAL and
shared-memory files it creates the database's mode; files left by an older, looser version
are tightened when the store opens.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from ...events import EventError

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    uid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pair TEXT NOT NULL,
    sender TEXT NOT NULL REFERENCES users(uid),
    recipient TEXT NOT NULL REFERENCES users(uid),
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    client_id TEXT,
    UNIQUE (sender, client_id)
);
CREATE INDEX IF NOT EXISTS messages_by_pair ON messages (pair, id);
CREATE TABLE IF NOT EXISTS conversations (
    uid TEXT NOT NULL,
    pair TEXT NOT NULL,
    PRIMARY KEY (uid, pair)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
#: The schema's version (``PRAGMA user_version``). Version 0 kept two more indexes, by sender and
#: by recipient, for ``resume`` alone: two more pages each message dirtied. ``conversations``
#: replaces them (who took part in which pair: written once per pair), and ``Store._open`` upgrades.
SCHEMA_VERSION = 1
#: ``conversations`` filled from the messages stored (an older database; a benchmark's bulk fill).
CONVERSATIONS_OF_MESSAGES = ("INSERT OR IGNORE INTO conversations (uid, pair)"
                             " SELECT sender, pair FROM messages UNION SELECT recipient, pair FROM messages")
UPGRADE_TO_1 = f"""
BEGIN IMMEDIATE;
DROP INDEX IF EXISTS messages_by_sender;
DROP INDEX IF EXISTS messages_by_recipient;
{CONVERSATIONS_OF_MESSAGES};
PRAGMA user_version = 1;
COMMIT;
"""

MESSAGE_COLUMNS = "id, sender, recipient, body, created_at, client_id"
INSERT = (
    "INSERT INTO messages (pair, sender, recipient, body, created_at, client_id) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (sender, client_id) DO NOTHING"
)
LAST_ID = "SELECT coalesce(max(id), 0) FROM messages"
INSERTED = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id > ? ORDER BY id"
HISTORY_LAST = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE pair = ? ORDER BY id DESC LIMIT ?"
HISTORY_AFTER = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE pair = ? AND id > ? ORDER BY id LIMIT ?"
SELECT_RETRY = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE sender = ? AND client_id = ?"
# "From or to this user": the user's conversations, each searched in the pair index, in id order.
SINCE = (f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE pair IN (SELECT pair FROM conversations WHERE uid = ?1)"
         " AND id > ?2 AND id <= ?3 ORDER BY id LIMIT ?4")
CONVERSATION = "INSERT OR IGNORE INTO conversations (uid, pair) VALUES (?, ?)"
AFTER = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id > ? ORDER BY id LIMIT ?"
MAX_ID = 2**63 - 1  # SQLite's largest integer: a bigger one cannot even be bound to a query
PRIVATE = 0o600
#: Seconds a statement on the thread waits for another process's write lock before it fails.
BUSY_TIMEOUT_S = 10.0
#: Messages written between two checkpoints (``Store._checkpoint``). A message dirties about two
#: pages of its own (its two index entries land on pages of their sender and pair; the rows share
#: theirs), and a busy batch rewrites the same pages, so the log grows to some 18 MB between
#: checkpoints (4,500 pages, against SQLite's automatic 1,000). A checkpoint copies each page once
#: however often it was rewritten: measured under the peers' load, every 2,000 messages cost
#: 0.93-0.96x the CPU per message of every 500, with a slightly lower ack p99.
CHECKPOINT_EVERY = 2000
SIDE_FILES = ("", "-wal", "-shm", "-journal")


class EmailTaken(Exception):
    """Sign-up with an email that another account already uses."""


def refusal(error: BaseException) -> BaseException:
    """A database error a client can act on, as the ``EventError`` PROTOCOL documents: a full
    disk (or database) is ``storage-full``, nothing stored; any other error stays what it is."""
    if isinstance(error, sqlite3.Error) and getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return EventError("storage-full", "the server's disk is full: nothing was stored; try again later")
    return error


def is_busy(error: sqlite3.Error) -> bool:
    """Whether ``error`` is SQLite's "another connection holds the lock" (any SQLITE_BUSY_*)."""
    return (getattr(error, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_BUSY


def when_free(statement: Callable[[], T], within: float = BUSY_TIMEOUT_S) -> T:
    """Run ``statement`` (on the thread: it sleeps), again while it finds the database busy.

    SQLite's busy timeout covers waiting for a lock, but not every busy answer: to avoid a
    deadlock it answers at once, without waiting, when two connections would wait for each other,
    as two nodes opening one new file do (both turn it to WAL and create the schema). Measured
    in CI: a node of lesson 11's chat stopped at start with "database is locked". Every statement
    of ``_open`` may run twice, so each one is idempotent."""
    deadline = time.monotonic() + within
    while True:
        try:
            return statement()
        except sqlite3.OperationalError as error:
            if not is_busy(error) or time.monotonic() >= deadline:
                raise
        time.sleep(0.01)


def pair_key(a: str, b: str) -> str:
    """One key for a conversation whichever side asks: the two uids in order."""
    return f"{a}|{b}" if a <= b else f"{b}|{a}"


def _message(row: tuple) -> dict[str, Any]:
    """A stored row as PROTOCOL.md's message (``clientId`` only when the sender gave one)."""
    id, sender, recipient, body, created_at, client_id = row
    message: dict[str, Any] = {"id": id, "from": sender, "to": recipient, "message": body, "createdAt": created_at}
    if client_id is not None:
        message["clientId"] = client_id
    return message


class Store:
    """Users and messages in one SQLite file: message batches on the loop when the write lock is
    free, every other statement on one worker thread."""

    def __init__(self, path: str, *, max_batch: int | None = None) -> None:
        """``max_batch``: the most messages one transaction stores (None: every one waiting).
        ``max_batch=1`` is one commit per message, the design group commit replaces (lesson 08
        measures both)."""
        if max_batch is not None and max_batch < 1:
            raise ValueError("max_batch must be at least 1 (or None: no limit)")
        self.path = path
        self.max_batch = max_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-db")
        self._db: sqlite3.Connection | None = None  # the thread's
        self._writer: sqlite3.Connection | None = None  # the loop's: message batches only, never waits
        self._unchecked = 0  # messages written since the last checkpoint began
        self._copying = False  # a checkpoint's first step is under way, beside the writes
        self._finish_due = False  # the first step is done: the second begins after the next commit
        self._finishing = False  # the second step is under way: no batch is written meanwhile
        self._deferred = False  # a batch came due during the second step: written when it ends
        self.checkpoints = 0
        self.checkpoint_errors: list[str] = []
        self.epoch = ""  # the database's epoch, read at ``open``
        # Group commit (``add_message``): messages waiting for the next batch, whether one is
        # being written, and counters of what the batches held.
        self._waiting: list[tuple[str, str, str, str | None, asyncio.Future]] = []
        self._writing = False
        self.batches = 0
        self.batched_messages = 0
        self.largest_batch = 0
        self.batches_on_thread = 0  # batches that found the write lock taken

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as error:
            raise refusal(error) from error

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db

    # ----- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Create or open the database on the thread, then the loop's own connection to it."""
        if self.path == ":memory:" or self.path.startswith("file:"):
            raise ValueError("the chat's store is a file: its two connections must see one database")
        await self._run(self._open)
        self._writer = self._connect(busy_timeout=0.0)
        self._writer.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints are the thread's

    def _connect(self, busy_timeout: float) -> sqlite3.Connection:
        # autocommit: one statement, one commit (batches open their own transaction)
        db = sqlite3.connect(self.path, isolation_level=None, timeout=busy_timeout)
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        return db

    def _open(self) -> None:
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, PRIVATE))  # exists, 0600, before SQLite
        db = self._connect(BUSY_TIMEOUT_S)
        when_free(lambda: db.execute("PRAGMA journal_mode=WAL"))  # stored in the file: every connection uses it
        when_free(lambda: db.executescript(SCHEMA))
        if db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            when_free(lambda: db.executescript(UPGRADE_TO_1))  # another node may be upgrading it too
        epoch = secrets.token_hex(8)
        when_free(lambda: db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', ?)", (epoch,)))
        (self.epoch,) = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        self._db = db
        self._tighten()

    def _tighten(self) -> None:
        """Make the database and its side files owner-only (older files may be world-readable)."""
        for suffix in SIDE_FILES:
            path = self.path + suffix
            try:
                if os.stat(path).st_mode & 0o077:
                    os.chmod(path, PRIVATE)
            except FileNotFoundError:
                continue

    async def close(self) -> None:
        """Close the loop's connection here, the thread's on its thread, then stop the thread
        (idempotent)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._db is not None:
            await self._run(self._close)
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # ----- users -------------------------------------------------------------------------

    async def add_user(self, uid: str, name: str, email: str, password_hash: str) -> None:
        """Insert a user; ``EmailTaken`` when the email is registered (the UNIQUE index decides)."""
        await self._run(self._add_user, uid, name, email, password_hash)

    def _add_user(self, uid: str, name: str, email: str, password_hash: str) -> None:
        try:
            self.db.execute(
                "INSERT INTO users (uid, name, email, password_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                (uid, name, email, password_hash, int(time.time() * 1000)),
            )
        except sqlite3.IntegrityError:
            raise EmailTaken(email) from None

    async def credentials(self, email: str) -> tuple[str, str] | None:
        """``(uid, password_hash)`` of the account with ``email``, or None."""
        return await self._run(self._credentials, email)

    def _credentials(self, email: str) -> tuple[str, str] | None:
        return self.db.execute("SELECT uid, password_hash FROM users WHERE email = ?", (email,)).fetchone()

    async def users(self) -> list[dict[str, str]]:
        """Every registered user (without password hashes), oldest account first."""
        return await self._run(self._users)

    def _users(self) -> list[dict[str, str]]:
        rows = self.db.execute("SELECT uid, name, email FROM users ORDER BY created_at, uid").fetchall()
        return [{"uid": uid, "name": name, "email": email} for uid, name, email in rows]

    async def user(self, uid: str) -> dict[str, str] | None:
        """The user ``uid`` (without password hash), or None: for a user another node signed up."""
        return await self._run(self._user, uid)

    def _user(self, uid: str) -> dict[str, str] | None:
        row = self.db.execute("SELECT uid, name, email FROM users WHERE uid = ?", (uid,)).fetchone()
        return None if row is None else {"uid": row[0], "name": row[1], "email": row[2]}

    # ----- messages ----------------------------------------------------------------------

    def add_message(
        self, sender: str, recipient: str, text: str, client_id: str | None
    ) -> asyncio.Future[tuple[dict[str, Any], bool]]:
        """Store a message; ``(message, True)`` when new, ``(first stored one, False)`` on a retry.

        A retry is a message whose ``(sender, clientId)`` is stored already: the UNIQUE
        constraint makes that check and the insert one atomic statement.

        Group commit: the message joins the next batch, and the future resolves once the batch's
        transaction is committed. The batch is written at the end of this turn of the event
        loop, so every message that arrived in the same turn joins it (and, while a batch is
        with the thread, every one that arrives meanwhile joins the next): one transaction for
        all of them, so the busier the chat, the less each message costs.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[dict[str, Any], bool]] = loop.create_future()
        self._waiting.append((sender, recipient, text, client_id, future))
        if not self._writing:
            self._writing = True
            loop.call_soon(self.write_batch, loop)  # what arrives in this loop turn joins in
        return future

    def write_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Write the waiting messages (up to ``max_batch``) in one transaction: here, on the loop,
        if the write lock is free at once; on the thread, which waits for it, if not. While a
        checkpoint's second step runs, the batch waits for it (``_finished`` writes it)."""
        if self._finishing:
            self._deferred = True  # ``_finished`` writes it
            return
        cut = len(self._waiting) if self.max_batch is None else self.max_batch
        batch, self._waiting = self._waiting[:cut], self._waiting[cut:]
        self.batches += 1
        self.batched_messages += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        rows = [row[:4] for row in batch]
        try:
            results = self._add_messages(self.writer, rows)
        except sqlite3.Error as error:
            if is_busy(error):  # nothing was written (rolled back, or never begun): the thread waits
                self._to_thread(loop, batch, rows)
            else:
                self._written(loop, batch, None, error)
            return
        self._written(loop, batch, results, None)

    def _to_thread(self, loop: asyncio.AbstractEventLoop, batch: list, rows: list) -> None:
        """Another process holds the write lock: the thread waits for it, the loop does not."""
        self.batches_on_thread += 1
        try:
            done = self._executor.submit(self._add_messages_on_thread, rows)
        except RuntimeError as error:  # the store is closed
            self._written(loop, batch, None, error)
            return

        def written(done: Future) -> None:
            error = done.exception()
            self._written(loop, batch, None if error is not None else done.result(), error)

        done.add_done_callback(lambda done: loop.call_soon_threadsafe(written, done))

    @property
    def writer(self) -> sqlite3.Connection:
        if self._writer is None:
            raise sqlite3.ProgrammingError("the store is closed")
        return self._writer

    def _written(
        self, loop: asyncio.AbstractEventLoop, batch: list, results: list[Any] | None, error: BaseException | None
    ) -> None:
        """On the loop, a batch is done (written, here or on the thread, or failed): answer its
        messages, then write the next."""
        if error is None:
            self._written_messages(loop, len(batch))
        self._answer(batch, results, error)
        if self._finish_due:  # now, right after a commit: the next batch is most of a loop turn away
            self._finish(loop)
        if self._waiting:
            loop.call_soon(self.write_batch, loop)  # the answered handlers run first
        else:
            self._writing = False

    @staticmethod
    def _answer(batch: list, results: list[Any] | None, error: BaseException | None) -> None:
        """Resolve each message's future: its own result or error, or the batch's error."""
        for row, result in zip(batch, results or [error] * len(batch), strict=True):
            future = row[4]
            if future.done():  # its handler was cancelled (the server is closing)
                continue
            if isinstance(result, BaseException):
                future.set_exception(refusal(result))
            else:
                future.set_result(result)

    def _written_messages(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        """Count what was written; every ``CHECKPOINT_EVERY`` messages, start a checkpoint."""
        self._unchecked += count
        if self._unchecked >= CHECKPOINT_EVERY and not self._copying:
            self._unchecked = 0
            self._copying = self._checkpoint(loop, lambda: self._copied(loop), finish=False)

    def _copied(self, loop: asyncio.AbstractEventLoop) -> None:
        """The first step is done: the second begins now if no batch is on its way, else right
        after the next commit (``_written``)."""
        self._copying = False
        self._finish_due = True
        if not self._writing:
            self._finish(loop)

    def _finish(self, loop: asyncio.AbstractEventLoop) -> None:
        """Begin the second step. Measured under the peers' load at P=100
        (``benchmarks/chat_timeline.py``): begun when the next batch came due, it held that batch
        back for all of its ~14 ms; begun after a commit, it holds the next one ~8 ms."""
        self._finish_due = False
        self._finishing = self._checkpoint(loop, lambda: self._finished(loop), finish=True)

    def _finished(self, loop: asyncio.AbstractEventLoop) -> None:
        """The second step is done (the next write starts the log over): write the batch it held."""
        self._finishing = False
        if self._deferred:
            self._deferred = False
            self.write_batch(loop)

    def _checkpoint(self, loop: asyncio.AbstractEventLoop, then: Callable[[], None], *, finish: bool) -> bool:
        """Copy the log into the database, on the thread (a checkpoint ``fsync``s: never on the
        loop), in two steps; ``then`` runs on the loop after each. First beside the writes: it
        copies most of the log, but never all of it while the loop goes on appending, and a log
        starts over only once all of it is copied. Then (``finish``) the rest, while no batch is
        written: the newest version of every page written since (some hundreds under load: each
        sender's and pair's index tail), and two ``fsync``s, some 10-15 ms; the next write starts
        the log over. The second step begins right after a commit (``_finish``), so it runs
        mostly while the loop gathers the next batch, and holds back only what comes due before
        it ends (``write_batch``). Without the second step the log, and the cost of every
        statement (which searches it), would grow without bound; with only the second, every
        pause would copy the whole log. False: the store is closed."""
        try:
            done = self._executor.submit(self._wal_checkpoint, finish)
        except RuntimeError:
            return False
        done.add_done_callback(lambda done: loop.call_soon_threadsafe(then))
        return True

    def _wal_checkpoint(self, finish: bool) -> None:
        try:
            self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as error:  # the next one tries again; the log is still the database's
            self.checkpoint_errors.append(repr(error))
        else:
            self.checkpoints += finish

    def _add_messages_on_thread(self, rows: list[tuple[str, str, str, str | None]]) -> list[Any]:
        return self._add_messages(self.db, rows)

    def _add_messages(self, db: sqlite3.Connection, rows: list[tuple[str, str, str, str | None]]) -> list[Any]:
        """One transaction for the batch, one ``executemany`` for its rows; if a row breaks it
        (a recipient that does not exist), the batch is rolled back and stored again row by row
        in a second transaction, each row with its own answer. Raises SQLite's busy error at once
        when ``db`` does not wait for the lock.

        Why not a savepoint around the ``executemany``, to roll back only it: while a savepoint
        is open, SQLite copies every page the batch dirties into a sub-journal (past 64 KiB, a
        temporary file: created, written and deleted each batch), in case it must undo them.
        Measured under the peers' load at P=100 (``benchmarks/peers/README.md``): the chat spent
        101.7 µs of CPU per message with it, 82.4 without. A batch that breaks is rare; it pays
        for a second transaction instead. One row alone needs nothing of the kind: SQLite undoes
        a failed statement by itself."""
        created_at = int(time.time() * 1000)
        try:
            return self._transaction(db, lambda: self._insert_batch(db, rows, created_at))
        except sqlite3.IntegrityError:
            return self._transaction(db, lambda: [self._insert_alone(db, row, created_at) for row in rows])

    @staticmethod
    def _transaction(db: sqlite3.Connection, work: Callable[[], T]) -> T:
        """``work`` inside ``BEGIN IMMEDIATE`` (the write lock, or SQLITE_BUSY after the busy
        timeout) and ``COMMIT``; rolled back if it raises."""
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work()
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return result

    @staticmethod
    def _insert_batch(
        db: sqlite3.Connection, rows: list[tuple[str, str, str, str | None]], created_at: int
    ) -> list[tuple[dict[str, Any], bool]]:
        """Insert every row; a row whose ``(sender, clientId)`` is stored already (before, or
        earlier in this batch) is not inserted, and is answered with the stored one.

        The rows inserted get ids above the largest before (the transaction holds the write
        lock) in the batch's order, so they pair up with the batch's rows in order, skipping the
        retries: a retry's key is stored already, so no row inserted after it has that key."""
        (before,) = db.execute(LAST_ID).fetchone()
        keyed = [(pair_key(sender, recipient), sender, recipient, text, created_at, client_id)
                 for sender, recipient, text, client_id in rows]
        db.executemany(INSERT, keyed)
        inserted = iter(db.execute(INSERTED, (before,)).fetchall())
        following = next(inserted, None)
        results: list[tuple[dict[str, Any], bool]] = []
        for sender, _recipient, _text, client_id in rows:
            if following is not None and following[1] == sender and following[5] == client_id:
                results.append((_message(following), True))
                following = next(inserted, None)
            else:
                first = db.execute(SELECT_RETRY, (sender, client_id)).fetchone()
                results.append((_message(first), False))
        if following is not None:
            raise RuntimeError("a row the batch inserted matches none of its messages")
        # Who took part in which conversation, for ``resume`` (``SINCE``): once per pair and batch,
        # for the rows inserted (a retry may name another recipient), and nothing is written for a
        # pair that is known already.
        db.executemany(CONVERSATION, {(uid, pair) for (pair, sender, recipient, *_row), (_stored, new)
                                      in zip(keyed, results, strict=True) if new for uid in (sender, recipient)})
        return results

    @classmethod
    def _insert_alone(cls, db: sqlite3.Connection, row: tuple[str, str, str, str | None], created_at: int) -> Any:
        try:
            return cls._insert_batch(db, [row], created_at)[0]
        except sqlite3.IntegrityError as error:
            return error

    async def history(self, a: str, b: str, *, after: int | None = None, limit: int = 30) -> list[dict[str, Any]]:
        """Messages between ``a`` and ``b``, oldest first: the last ``limit``, or the first after ``after``."""
        return await self._run(self._history, pair_key(a, b), after, limit)

    def _history(self, pair: str, after: int | None, limit: int) -> list[dict[str, Any]]:
        if after is None:
            rows = self.db.execute(HISTORY_LAST, (pair, limit)).fetchall()
            rows.reverse()
        else:
            rows = self.db.execute(HISTORY_AFTER, (pair, after, limit)).fetchall()
        return [_message(row) for row in rows]

    async def last_id(self) -> int:
        """The largest message id stored (0 when none): where a node's deliveries start."""
        return await self._run(self._last_id)

    def _last_id(self) -> int:
        return self.db.execute(LAST_ID).fetchone()[0]

    async def after(self, after: int, limit: int) -> list[dict[str, Any]]:
        """Every message with an id above ``after``, by id (at most ``limit``): a node catching up."""
        return await self._run(self._after, after, limit)

    def _after(self, after: int, limit: int) -> list[dict[str, Any]]:
        return [_message(row) for row in self.db.execute(AFTER, (after, limit)).fetchall()]

    async def since(self, uid: str, after: int, upto: int, limit: int) -> list[dict[str, Any]]:
        """Messages from or to ``uid`` with ``after < id <= upto``, by id (at most ``limit``): a resume."""
        return await self._run(self._since, uid, after, upto, limit)

    def _since(self, uid: str, after: int, upto: int, limit: int) -> list[dict[str, Any]]:
        return [_message(row) for row in self.db.execute(SINCE, (uid, after, upto, limit)).fetchall()]
