"""Storage: a message is stored before it is acknowledged, users and messages survive a
restart, a retry with the same clientId is stored once, and slow work never blocks the loop."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import labtools
from labtools.events import AckError, EventClient
from labtools.sim.chat_users import ChatUser, run_pairs

run = labtools.run
ROOT = Path(__file__).parent.parent


def test_acknowledged_means_stored(tmp_path) -> None:
    chat = labtools.serve("chat", name="stored", db=str(tmp_path / "chat.db"), fast_hashing=True)

    async def main() -> dict:
        pedro = await ChatUser("Pedro").sign_up(chat.url)
        ana = await ChatUser("Ana").sign_up(chat.url)
        return await pedro.send(ana, "written down")

    stored = run(main())
    db = sqlite3.connect(tmp_path / "chat.db")  # a second reader sees the committed row at once
    assert db.execute("SELECT body FROM messages WHERE id = ?", (stored["id"],)).fetchone() == ("written down",)
    db.close()
    chat.stop()


def test_users_and_messages_survive_a_restart(tmp_path) -> None:
    db = str(tmp_path / "chat.db")
    chat = labtools.serve("chat", name="restart", db=db, fast_hashing=True)
    pedro, ana = ChatUser("Pedro"), ChatUser("Ana")

    async def before() -> None:
        await pedro.sign_up(chat.url)
        await ana.sign_up(chat.url)
        for i in range(3):
            await pedro.send(ana, f"before {i}")
        await ana.send(pedro, "¡hola! <b>not bold</b>")

    run(before())
    old_token = pedro.token
    chat.stop()
    chat = labtools.serve("chat", name="restart", db=db, fast_hashing=True)

    async def after() -> None:
        await pedro.log_in(chat.url)
        conversation = [m["message"] for m in await pedro.history(ana)]
        assert conversation == ["before 0", "before 1", "before 2", "¡hola! <b>not bold</b>"]
        user_list = pedro.user_lists[-1]
        assert {u["name"] for u in user_list} == {"Pedro", "Ana"}
        # The secret is kept beside the database, so a token from before the restart still works.
        socket = await EventClient.connect(chat.ws_url + "?token=" + old_token)
        assert len(await socket.wait_for("user-list")) == 2
        await socket.aclose()
        next_id = (await pedro.send(ana, "after"))["id"]
        assert next_id > max(m["id"] for m in await pedro.history(ana, after=0) if m["message"] != "after")

    run(after())
    chat.stop()


def test_a_retry_with_the_same_client_id_is_stored_once(tmp_path) -> None:
    chat = labtools.serve("chat", name="retry", db=str(tmp_path / "chat.db"), fast_hashing=True)

    async def main() -> None:
        pedro = await ChatUser("Pedro").sign_up(chat.url)
        ana = await ChatUser("Ana").sign_up(chat.url)
        first = await pedro.send(ana, "exactly once", client_id="abc")
        again = await pedro.send(ana, "exactly once", client_id="abc")
        assert again == first
        await asyncio.sleep(0.05)
        assert [m["id"] for _t, m in ana.inbox] == [first["id"]]  # the retry is not delivered again
        # Another sender may use the same clientId: uniqueness is per sender.
        reply = await ana.send(pedro, "me too", client_id="abc")
        assert reply["id"] != first["id"]
        assert [m["message"] for m in await pedro.history(ana)] == ["exactly once", "me too"]

    run(main())
    chat.stop()


def test_dropped_acknowledgements_retries_deliver_exactly_once(tmp_path) -> None:
    chat = labtools.serve("chat", name="lossy", db=str(tmp_path / "chat.db"), fast_hashing=True)
    result = run(run_pairs(chat.url, pairs=4, messages=15, drop_acks=0.3, retry_after=0.15))
    assert result.acks_dropped > 0 and result.retries >= result.acks_dropped - 10
    assert (result.delivered, result.duplicates, result.lost, result.out_of_order) == (result.sent, 0, 0, 0)
    db = sqlite3.connect(tmp_path / "chat.db")
    assert db.execute("SELECT count(*) FROM messages").fetchone() == (result.sent,)
    db.close()
    chat.stop()


def test_slow_password_hashing_does_not_block_messages(tmp_path) -> None:
    """Real argon2 cost (~0.1 s a hash) while a conversation goes on: messages stay fast."""
    chat = labtools.serve("chat", name="slow-hash", db=str(tmp_path / "chat.db"))

    async def main() -> float:
        pedro = await ChatUser("Pedro").sign_up(chat.url)
        ana = await ChatUser("Ana").sign_up(chat.url)
        signing_up = asyncio.gather(*(ChatUser(f"late{i}").sign_up(chat.url) for i in range(4)))
        await asyncio.sleep(0.01)
        worst = 0.0
        for i in range(20):
            start = time.perf_counter()
            await pedro.send(ana, f"m{i}")
            worst = max(worst, time.perf_counter() - start)
        await signing_up
        return worst

    assert run(main()) < 0.08
    chat.stop()


def test_cli_serves_the_chat_on_a_db(tmp_path) -> None:
    db = tmp_path / "cli.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "labtools", "serve", "chat", "--port", "0", "--db", str(db)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")

        async def main() -> None:
            user = await ChatUser("Pedro").sign_up(url)
            await user.disconnect()

        run(main())
    finally:
        process.terminate()
        assert process.wait(10) == 0
    assert db.exists() and Path(str(db) + ".secret").exists()


def test_a_full_disk_answers_storage_full_and_stores_nothing(tmp_path) -> None:
    """SQLite's ``SQLITE_FULL`` (a full disk; here a database capped at its current size with
    ``max_page_count``) is PROTOCOL's ``storage-full``, not ``internal``: nothing was stored."""
    chat = labtools.serve("chat", name="full-disk", db=str(tmp_path / "chat.db"), fast_hashing=True)
    store = chat.server.state.store

    async def main() -> tuple[str, int]:
        pedro = await ChatUser("Pedro").sign_up(chat.url)
        ana = await ChatUser("Ana").sign_up(chat.url)
        await pedro.send(ana, "fits")

        def cap() -> int:
            (pages,) = store.db.execute("PRAGMA page_count").fetchone()
            store.db.execute(f"PRAGMA max_page_count = {pages}")
            return store.db.execute("SELECT count(*) FROM messages").fetchone()[0]

        before = await store._run(cap)  # the thread's connection, then the loop's (it writes the batches)
        store.writer.execute(f"PRAGMA max_page_count = {store.writer.execute('PRAGMA page_count').fetchone()[0]}")
        with pytest.raises(AckError) as refused:
            for number in range(2000):  # a page or two of room may be left: fill it
                await pedro.socket.request("personal-message", {"to": ana.uid, "message": "x" * 500 + str(number)}, 5,
                                            retries=3)
        stored = await store._run(lambda: store.db.execute("SELECT count(*) FROM messages").fetchone()[0])
        assert stored >= before
        return refused.value.code, stored

    code, _stored = run(main())
    assert code == "storage-full"
    assert not [e for e in chat.server.errors if "storage" in e or "full" in e]  # a refusal, not a bug
    chat.stop()


