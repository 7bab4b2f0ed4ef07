"""The chat as two nodes sharing one database and a Redis bus, the bus itself, the event
server's adapter, and offsets/resume (with and without a broker).

Both nodes run in this process, on the labtools loop, each with its own port and bus; Pedro
uses node a and Ana node b, as two browsers behind a front door would. A node is the chat's
``build()`` with a ``RedisAdapter`` attached (``server.use``), as the serving code does it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require_redis
from waiting import eventually

import labtools
from labtools.apps import chat as chat_app
from labtools.apps.chat import ChatLimits, mailbox
from labtools.apps.chat.store import Store
from labtools.cluster.adapter import RedisAdapter
from labtools.cluster.bus import RedisBus
from labtools.deploy import RedisServer
from labtools.events import AckError, EventClient, EventServer
from labtools.sim.chat_users import ChatUser

run = labtools.run
#: Short heartbeats, so that a silent node is taken for gone in under a second.
FAST = ChatLimits(heartbeat=0.2)


# ----- a redis-server of the test's own ------------------------------------------------------


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own (no persistence): some tests kill and restart it."""
    require_redis()
    server = labtools.run(RedisServer.start(appendonly=False))
    yield server
    labtools.run(server.aclose())


def chat_node(redis_url: str, node: str, db: str | None, limits: ChatLimits = FAST) -> EventServer:
    """The chat's server as one node of a chat whose nodes meet at ``redis_url``, not started."""
    server = chat_app.build(db, fast_hashing=True, limits=limits)
    server.use(RedisAdapter(redis_url, node=node))
    return server


# ----- the bus ------------------------------------------------------------------------------


def test_the_bus_carries_json_between_nodes_and_skips_its_own(redis: RedisServer) -> None:
    async def main() -> None:
        a, b = RedisBus(redis.url, "demo", "a"), RedisBus(redis.url, "demo", "b")
        other_app = RedisBus(redis.url, "other", "c")
        heard: dict[str, list[dict]] = {"a": [], "b": [], "c": []}
        for name, bus in (("a", a), ("b", b), ("c", other_app)):
            bus.subscribe("news", heard[name].append)
            await bus.start()
        await a.publish("news", {"n": 1, "text": "¡hola!"})
        a.post("news", {"n": 2})
        a.post("elsewhere", {"n": 3})  # nobody subscribed to it
        await eventually(lambda: len(heard["b"]) == 2, what="b hears a's two messages")
        assert heard["b"] == [{"n": 1, "text": "¡hola!", "node": "a"}, {"n": 2, "node": "a"}]
        await asyncio.sleep(0.1)
        assert heard["a"] == [] and heard["c"] == []  # its own messages, another app's channel
        for bus in (a, b, other_app):
            await bus.aclose()
            await bus.aclose()  # idempotent
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("bus ")]
        a.post("news", {})  # a closed bus drops what it is given, as an unreachable Redis would
        assert a.dropped == 1
        with pytest.raises(ConnectionError):
            await a.publish("news", {})

    run(main())


def test_the_bus_subscribes_again_after_redis_restarts(redis: RedisServer) -> None:
    async def main() -> None:
        a, b = RedisBus(redis.url, "demo", "a"), RedisBus(redis.url, "demo", "b")
        heard: list[dict] = []
        reconnected: list[str] = []
        b.subscribe("news", heard.append)
        b.on_reconnect(lambda: reconnected.append("b"))
        await a.start()
        await b.start()
        redis.kill()
        await eventually(lambda: not b.connected, what="b notices Redis is gone")
        a.post("news", {"n": "lost"})  # fire-and-forget: dropped, not raised
        await eventually(lambda: a.dropped == 1, what="the post is dropped")
        with pytest.raises(ConnectionError):
            await a.publish("news", {"n": "lost too"})
        await redis.restart()
        await eventually(lambda: reconnected == ["b"], what="b subscribes again and says so")
        await a.publish("news", {"n": "after"})
        await eventually(lambda: heard == [{"n": "after", "node": "a"}], what="messages flow again")
        await a.aclose()
        await b.aclose()

    run(main())


