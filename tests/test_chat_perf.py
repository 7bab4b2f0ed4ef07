"""The chat at the speed of its database: group commit keeps exactly-once, history and catch-up
use the index, and an acknowledged message survives ``kill -9`` of the server mid-load."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import labtools
from labtools.apps.chat.store import HISTORY_AFTER, HISTORY_LAST, SELECT_RETRY, Store, pair_key
from labtools.sim.chat_users import ChatUser

run = labtools.run  # the labtools loop: never asyncio.run here (the browser tests' Playwright holds a loop)
ROOT = Path(__file__).parent.parent


async def _store_with_users(path: Path, *uids: str) -> Store:
    store = Store(str(path))
    await store.open()
    for uid in uids:
        await store.add_user(uid, uid, f"{uid}@example.test", "x")
    return store


def test_a_burst_is_stored_in_a_few_transactions_each_answered_with_its_own_row(tmp_path) -> None:
    async def main() -> None:
        store = await _store_with_users(tmp_path / "chat.db", "ana", "pedro")
        results = await asyncio.gather(*(store.add_message("ana", "pedro", f"m{i}", f"c{i}") for i in range(200)))
        assert [m["message"] for m, new in results] == [f"m{i}" for i in range(200)]
        assert all(new for _m, new in results)
        assert [m["id"] for m, _ in results] == sorted({m["id"] for m, _ in results})
        # One message alone, then the other 199 together (they arrived while the first was written).
        assert store.batches <= 3 and store.batched_messages == 200 and store.largest_batch >= 100
        count = await store._run(lambda: store.db.execute("SELECT count(*) FROM messages").fetchone()[0])
        assert count == 200
        await store.close()

    run(main())


def test_the_same_client_id_twice_in_one_batch_is_one_row_and_both_get_it(tmp_path) -> None:
    async def main() -> None:
        store = await _store_with_users(tmp_path / "chat.db", "ana", "pedro")
        await store.add_message("ana", "pedro", "earlier", "old")
        first, again, other, retry, mine = await asyncio.gather(
            store.add_message("ana", "pedro", "once", "same"),
            store.add_message("ana", "pedro", "once (retried)", "same"),
            store.add_message("pedro", "ana", "same clientId, other sender", "same"),
            store.add_message("ana", "pedro", "earlier, retried", "old"),
            store.add_message("ana", "pedro", "no clientId", None),
        )
        assert store.largest_batch == 5
        assert first[1] and not again[1] and again[0] == first[0] and first[0]["message"] == "once"
        assert other[1] and other[0]["id"] != first[0]["id"]  # the key is (sender, clientId)
        assert not retry[1] and retry[0]["message"] == "earlier"
        assert mine[1] and "clientId" not in mine[0]
        rows = await store._run(lambda: store.db.execute("SELECT body FROM messages ORDER BY id").fetchall())
        assert [body for (body,) in rows] == ["earlier", "once", "same clientId, other sender", "no clientId"]
        await store.close()

    run(main())


def test_a_failing_message_fails_alone(tmp_path) -> None:
    """A batch whose transaction fails is stored message by message: only the bad one errs."""
    async def main() -> None:
        store = await _store_with_users(tmp_path / "chat.db", "ana", "pedro")
        results = await asyncio.gather(
            store.add_message("ana", "pedro", "fine", "a"),
            store.add_message("ana", "nobody", "no such recipient", "b"),  # foreign key
            store.add_message("pedro", "ana", "fine too", "c"),
            return_exceptions=True,
        )
        assert isinstance(results[1], sqlite3.IntegrityError)
        assert results[0][0]["message"] == "fine" and results[2][0]["message"] == "fine too"
        rows = await store._run(lambda: store.db.execute("SELECT body, client_id FROM messages ORDER BY id").fetchall())
        assert rows == [("fine", "a"), ("fine too", "c")]  # the broken batch left nothing behind
        assert [results[0][0]["id"], results[2][0]["id"]] == [1, 2]
        await store.close()

    run(main())


def test_a_batch_is_one_plain_transaction_and_a_broken_one_a_second(tmp_path) -> None:
    """No savepoint around a batch: while one is open SQLite copies every page the batch dirties
    into a sub-journal (a temporary file past 64 KiB). A batch a row breaks is rolled back and
    stored row by row in a second transaction."""
    async def main() -> None:
        store = await _store_with_users(tmp_path / "chat.db", "ana", "pedro")
        statements: list[str] = []
        store.writer.set_trace_callback(statements.append)
        await asyncio.gather(*(store.add_message("ana", "pedro", f"m{i}", f"c{i}") for i in range(50)))
        await asyncio.gather(store.add_message("ana", "pedro", "fine", "x"),
                             store.add_message("ana", "nobody", "broken", "y"), return_exceptions=True)
        store.writer.set_trace_callback(None)
        verbs = [statement.split()[0].upper() for statement in statements]
        assert not [verb for verb in verbs if verb in ("SAVEPOINT", "RELEASE")], statements
        transactions = [verb for verb in verbs if verb in ("BEGIN", "COMMIT", "ROLLBACK")]
        # The 50 messages (one loop turn: one batch), then the broken batch and its second try.
        assert transactions == ["BEGIN", "COMMIT", "BEGIN", "ROLLBACK", "BEGIN", "COMMIT"], transactions
        await store.close()

    run(main())


def test_a_batch_that_finds_the_write_lock_taken_waits_on_the_thread_not_the_loop(tmp_path) -> None:
    """Another process's write transaction holds the lock: the batch goes to the thread, which
    waits for it, while the loop goes on (a timer keeps firing); it is stored once the lock is free."""
    path = tmp_path / "chat.db"

    async def main() -> None:
        store = await _store_with_users(path, "ana", "pedro")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # as another node of the deployment, mid-commit
        stored = asyncio.ensure_future(store.add_message("ana", "pedro", "waits", "w"))
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0.01)
            ticks += 1
        assert not stored.done() and ticks == 20 and store.batches_on_thread == 1
        other.execute("COMMIT")
        message, new = await asyncio.wait_for(stored, 5)
        assert new and message["message"] == "waits"
        again = await store.add_message("pedro", "ana", "the lock is free: on the loop again", None)
        assert again[1] and store.batches_on_thread == 1
        other.close()
        await store.close()

    run(main())


def test_the_log_is_checkpointed_on_the_thread_and_stays_bounded(tmp_path, monkeypatch) -> None:
    """Checkpoints run on the thread, and each ends while no batch is written (one that only ran
    beside the writes never caught up, and the log grew by megabytes a second), so the log file
    stops growing: it is started over after each checkpoint."""
    from labtools.apps.chat import store as store_module

    monkeypatch.setattr(store_module, "CHECKPOINT_EVERY", 100)
    wal = tmp_path / "chat.db-wal"

    async def main() -> list[int]:
        store = await _store_with_users(tmp_path / "chat.db", *(f"user{k}" for k in range(50)))
        assert store.writer.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)  # never on the loop
        sizes = []
        for round in range(40):
            await asyncio.gather(*(store.add_message(f"user{i % 50}", f"user{(i * 7 + 1) % 50}", f"{round}-{i}", None)
                                   for i in range(50)))
            sizes.append(wal.stat().st_size)
            await store._run(lambda: None)  # a checkpoint's first step, begun after this round, is done
        await store._run(lambda: None)  # and the second, begun as the first ended (nothing was waiting)
        # Each 100 messages: the first step beside the writes, then the rest while no batch is written.
        assert store.checkpoints == 20 and not store.checkpoint_errors  # after rounds 2, 4, ..., 40
        await store.close()
        return sizes

    sizes = run(main())
    assert sizes[-1] <= 1.2 * sizes[9], sizes  # 300 messages more after round 10, and no bigger a log


def test_a_checkpoint_ends_right_after_a_commit_and_holds_back_only_the_batch_due_meanwhile(
    tmp_path, monkeypatch
) -> None:
    """The second step of a checkpoint begins right after the commit that follows the first (not
    when the next batch is due, which would hold that whole batch back for all of it). A batch
    that comes due while it runs is written as it ends, on the loop; then the log starts over."""
    from labtools.apps.chat import store as store_module

    monkeypatch.setattr(store_module, "CHECKPOINT_EVERY", 100)
    events: list[str] = []
    release = {False: threading.Event(), True: threading.Event()}  # per step: may it run
    copied = threading.Event()  # the first step ran

    def log_starts() -> int:
        """How many times the log has started over: its header's checkpoint sequence number."""
        return int.from_bytes((tmp_path / "chat.db-wal").read_bytes()[12:16], "big")

    async def main() -> None:
        store = await _store_with_users(tmp_path / "chat.db", *(f"user{k}" for k in range(10)))
        copy, insert = store._wal_checkpoint, store._add_messages

        def step(finish: bool) -> None:
            release[finish].wait(10)
            events.append(f"step {2 if finish else 1}")
            copy(finish)
            if not finish:
                copied.set()

        def batch(db: sqlite3.Connection, rows: list) -> list:
            events.append(f"batch of {len(rows)}")
            return insert(db, rows)

        store._wal_checkpoint, store._add_messages = step, batch
        client_ids = itertools.count()

        def messages(count: int) -> list[asyncio.Future]:
            return [store.add_message(f"user{k % 10}", f"user{(k + 1) % 10}", "hello", f"c{k}")
                    for k in itertools.islice(client_ids, count)]

        await asyncio.gather(*messages(100))  # the 100th message: the first step is due
        release[False].set()
        assert copied.wait(10)  # the first step is done; the loop has yet to hear of it
        await asyncio.gather(*messages(5))  # a batch on its way: the second step waits for its commit, not longer
        assert events[-2:] == ["step 1", "batch of 5"] and store._finishing
        third = messages(7)  # due while the second step runs: held back, not written, not to the thread
        await asyncio.sleep(0.05)
        assert not any(future.done() for future in third) and events[-1] == "batch of 5"
        starts = log_starts()
        release[True].set()
        await asyncio.gather(*third)
        assert events[-2:] == ["step 2", "batch of 7"] and store.batches_on_thread == 0
        assert store.checkpoints == 1 and not store.checkpoint_errors
        assert log_starts() == starts + 1  # the batch of 7 started the log over
        await store.close()

    run(main())