#: The schema before version 1 (PRAGMA user_version 0): two indexes more, by sender and by recipient.
VERSION_0_INDEXES = """
CREATE INDEX messages_by_sender ON messages (sender, id);
CREATE INDEX messages_by_recipient ON messages (recipient, id);
"""


def test_since_finds_what_a_user_sent_and_received_in_id_order_and_nothing_else(tmp_path) -> None:
    """``Store.since`` (what ``resume`` replays) reads the user's conversations through the pair
    index: every message from or to the user in the id range, in order, bounded by ``limit``."""
    from labtools.apps.chat.store import SINCE, Store

    async def main() -> None:
        store = Store(str(tmp_path / "chat.db"))
        await store.open()
        for uid in "abcd":
            await store.add_user(uid, uid, f"{uid}@example.test", "x")
        sent = [("a", "b"), ("c", "d"), ("b", "a"), ("c", "a"), ("a", "a"), ("d", "b"), ("a", "c")]
        for number, (sender, recipient) in enumerate(sent):
            await store.add_message(sender, recipient, f"m{number}", f"k{number}")
        of_a = [m["message"] for m in await store.since("a", 0, 100, 100)]
        assert of_a == ["m0", "m2", "m3", "m4", "m6"]
        assert [m["message"] for m in await store.since("a", 1, 4, 100)] == ["m2", "m3"]  # 1 < id <= 4
        assert [m["message"] for m in await store.since("a", 0, 100, 2)] == ["m0", "m2"]
        assert [m["message"] for m in await store.since("d", 0, 100, 100)] == ["m1", "m5"]
        rows = await store._run(lambda: store.db.execute(f"EXPLAIN QUERY PLAN {SINCE}", ("a", 0, 9, 5)).fetchall())
        plan = " ".join(row[3] for row in rows)
        assert "USING INDEX messages_by_pair" in plan and "SCAN messages" not in plan
        await store.close()

    run(main())