def test_an_unreachable_broker_fails_at_start(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def main() -> None:
        bus = RedisBus(f"redis://127.0.0.1:{port}", "demo", "a")
        with pytest.raises(ConnectionError):
            await bus.start()
        await bus.aclose()

    run(main())


# ----- the event server's adapter ------------------------------------------------------------


def test_broadcasts_to_everyone_and_to_rooms_reach_the_other_node(redis: RedisServer) -> None:
    def node(name: str) -> EventServer:
        server: EventServer = EventServer("demo")
        server.on("join")(lambda client, room: client.join(room))
        server.use(RedisAdapter(redis.url, node=name))
        return server

    async def main() -> None:
        a, b = node("a"), node("b")
        await a.start()
        await b.start()
        on_a = await EventClient.connect(a.url)
        on_b, in_room_b = await EventClient.connect(b.url), await EventClient.connect(b.url)
        await in_room_b.request("join", "room-1")
        await a.broadcast("hello", {"to": "all"})
        await a.broadcast("hello", {"to": "room"}, to="room-1")
        assert a.local.broadcast("local", None) == 1  # ``local`` stays on a: its one socket
        assert a.local.broadcast("local", None, to="room-1") == 0  # a has no member of room-1
        await eventually(lambda: len(in_room_b.events("hello")) == 2, what="b's room member gets both")
        await asyncio.sleep(0.1)
        assert in_room_b.events("hello") == [{"to": "all"}, {"to": "room"}]
        assert on_b.events("hello") == [{"to": "all"}] and on_b.events("local") == []
        assert on_a.events("hello") == [{"to": "all"}] and on_a.events("local") == [None]
        for client in (on_a, on_b, in_room_b):
            await client.aclose()
        await a.aclose()
        await b.aclose()
        assert a.errors == [] and b.errors == []

    run(main())


# ----- the chat on two nodes ------------------------------------------------------------------


@pytest.fixture
def nodes(tmp_path: Path, redis: RedisServer) -> Iterator[tuple[Any, Any]]:
    db = str(tmp_path / "chat.db")
    a = labtools.serve(chat_node(redis.url, "a", db), name="chat-node-a")
    b = labtools.serve(chat_node(redis.url, "b", db), name="chat-node-b")
    yield a, b
    a.stop()
    b.stop()


class Tab:
    """A raw socket of a user that keeps every ``personal-message`` push whole (offset, epoch)."""

    def __init__(self) -> None:
        self.pushes: list[dict[str, Any]] = []
        self.client: EventClient | None = None

    def _keep(self, frame: Any) -> bool:
        if isinstance(frame, dict) and frame.get("event") == "personal-message":
            self.pushes.append(frame)
        return True

    async def open(self, url: str, token: str) -> Tab:
        self.client = await EventClient.connect(url, intercept=self._keep)
        await self.client.request("auth", {"token": token})
        return self

    def texts(self) -> list[str]:
        return [push["data"]["message"] for push in self.pushes]

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()


def online(user: ChatUser) -> dict[str, bool]:
    return user.online()


def test_accounts_messages_typing_and_presence_cross_nodes(nodes) -> None:
    a, b = nodes

    async def main() -> None:
        pedro = await ChatUser("Pedro").sign_up(a.url)
        ana = await ChatUser("Ana").sign_up(b.url)
        # Pedro signed up on a; logging in on b works (the bus announced him, the db knows him).
        pedro_on_b = await ChatUser("Pedro").log_in(b.url)
        assert pedro_on_b.uid == pedro.uid
        await pedro_on_b.disconnect()
        await pedro.wait_for_presence(lambda users: online_by_name(users) == {"Pedro": True, "Ana": True})
        await ana.wait_for_presence(lambda users: online_by_name(users) == {"Pedro": True, "Ana": True})
        # Messages both ways: acknowledged, then pushed once to each side, whichever node holds it.
        to_ana = await pedro.send(ana, "Hola Ana, desde a")
        to_pedro = await ana.send(pedro, "Hola Pedro, desde b")
        for user in (pedro, ana):
            await eventually(lambda user=user: len(user.inbox) == 2, what=f"{user.name} gets both messages")
        await asyncio.sleep(0.3)  # a duplicate would have arrived by now
        for user in (pedro, ana):
            assert [m["id"] for _t, m in user.inbox] == [to_ana["id"], to_pedro["id"]]
        assert to_pedro["id"] > to_ana["id"]
        # Typing crosses too, to the recipient only.
        await pedro.typing(ana)
        assert await ana.socket.next("typing") == {"from": pedro.uid}
        await asyncio.sleep(0.1)
        assert pedro.socket.events("typing") == []
        # History on either node is the same conversation (one database).
        assert await pedro.history(ana) == await ana.history(pedro)
        assert a.server.errors == [] and b.server.errors == []

    run(main())


def online_by_name(users: list[dict[str, Any]]) -> dict[str, bool]:
    return {user["name"]: user["online"] for user in users}


def test_a_user_still_online_on_another_node_is_not_announced_again(nodes) -> None:
    """Ana has a tab on each node; closing the one on node a changes nothing for anyone: she is
    still online (on b), so no new ``user-list`` goes out (PROTOCOL.md: only when a user's first
    connection opens or last one closes)."""
    a, b = nodes

    async def main() -> None:
        pedro = await ChatUser("Pedro").sign_up(a.url)
        ana = await ChatUser("Ana").sign_up(a.url)
        watcher = await EventClient.connect(a.url)
        await watcher.request("auth", {"token": pedro.token})
        await watcher.wait_for("user-list", where=lambda d: len(d) == 2 and all(u["online"] for u in d))
        other_tab = await Tab().open(b.url, ana.token)
        await asyncio.sleep(4 * FAST.presence_window)
        before = len(watcher.events("user-list"))
        await ana.disconnect()  # her tab on a: her last socket there, not her last one
        await asyncio.sleep(4 * FAST.presence_window + 0.2)
        assert len(watcher.events("user-list")) == before
        await other_tab.close()  # now her last one: everyone hears she left
        gone = await watcher.wait_for("user-list", where=lambda d: {u["name"]: u["online"] for u in d}["Ana"] is False)
        assert {u["name"]: u["online"] for u in gone} == {"Pedro": True, "Ana": False}
        await watcher.aclose()
        await pedro.disconnect()

    labtools.run(main())


def test_a_users_of_a_stopped_or_silent_node_go_offline(nodes, redis: RedisServer) -> None:
    a, b = nodes

    async def main() -> None:
        pedro = await ChatUser("Pedro").sign_up(a.url)
        ana = await ChatUser("Ana").sign_up(b.url)
        both = {"Pedro": True, "Ana": True}
        await pedro.wait_for_presence(lambda users: online_by_name(users) == both)
        assert "b" in a.server.state.cluster.heard  # a hears b's heartbeats
        # Node b falls silent (as if killed): no goodbye, no heartbeat. Gone after 3 heartbeats.
        silenced = time.monotonic()
        await b.server.bus.aclose()
        await pedro.wait_for_presence(lambda users: online_by_name(users)["Ana"] is False, timeout=3)
        assert time.monotonic() - silenced < 3 * FAST.heartbeat + 1.0
        assert "b" not in a.server.state.cluster.heard
        await ana.disconnect()

    run(main())
    b.stop()

    # A node that stops says goodbye: its users go offline at once, not after 3 heartbeats.
    async def stopping() -> None:
        pedro = await ChatUser("Pedro").log_in(a.url)
        carla = await ChatUser("Carla").sign_up(a.url)
        c = await labtools.aserve(chat_node(redis.url, "c", a.server.state.store.path, ChatLimits(heartbeat=30)),
                                  name="chat-node-c")
        carla_on_c = await ChatUser("Carla").log_in(c.url)
        await carla.disconnect()
        await pedro.wait_for_presence(lambda users: online_by_name(users).get("Carla") is True)
        await asyncio.sleep(0.5)
        assert online_by_name(pedro.user_lists[-1])["Carla"] is True  # online on c only
        stopped = time.monotonic()
        await c.astop()
        await pedro.wait_for_presence(lambda users: online_by_name(users)["Carla"] is False, timeout=2)
        assert time.monotonic() - stopped < 1.0
        await carla_on_c.disconnect()

    run(stopping())


def test_resume_returns_exactly_the_missed_messages_in_order(nodes) -> None:
    a, b = nodes

    async def main() -> None:
        pedro = await ChatUser("Pedro").sign_up(a.url)
        ana = await ChatUser("Ana").sign_up(b.url)
        tab = await Tab().open(b.url, ana.token)
        first = await pedro.send(ana, "m0")
        await eventually(lambda: len(tab.pushes) == 1, what="Ana's tab gets m0")
        push = tab.pushes[0]
        assert push["offset"] == str(first["id"]) and push["data"] == first
        epoch = push["epoch"]
        assert isinstance(epoch, str) and epoch == a.server.state.store.epoch == b.server.state.store.epoch
        await tab.close()
        await ana.disconnect()
        missed = [await pedro.send(ana, f"m{i}") for i in range(1, 4)]
        # Ana comes back, on the other node, and resumes from the last offset she received.
        back = await Tab().open(a.url, ana.token)
        answer = await back.client.request("resume", {"offset": push["offset"], "epoch": epoch})
        assert answer == {"missed": 3, "offset": str(missed[-1]["id"]), "epoch": epoch}
        assert back.texts() == ["m1", "m2", "m3"]
        assert [p["offset"] for p in back.pushes] == [str(m["id"]) for m in missed]
        # Resuming again from the same point sends nothing twice on this connection.
        again = await back.client.request("resume", {"offset": push["offset"], "epoch": epoch})
        assert again == {"missed": 0, "offset": str(missed[-1]["id"]), "epoch": epoch}
        # Live pushes carry on after the replay.
        live = await pedro.send(ana, "m4")
        await eventually(lambda: back.texts() == ["m1", "m2", "m3", "m4"], what="the live push follows")
        assert back.pushes[-1]["offset"] == str(live["id"])
        # Another epoch cannot be resumed; a malformed offset is refused before any query.
        with pytest.raises(AckError) as caught:
            await back.client.request("resume", {"offset": "1", "epoch": "another-epoch"})
        assert caught.value.code == "too-old"
        for bad in ("-1", "1.5", "1e3", "²", " 1", "", "9" * 20, str(2**63), 5, None):
            with pytest.raises(AckError) as caught:
                await back.client.request("resume", {"offset": bad, "epoch": epoch})
            assert caught.value.code == "invalid-data", bad
        for bad in (None, "1", {"offset": "1"}, {"offset": "1", "epoch": 7}):
            with pytest.raises(AckError) as caught:
                await back.client.request("resume", bad)
            assert caught.value.code == "invalid-data", bad
        unauthenticated = await EventClient.connect(a.url)
        with pytest.raises(AckError) as caught:
            await unauthenticated.request("resume", {"offset": "1", "epoch": epoch})
        assert caught.value.code == "unauthorized"
        for client in (unauthenticated,):
            await client.aclose()
        await back.close()

    run(main())


def test_a_gap_longer_than_a_resume_is_too_old(nodes, monkeypatch) -> None:
    a, _b = nodes
    monkeypatch.setattr(mailbox, "MAX_RESUME", 2)

    async def main() -> None:
        pedro = await ChatUser("Pedro").sign_up(a.url)
        ana = await ChatUser("Ana").sign_up(a.url)
        epoch = a.server.state.store.epoch
        await ana.disconnect()
        for i in range(3):
            await pedro.send(ana, f"m{i}")
        back = await Tab().open(a.url, ana.token)
        with pytest.raises(AckError) as caught:
            await back.client.request("resume", {"offset": "0", "epoch": epoch})
        assert caught.value.code == "too-old" and "history" in caught.value.message
        assert back.pushes == []
        await back.close()

    run(main())


def test_messages_sent_while_redis_is_down_arrive_once_it_is_back(nodes, redis: RedisServer) -> None:
    a, b = nodes

    async def main() -> None:
        pedro = await ChatUser("Pedro").sign_up(a.url)
        ana = await ChatUser("Ana").sign_up(b.url)
        await pedro.wait_for_presence(lambda users: len(users) == 2)
        redis.kill()
        await eventually(lambda: not b.server.bus.connected, what="node b notices")
        stored = await pedro.send(ana, "while Redis was down")  # stored and acknowledged all the same
        await asyncio.sleep(0.3)
        assert ana.inbox == []
        await redis.restart()
        await eventually(lambda: len(ana.inbox) == 1, within=8, what="the catch-up after the reconnection")
        assert ana.inbox[0][1] == stored
        await asyncio.sleep(0.3)
        assert len(ana.inbox) == 1 and [m["id"] for _t, m in pedro.inbox] == [stored["id"]]

    run(main())


def test_many_messages_from_both_nodes_arrive_once_and_in_order(nodes) -> None:
    a, b = nodes

    async def main() -> None:
        pedro = await ChatUser("Pedro").sign_up(a.url)
        ana = await ChatUser("Ana").sign_up(b.url)
        watcher = await Tab().open(a.url, ana.token)  # Ana's second tab, on node a
        sends = [pedro.send(ana, f"p{i}") for i in range(40)] + [ana.send(pedro, f"a{i}") for i in range(40)]
        stored = await asyncio.gather(*sends)
        ids = sorted(m["id"] for m in stored)
        for user in (pedro, ana):
            await eventually(lambda user=user: len(user.inbox) >= 80, what=f"{user.name}'s 80 messages")
        await eventually(lambda: len(watcher.pushes) >= 80, what="Ana's second tab")
        await asyncio.sleep(0.3)
        for got in ([m["id"] for _t, m in pedro.inbox], [m["id"] for _t, m in ana.inbox],
                    [p["data"]["id"] for p in watcher.pushes]):
            assert got == ids  # every message once, in id (commit) order, on both nodes
        await watcher.close()

    run(main())


def test_a_broker_needs_a_shared_database_file(redis: RedisServer) -> None:
    with pytest.raises(ValueError, match="db=FILE"):
        labtools.serve(chat_node(redis.url, "x", None), name="chat-no-db")


# ----- one node: offsets survive a restart on the same database -------------------------------


def test_resume_across_a_restart_without_a_broker(tmp_path: Path) -> None:
    db = str(tmp_path / "chat.db")
    chat = labtools.serve("chat", name="chat-resume", db=db, fast_hashing=True)
    pedro, ana = ChatUser("Pedro"), ChatUser("Ana")
    tab = Tab()

    async def before() -> dict[str, Any]:
        await pedro.sign_up(chat.url)
        await ana.sign_up(chat.url)
        await tab.open(chat.url, ana.token)
        await pedro.send(ana, "before")
        await eventually(lambda: len(tab.pushes) == 1, what="the push")
        await tab.close()
        await ana.disconnect()
        await pedro.send(ana, "missed 1")
        await pedro.send(ana, "missed 2")
        return tab.pushes[0]

    last = run(before())
    epoch = chat.server.state.store.epoch
    chat.stop()
    chat = labtools.serve("chat", name="chat-resume", db=db, fast_hashing=True)
    assert chat.server.state.store.epoch == epoch

    async def after() -> None:
        back = await Tab().open(chat.url, ana.token)
        answer = await back.client.request("resume", {"offset": last["offset"], "epoch": last["epoch"]})
        assert answer["missed"] == 2 and back.texts() == ["missed 1", "missed 2"]
        await back.close()

    run(after())
    chat.stop()
    other = labtools.serve("chat", name="chat-resume-other", db=str(tmp_path / "other.db"), fast_hashing=True)
    assert other.server.state.store.epoch != epoch  # a new database is a new epoch
    other.stop()


def test_resuming_on_a_node_that_lags_sends_nothing_the_client_has(tmp_path: Path) -> None:
    """Two nodes on one database and no bus: ``behind`` hears no bell from ``ahead``, so it lags
    until it stores a message itself. Ana, sent m0-m2 by ``ahead``, resumes on ``behind``: when
    it catches up it does not push her m0-m2 again (on the wire), and an offset past every
    stored message is refused."""
    db = str(tmp_path / "chat.db")
    ahead = labtools.serve("chat", name="chat-lag-ahead", db=db, fast_hashing=True)
    pedro, ana = ChatUser("Pedro"), ChatUser("Ana")
    run(pedro.sign_up(ahead.url))
    run(ana.sign_up(ahead.url))
    behind = labtools.serve("chat", name="chat-lag-behind", db=db, fast_hashing=True)  # knows them

    async def main() -> None:
        tab = await Tab().open(ahead.url, ana.token)
        for i in range(3):
            await pedro.send(ana, f"m{i}")
        await eventually(lambda: len(tab.pushes) == 3, what="Ana's tab on the node ahead gets m0-m2")
        last = tab.pushes[-1]
        await tab.close()
        back = await Tab().open(behind.url, ana.token)
        assert behind.server.state.mailbox.cursor < int(last["offset"])  # it does lag
        answer = await back.client.request("resume", {"offset": last["offset"], "epoch": last["epoch"]})
        assert answer == {"missed": 0, "offset": last["offset"], "epoch": last["epoch"]}
        await pedro.disconnect()
        await pedro.connect(behind.url)
        live = await pedro.send(ana, "m3")  # stored on the node behind: it catches up, m0-m3
        await eventually(lambda: behind.server.state.mailbox.cursor == live["id"], what="the catch-up")
        await eventually(lambda: back.texts() == ["m3"], what="the live push")
        await asyncio.sleep(0.1)
        assert back.texts() == ["m3"]
        with pytest.raises(AckError) as caught:
            await back.client.request("resume", {"offset": str(live["id"] + 1), "epoch": last["epoch"]})
        assert caught.value.code == "invalid-data" and "no server sent it" in caught.value.message
        await back.close()

    run(main())
    ahead.stop()
    behind.stop()


# ----- one SQLite file, several writing processes -----------------------------------------------

WRITER = """
import asyncio, sys
from labtools.apps.chat.store import Store

async def main(path, sender, batches):
    store = Store(path)
    await store.open()
    for i in range(batches):
        await asyncio.gather(*(store.add_message(sender, sender, f"{i}-{j}", None) for j in range(5)))
    await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def test_processes_sharing_the_database_commit_ids_in_order(tmp_path: Path) -> None:
    """What the nodes' catch-up relies on: a reader that follows ``id > last seen`` while two
    processes write never skips an id (ids are drawn inside SQLite's one write transaction)."""
    path = str(tmp_path / "shared.db")

    async def setup() -> None:
        store = Store(path)
        await store.open()
        for uid in ("p", "q"):
            await store.add_user(uid, uid, f"{uid}@example.com", "not a hash")
        await store.close()

    run(setup())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, path, uid, "60"], env=env) for uid in ("p", "q")]
    reader = sqlite3.connect(path, timeout=10)
    seen: list[int] = []
    while True:
        running = any(writer.poll() is None for writer in writers)
        seen += [id for (id,) in reader.execute("SELECT id FROM messages WHERE id > ? ORDER BY id",
                                               (seen[-1] if seen else 0,))]
        if not running:
            break
        time.sleep(0.001)
    assert [writer.returncode for writer in writers] == [0, 0]
    stored = [id for (id,) in reader.execute("SELECT id FROM messages ORDER BY id")]
    reader.close()
    assert len(stored) == 2 * 60 * 5 and seen == stored
