"""Several nodes through Redis when things fail: a node killed with SIGKILL, Redis restarted.

The nodes run as real processes (``Deployment``) on a real redis-server. The clients here speak
raw frames (``Raw``), so that what they count is what crossed the socket: every acknowledged
message must reach every receiver exactly once, in order, whatever was killed meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import pytest
from conftest import require_haproxy, require_redis
from websockets.asyncio.client import ClientConnection, connect

import labtools as lt
from labtools.deploy import Deployment


class Raw:
    """A minimal client of PROTOCOL.md's frames that keeps the last offset and epoch it saw."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.offset: str | None = None
        self.epoch: str | None = None
        self.texts: list[str] = []  # msg-from-server texts, in arrival order
        self.acks: dict[int, dict[str, Any]] = {}
        self.ids = iter(range(1, 10**9))
        self.reader = asyncio.get_running_loop().create_task(self.read())

    @classmethod
    async def open(cls, url: str) -> Raw:
        return cls(await connect("ws" + url.removeprefix("http")))

    async def read(self) -> None:
        async for text in self.connection:
            frame = json.loads(text)
            if "offset" in frame:
                self.offset, self.epoch = frame["offset"], frame["epoch"]
            if "ack" in frame:
                self.acks[frame["ack"]] = frame
            elif frame["event"] == "msg-from-server":
                self.texts.append(frame["data"]["text"])

    async def request(self, event: str, data: Any, within: float = 5) -> dict[str, Any]:
        """Emit with an id; the acknowledgement frame (``data`` or ``error``)."""
        number = next(self.ids)
        await self.connection.send(json.dumps({"event": event, "data": data, "id": number}))
        async with asyncio.timeout(within):
            while number not in self.acks:
                await asyncio.sleep(0.005)
        return self.acks.pop(number)

    async def close(self) -> None:
        await self.connection.close()
        self.reader.cancel()


async def send_until_acknowledged(url: str, text: str, senders: dict[str, Raw]) -> None:
    """Send ``text`` until a node acknowledges it, reconnecting (to ``url``) when the node is gone."""
    for _attempt in range(100):
        try:
            sender = senders.get("now") or await Raw.open(url)
            senders["now"] = sender
            answer = await sender.request("msg-to-server", {"text": text}, within=2)
            if "data" in answer:
                return
        except (OSError, TimeoutError, Exception):  # the node died, or Redis is down: loud, then again
            senders.pop("now", None)
        await asyncio.sleep(0.1)
    raise AssertionError(f"{text!r} was never acknowledged")


@pytest.fixture
def minichat_nodes() -> Deployment:
    require_redis()
    require_haproxy()
    deployment = lt.run(Deployment.start("minichat", nodes=2, name="test-nodes"))
    yield deployment
    deployment.stop()


def test_a_killed_node_loses_no_acknowledged_message(minichat_nodes: Deployment) -> None:
    """Ana's node is killed with SIGKILL mid-conversation; she resumes on the other one."""
    a, b = minichat_nodes.node_urls

    async def scenario() -> None:
        ana, pedro = await Raw.open(a), await Raw.open(b)
        for number in range(1, 41):
            assert "data" in await pedro.request("msg-to-server", {"text": f"m{number}"})
            if number == 20:
                await asyncio.sleep(0.2)
                minichat_nodes.kill(0)  # Ana's node: no FIN, no goodbye
        await asyncio.sleep(0.3)
        assert ana.texts[:20] == [f"m{n}" for n in range(1, 21)]  # what she had before the kill
        back = await Raw.open(b)
        back.texts = list(ana.texts)
        resumed = await back.request("resume", {"offset": ana.offset, "epoch": ana.epoch})
        assert resumed["data"]["missed"] == 40 - len(ana.texts)
        assert back.texts == [f"m{n}" for n in range(1, 41)]  # all of them, in order, once
        await pedro.close()
        await back.close()

    lt.run(scenario())


