"""The shared log when things go wrong between nodes (issue 19): a gap is never silent, not even
before a node has read anything; an entry that does not decode is skipped, counted and reported,
never fatal; pub/sub keeps apart two apps on two databases of one Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from typing import Any

from conftest import require_haproxy, require_redis
from test_nodes import Raw
from websockets.exceptions import ConnectionClosed

import labtools
from labtools.cluster.bus import RedisBus
from labtools.cluster.redis_log import RedisLog
from labtools.deploy import Deployment
from labtools.deploy.redis import RedisServer
from labtools.events.log import Offset

run = labtools.run
KEEP = 50  # MAXLEN ~ 50: Redis trims whole nodes of 100 entries, so 1,000 appends leave ~100-200


def entry(number: int) -> dict[str, Any]:
    return {"n": "writer", "s": number, "c": None, "cmd": {"b": "msg-from-server", "d": {"text": f"m{number}"}}}


class Follower:
    """A node's view of the log: what it applied, the gaps and resets it was told of, what was reported."""

    def __init__(self) -> None:
        self.applied: list[tuple[Offset, dict[str, Any]]] = []
        self.gaps: list[Offset] = []
        self.resets: list[Any] = []
        self.reports: list[str] = []

    def apply(self, offset: Offset, item: dict[str, Any]) -> None:
        self.applied.append((offset, item))

    async def open_stateless(self, log: RedisLog, tail: int = 0) -> None:
        await log.open(None, self.apply, tail=tail, gap=self.gaps.append, report=self.reports.append)

    async def open_stateful(self, log: RedisLog) -> None:
        await log.open({"count": 0}, self.apply, state_now=lambda: {"count": len(self.applied)},
                       reset=self.resets.append, report=self.reports.append)


async def append_many(log: RedisLog, first: int, count: int) -> None:
    for number in range(first, first + count):
        await log.append(entry(number))


def test_a_node_that_falls_behind_before_reading_anything_is_told_of_its_gap(redis_server: RedisServer) -> None:
    """Stateless: started, then (paused) it falls more than the stream keeps behind before its
    first read: its first read finds the numbering broken and says where the gap ends."""

    async def scenario() -> None:
        writer, late = RedisLog(redis_server.url, "gap-stateless", keep=KEEP), RedisLog(
            redis_server.url, "gap-stateless", keep=KEEP)
        node = Follower()
        try:
            await Follower().open_stateless(writer)
            await writer.append(entry(0))
            await node.open_stateless(late)  # starts at entry 0, reads nothing yet (as if SIGSTOPped)
            await append_many(writer, 1, 1000)
            await late.follow()
            assert len(node.gaps) == 1 and late.gaps == 1
            first_kept = node.applied[0][0]
            assert node.gaps[0] == first_kept  # told before anything after the gap was applied
            assert node.applied[0][1]["s"] > 1  # entries 1.. were trimmed unread
        finally:
            await writer.aclose()
            await late.aclose()

    run(scenario())


