"""The peer servers of the benchmark store messages in the course's ``messages`` table.

The peers in ``benchmarks/peers/`` (Node.js and Python servers doing what the course's chat
does) must not import the course, so each writes its own SQLite schema; the benchmark then
compares their stored rows with the course's and counts on ``UNIQUE (sender, client_id)`` for
the exactly-once check. This test keeps those copies honest: it takes the
``CREATE TABLE ... messages (...)`` statement out of every peer file that inserts into
``messages`` and out of the course's ``labtools/apps/chat/store.py``, creates each alone in an
in-memory SQLite database, and compares

* the columns, in order: name, declared type, NOT NULL and primary-key position
  (``PRAGMA table_info(messages)``): ``id, pair, sender, recipient, body, created_at,
  client_id``, snake_case as the course names them;
* the table's UNIQUE constraints (``PRAGMA index_list`` + ``PRAGMA index_info``): the course's
  one is on ``(sender, client_id)``, and a peer must have exactly the same.

The ``users`` table is not compared: the peers keep only ``uid`` and ``name`` on purpose (no
passwords, tokens or emails in a benchmark). Nor are the other indexes (they are speed, not
meaning) or the foreign keys.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COURSE_STORE = ROOT / "labtools" / "apps" / "chat" / "store.py"
PEERS = ROOT / "benchmarks" / "peers"
CREATE_MESSAGES = re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?[\"'`]?messages[\"'`]?\s*\(", re.I)
INSERTS_MESSAGES = re.compile(r"INSERT\s+(?:OR\s+\w+\s+)?INTO\s+messages\b", re.I)


def create_messages(text: str, where: str) -> str:
    """The one ``CREATE TABLE messages (...)`` statement of ``text`` (parentheses balanced)."""
    found = list(CREATE_MESSAGES.finditer(text))
    assert len(found) == 1, f"{where}: expected one CREATE TABLE messages statement, found {len(found)}"
    start = found[0].start()
    depth = 0
    for end in range(found[0].end() - 1, len(text)):
        depth += {"(": 1, ")": -1}.get(text[end], 0)
        if depth == 0:
            return text[start:end + 1]
    raise AssertionError(f"{where}: the CREATE TABLE messages statement never closes its parenthesis")


def shape(statement: str) -> tuple[list[tuple[str, str, int, int]], set[tuple[str, ...]]]:
    """(columns as (name, type, notnull, pk), the column tuples of its UNIQUE indexes)."""
    db = sqlite3.connect(":memory:")
    try:
        db.execute(statement)
        columns = [(name, kind.upper(), notnull, pk)
                   for _cid, name, kind, notnull, _default, pk in db.execute("PRAGMA table_info(messages)")]
        unique = set()
        for _seq, index, is_unique, *_rest in db.execute("PRAGMA index_list(messages)"):
            if is_unique:
                info = sorted(db.execute(f"PRAGMA index_info({index!r})"))
                unique.add(tuple(column for _seqno, _cid, column in info))
        return columns, unique
    finally:
        db.close()


def peer_files() -> list[Path]:
    """Every peer server that stores messages (``node_modules`` and virtualenvs aside)."""
    return sorted(path for pattern in ("*.mjs", "*.js", "*.py") for path in PEERS.glob(pattern)
                  if INSERTS_MESSAGES.search(path.read_text(encoding="utf-8")))


COURSE = create_messages(COURSE_STORE.read_text(encoding="utf-8"), "labtools/apps/chat/store.py")


def test_the_course_has_the_unique_index_the_peers_copy() -> None:
    columns, unique = shape(COURSE)
    names = [name for name, *_ in columns]
    assert {"sender", "client_id"} <= set(names), f"the course's messages table has columns {names}"
    assert ("sender", "client_id") in unique, f"the course's messages table's UNIQUE indexes: {unique}"


def test_the_chat_peers_are_found() -> None:
    names = {path.name for path in peer_files()}
    assert {"server.mjs", "server_sio.py"} <= names, f"peer files that insert into messages: {sorted(names)}"


@pytest.mark.parametrize("peer", peer_files(), ids=lambda path: path.name)
def test_a_peers_messages_table_is_the_courses(peer: Path) -> None:
    where = f"benchmarks/peers/{peer.name}"
    theirs_columns, theirs_unique = shape(create_messages(peer.read_text(encoding="utf-8"), where))
    ours_columns, ours_unique = shape(COURSE)
    assert theirs_columns == ours_columns, (
        f"{where}'s messages columns differ from labtools/apps/chat/store.py's:\n"
        f"  course: {ours_columns}\n  peer:   {theirs_columns}\n"
        "(name, type, NOT NULL, primary-key position): copy the course's CREATE TABLE messages"
    )
    assert theirs_unique == ours_unique, (
        f"{where}'s UNIQUE indexes on messages are {sorted(theirs_unique)}, the course's {sorted(ours_unique)}:"
        " without UNIQUE (sender, client_id) a retried message is stored twice"
    )