def test_a_version_0_database_is_upgraded_and_resumes_as_before(tmp_path) -> None:
    """A database written by the schema before version 1 loses its two per-user indexes (each
    message paid two more B-tree pages for them) and gets ``conversations`` filled from its
    messages, so ``since`` answers exactly as it did."""
    from labtools.apps.chat.store import SCHEMA, Store

    path = tmp_path / "old.db"
    old = sqlite3.connect(path, isolation_level=None)
    old.executescript(SCHEMA.split("CREATE TABLE IF NOT EXISTS conversations")[0] + VERSION_0_INDEXES)
    old.executescript("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);")
    for uid in "abc":
        old.execute("INSERT INTO users VALUES (?, ?, ?, 'x', 0)", (uid, uid, f"{uid}@example.test"))
    for number, (sender, recipient) in enumerate([("a", "b"), ("b", "c"), ("c", "a"), ("b", "a")], start=1):
        pair = "|".join(sorted((sender, recipient)))
        old.execute("INSERT INTO messages VALUES (?, ?, ?, ?, ?, 0, NULL)",
                    (number, pair, sender, recipient, f"m{number}"))
    assert old.execute("PRAGMA user_version").fetchone() == (0,)
    old.close()

    async def main() -> None:
        store = Store(str(path))
        await store.open()
        assert [m["message"] for m in await store.since("a", 0, 10, 10)] == ["m1", "m3", "m4"]
        assert [m["message"] for m in await store.since("c", 1, 10, 10)] == ["m2", "m3"]
        _message, new = await store.add_message("c", "b", "after the upgrade", "k")
        assert new and [m["message"] for m in await store.since("c", 3, 10, 10)] == ["after the upgrade"]
        await store.close()

    run(main())
    upgraded = sqlite3.connect(path)
    indexes = {name for (name,) in upgraded.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "messages_by_sender" not in indexes and "messages_by_recipient" not in indexes
    assert upgraded.execute("PRAGMA user_version").fetchone() == (1,)
    upgraded.close()


def busy() -> sqlite3.OperationalError:
    error = sqlite3.OperationalError("database is locked")
    error.sqlite_errorcode = sqlite3.SQLITE_BUSY
    return error


def test_a_statement_that_finds_the_database_busy_at_once_is_tried_again_until_it_is_free() -> None:
    """SQLite answers "busy" without waiting when two connections would deadlock (two nodes
    opening one new file); ``when_free`` tries again for a while, and lets any other error through."""
    from labtools.apps.chat.store import when_free

    answers: list[Any] = [busy(), busy(), "done"]

    def statement() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert when_free(statement) == "done" and not answers
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        when_free(lambda: (_ for _ in ()).throw(busy()), within=0.05)
    other = sqlite3.OperationalError("no such table: nothing")
    calls = []

    def broken() -> None:
        calls.append(1)
        raise other

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        when_free(broken)
    assert calls == [1]


@pytest.mark.slow
def test_nodes_that_open_one_new_file_together_all_start(tmp_path) -> None:
    """Four processes open one new database at the same moment: each one starts."""
    script = (
        "import asyncio, sys, time\n"
        "from labtools.apps.chat.store import Store\n"
        "async def main():\n"
        "    store = Store(sys.argv[1])\n"
        "    while time.time() < float(sys.argv[2]): pass\n"
        "    await store.open()\n"
        "    print(store.epoch)\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    for trial in range(3):
        path = tmp_path / f"shared-{trial}.db"
        start = time.time() + 1.0
        processes = [subprocess.Popen([sys.executable, "-c", script, str(path), str(start)], cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
        results = [process.communicate(timeout=60) for process in processes]
        assert all(process.returncode == 0 for process in processes), [err for _out, err in results]
        assert len({out.strip() for out, _err in results}) == 1  # one epoch: one database