def test_a_sender_whose_node_dies_retries_and_nothing_acknowledged_is_lost(minichat_nodes: Deployment) -> None:
    a, b = minichat_nodes.node_urls

    async def scenario() -> None:
        reader = await Raw.open(b)
        senders: dict[str, Raw] = {"now": await Raw.open(a)}
        for number in range(1, 31):
            if number == 15:
                minichat_nodes.kill(0)
            await send_until_acknowledged(b, f"m{number}", senders)
        await asyncio.sleep(0.3)
        # Every acknowledged message arrived once; m15 may be there twice only if its first
        # attempt reached Redis and its acknowledgement died with the node (at most once here).
        assert [t for t in reader.texts if t != "m15"] == [f"m{n}" for n in range(1, 31) if n != 15]
        assert 1 <= reader.texts.count("m15") <= 2
        await reader.close()

    lt.run(scenario())


def test_redis_restarted_the_nodes_fail_loudly_then_carry_on(minichat_nodes: Deployment) -> None:
    """While Redis is down a send is refused (``unavailable``), never silently dropped; after
    it is back (its data kept by its append-only file) the nodes go on from where they were."""
    a, b = minichat_nodes.node_urls
    redis = minichat_nodes.redis
    assert redis is not None

    async def scenario() -> None:
        reader, sender = await Raw.open(b), await Raw.open(a)
        for number in range(1, 11):
            assert "data" in await sender.request("msg-to-server", {"text": f"m{number}"})
        epoch = reader.epoch
        redis.kill()  # hard down first, to see the loud refusal
        refused = await sender.request("msg-to-server", {"text": "lost?"}, within=15)
        assert refused["error"]["code"] == "unavailable"
        await redis.restart()
        senders = {"now": sender}
        for number in range(11, 21):
            await send_until_acknowledged(a, f"m{number}", senders)
        await asyncio.sleep(0.5)
        assert reader.texts == [f"m{n}" for n in range(1, 21)]
        assert reader.epoch == epoch  # the same history: nothing to tell the clients
        await reader.close()
        await senders["now"].close()

    lt.run(scenario())


def test_a_restarted_bands_node_restores_every_vote(redis_server) -> None:
    deployment = lt.run(Deployment.start("bands", nodes=2, broker=redis_server.url, name="test-bands-nodes",
                                         front_door=False))
    try:
        async def votes(url: str) -> int:
            client = await Raw.open(url)
            try:
                listed = await client.request("get-band-list", None)
                return listed["data"]["bands"][0]["votes"]
            finally:
                await client.close()

        async def scenario() -> None:
            a, b = deployment.node_urls
            voters = [await Raw.open(url) for url in (a, b, a, b)]
            listed = await voters[0].request("get-band-list", None)
            first = listed["data"]["bands"][0]["id"]
            answers = await asyncio.gather(*(v.request("vote-band", first) for v in voters for _ in range(50)))
            assert all("data" in answer for answer in answers)
            for voter in voters:
                await voter.close()
            deployment.kill(0)
            await deployment.restart_node(0)
            assert await votes(deployment.node_urls[0]) == await votes(b) == 200

        lt.run(scenario())
    finally:
        deployment.stop()


def test_polling_nodes_share_one_store(redis_server) -> None:
    """A post on one polling node is read from the other, with the same id."""
    nodes = [lt.serve("polling", name=f"test-poll-{n}", broker=redis_server.url, node=n) for n in "ab"]
    try:
        body = json.dumps({"from": "pedro", "to": "ana", "text": "hola"}).encode()
        post = urllib.request.Request(nodes[0].url + "messages", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(post, timeout=5) as response:
            posted = json.load(response)
        with urllib.request.urlopen(nodes[1].url + "messages?user=ana&since=0&wait=5", timeout=10) as response:
            polled = json.load(response)
        assert [m["id"] for m in polled] == [posted["id"]] and polled[0]["text"] == "hola"
    finally:
        for node in nodes:
            node.stop()
