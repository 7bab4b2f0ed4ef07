"""50 pairs talking at once: nothing lost, nothing duplicated, each conversation in order."""

from __future__ import annotations

import sqlite3

import labtools
from labtools.sim.chat_users import run_pairs


def test_fifty_pairs_at_once(tmp_path) -> None:
    chat = labtools.serve("chat", name="load", db=str(tmp_path / "chat.db"), fast_hashing=True)
    result = labtools.run(run_pairs(chat.url, pairs=50, messages=10), timeout=120)
    assert result.sent == 50 * 2 * 10
    assert (result.delivered, result.duplicates, result.lost, result.out_of_order) == (result.sent, 0, 0, 0)
    assert result.latency.summary()["count"] == result.sent
    db = sqlite3.connect(tmp_path / "chat.db")
    assert db.execute("SELECT count(*), count(DISTINCT pair) FROM messages").fetchone() == (result.sent, 50)
    db.close()
    assert chat.server.errors == []
    chat.stop()