def test_history_and_catch_up_search_the_pair_index(tmp_path) -> None:
    async def create() -> None:  # the chat's own schema, then read its plans from outside
        await (await _store_with_users(tmp_path / "plan.db")).close()

    run(create())
    db = sqlite3.connect(tmp_path / "plan.db")
    for sql, args in ((HISTORY_LAST, ("a|b", 30)), (HISTORY_AFTER, ("a|b", 5, 30)), (SELECT_RETRY, ("a", "c1"))):
        plan = " ".join(row[-1] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", args))
        assert "SCAN" not in plan and "TEMP B-TREE" not in plan, (sql, plan)
        assert "SEARCH messages USING" in plan, plan
    db.close()
    assert pair_key("b", "a") == pair_key("a", "b") == "a|b"


KILLED_LOAD = """
import asyncio, json, sys
from labtools.sim.chat_users import ChatUser

async def main(url, out):
    users = [ChatUser(f"u{i}") for i in range(10)]
    for user in users:
        await user.sign_up(url)
    print("ready", flush=True)
    acked = open(out, "a")
    async def sender(user, other, k):
        i = 0
        while True:
            try:
                message = await user.send(other, f"{user.name} {k}/{i}", client_id=f"{user.name}-{k}-{i}")
            except Exception:  # rate-limited: the same clientId again a little later (exactly-once)
                await asyncio.sleep(0.05)
                continue
            acked.write(json.dumps([message["id"], message["clientId"]]) + "\\n")
            acked.flush()
            i += 1
    await asyncio.gather(*(sender(u, users[(n + 1) % 10], k) for n, u in enumerate(users) for k in range(2)))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_kill_9_mid_load_loses_no_acknowledged_message(tmp_path) -> None:
    """20 senders (10 users) keep batches full; the server dies by SIGKILL; every acknowledged row is there."""
    db, acked = tmp_path / "chat.db", tmp_path / "acked.jsonl"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    server = subprocess.Popen([sys.executable, "-m", "labtools", "serve", "chat", "--port", "0", "--db", str(db)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
    load = None
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        load = subprocess.Popen([sys.executable, "-c", KILLED_LOAD, url, str(acked)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert load.stdout is not None and load.stdout.readline().strip() == "ready"
        while not acked.exists() or acked.stat().st_size < 40 * 300:  # a few hundred acknowledged
            assert load.poll() is None and server.poll() is None, load.stderr.read() if load.stderr else ""
            run(asyncio.sleep(0.05))
        server.send_signal(signal.SIGKILL)
        server.wait(10)
    finally:
        for process in (server, load):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
    answered = [json.loads(line) for line in acked.read_text().splitlines() if line.strip()]
    assert len(answered) >= 300
    connection = sqlite3.connect(db)
    stored = dict(connection.execute("SELECT id, client_id FROM messages").fetchall())
    connection.close()
    assert all(stored.get(id) == client_id for id, client_id in answered)
    assert len(set(stored.values())) == len(stored)  # and no clientId twice


def test_messages_through_the_server_are_batched(tmp_path) -> None:
    chat = labtools.serve("chat", name="batched", db=str(tmp_path / "chat.db"), fast_hashing=True)
    store = chat.server.state.store

    async def main() -> None:
        users = [await ChatUser(f"u{i}").sign_up(chat.url) for i in range(6)]
        before = store.batched_messages
        await asyncio.gather(*(u.send(users[(i + 1) % 6], f"hi {j}", client_id=f"{i}-{j}")
                               for j in range(10) for i, u in enumerate(users)))
        assert store.batched_messages - before == 60

    run(main())
    assert store.largest_batch > 1
    chat.stop()


def test_max_batch_one_is_one_commit_per_message(tmp_path) -> None:
    """The comparison lesson 08 measures: with ``max_batch=1`` every message is its own commit."""
    import labtools as lt
    from labtools.sim.chat_users import run_pairs

    one = lt.serve("chat", name="test-one-per-commit", db=str(tmp_path / "one.db"), fast_hashing=True, max_batch=1)
    try:
        result = lt.run(run_pairs(one.url, pairs=4, messages=10), timeout=60)
        counts = one.read(lambda chat: (chat.store.batches, chat.store.batched_messages, chat.store.largest_batch))
    finally:
        one.stop()
    assert result.lost == result.duplicates == 0
    assert counts[2] == 1 and counts[0] == counts[1] >= result.sent