def test_a_stateful_node_behind_from_its_start_restores_the_newest_snapshot(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        writer = RedisLog(redis_server.url, "gap-stateful", keep=KEEP)
        late = RedisLog(redis_server.url, "gap-stateful", keep=KEEP)
        ahead, node = Follower(), Follower()
        try:
            await ahead.open_stateful(writer)
            await writer.follow()
            await node.open_stateful(late)  # from the seed snapshot: entry number 0
            await append_many(writer, 1, 1000)
            while len(ahead.applied) < 1000:
                await asyncio.sleep(0.01)
            offset = ahead.applied[-1][0]
            await writer.save_snapshot({"count": 1000}, offset)  # the node ahead keeps a snapshot
            await late.follow()
            assert late.gaps == 1 and node.resets == [{"count": 1000}]
            await writer.append(entry(1001))
            while not node.applied or node.applied[-1][1]["s"] != 1001:
                await asyncio.sleep(0.01)
            assert late.gaps == 1  # the numbering goes on from the snapshot's entry: no false gap
        finally:
            await writer.aclose()
            await late.aclose()

    run(scenario())


def test_an_entry_that_does_not_decode_is_skipped_counted_and_reported(redis_server: RedisServer) -> None:
    """A poison entry (broken JSON, not an object, no number) stops no node: the ones following
    skip it, a node that starts afterwards starts, and every valid entry is applied once."""

    async def scenario() -> None:
        first, second = RedisLog(redis_server.url, "poison", keep=1000), RedisLog(redis_server.url, "poison", keep=1000)
        following, starting = Follower(), Follower()
        try:
            await following.open_stateless(first)
            await first.follow()
            await first.append(entry(1))
            stream = first.stream
            await first.redis.xadd(stream, {"n": "999", "e": "{broken"})
            await first.redis.xadd(stream, {"n": "999", "e": json.dumps([1, 2])})
            await first.redis.xadd(stream, {"e": json.dumps(entry(5))})
            await first.append(entry(2))
            while len(following.applied) < 2:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            assert [item["s"] for _offset, item in following.applied] == [1, 2]
            assert first.malformed == 3 and len(following.reports) == 3 and first.gaps == 0
            assert first._follower is not None and not first._follower.done()
            await starting.open_stateless(second, tail=10)  # starts past the poison, with its tail
            await second.follow()
            await first.append(entry(3))
            while not starting.applied:
                await asyncio.sleep(0.01)
            assert starting.applied[-1][1]["s"] == 3 and second.gaps == 0
        finally:
            await first.aclose()
            await second.aclose()

    run(scenario())


def test_pub_sub_keeps_two_databases_of_one_redis_apart(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        heard: dict[str, list[Any]] = {"0": [], "1": []}
        buses = []
        for db in ("0", "1"):
            listener = RedisBus(f"{redis_server.url}/{db}", "chat", node=f"listener-{db}")
            listener.subscribe("presence", heard[db].append)
            buses.append(listener)
        speaker = RedisBus(f"{redis_server.url}/0", "chat", node="speaker")
        buses.append(speaker)
        try:
            for bus in buses:
                await bus.start()
            await speaker.publish("presence", {"uid": "ana"})
            for _ in range(100):
                if heard["0"]:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            assert [m["uid"] for m in heard["0"]] == ["ana"] and heard["1"] == []
        finally:
            for bus in buses:
                await bus.aclose()

    run(scenario())


def test_a_paused_node_that_fell_behind_closes_its_clients_before_pushing_past_the_gap() -> None:
    """The measured case, small: node 2 is SIGSTOPped, the stream moves on by far more than it
    keeps, SIGCONT. Node 2's client is closed with 1013 having received nothing from after the
    gap (its last offset is before it), and resuming on node 1 from that offset fills it all.
    Fails without the numbering checked from the start (no close: a silent gap) and without
    the close before the pushes (the client's offset jumps over the gap)."""
    require_redis()
    require_haproxy()
    deployment = run(Deployment.start("minichat", nodes=2, name="test-gap"))
    try:
        assert deployment.redis is not None
        first, second = deployment.node_urls

        async def scenario() -> None:
            watcher = await Raw.open(first)
            paused = await Raw.open(second)
            writer = RedisLog(deployment.redis.url, "minichat", keep=KEEP)
            await writer.open(None, lambda offset, item: None)
            pid = deployment.nodes[1].process.pid
            os.kill(pid, signal.SIGSTOP)
            try:
                for number in range(1, 1001):  # as node 1 would append them, through MAXLEN ~ 50
                    await writer.append({"n": "test", "s": number, "c": None,
                                         "cmd": {"b": "msg-from-server", "d": {"text": f"m{number}"}, "to": None,
                                                 "x": False}})
            finally:
                os.kill(pid, signal.SIGCONT)
            async with asyncio.timeout(15):
                with contextlib.suppress(ConnectionClosed):
                    await paused.reader  # closed by node 2
            assert paused.connection.close_code == 1013
            # What node 2 had read before it stopped (its blocked read's answer), then nothing:
            # not one push from after the gap.
            got = len(paused.texts)
            assert paused.texts == [f"m{n}" for n in range(1, got + 1)] and got < 900
            while len(watcher.texts) < 1000:
                await asyncio.sleep(0.02)
            back = await Raw.open(first)
            resumed = await back.request("resume", {"offset": paused.offset, "epoch": paused.epoch})
            assert resumed["data"]["missed"] == 1000 - got
            assert back.texts == [f"m{n}" for n in range(got + 1, 1001)]
            await writer.aclose()
            for client in (watcher, back):
                await client.close()

        run(scenario())
    finally:
        deployment.stop()


def test_a_node_that_starts_after_a_malformed_newest_entry_sees_no_gap(redis_server: RedisServer) -> None:
    """The number a stateless node starts from is the newest entry's that decodes: a poison
    entry on top (with a number of its own, or none) must not make it announce a false gap."""

    async def scenario() -> None:
        writer = RedisLog(redis_server.url, "poison-top", keep=1000)
        late = RedisLog(redis_server.url, "poison-top", keep=1000)
        node = Follower()
        try:
            await Follower().open_stateless(writer)
            await append_many(writer, 1, 5)
            await writer.redis.xadd(writer.stream, {"n": "0", "e": "{broken"})
            await node.open_stateless(late, tail=10)
            await late.follow()
            await writer.append(entry(6))
            while not node.applied:
                await asyncio.sleep(0.01)
            assert node.applied[-1][1]["s"] == 6 and late.gaps == 0 and node.gaps == []
        finally:
            await writer.aclose()
            await late.aclose()

    run(scenario())
