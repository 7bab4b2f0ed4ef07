"""Lesson 11's experiments on several nodes: clients that resume on another node after a crash,
one-way latency and bursts across nodes, and what one Redis carries.

``Follower`` is a mini-chat reader the way a careful client is written: it keeps the offset and
epoch of the last message it showed; when its socket drops it reconnects (through the front
door, so to whichever node is up) and emits ``resume`` with them. Until the acknowledgement it
holds back the live messages the new connection already gets, then shows the replayed and the
held ones in offset order, each once: a message pushed live *and* replayed is dropped by its
offset, so nothing is shown twice and nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from collections import Counter
from typing import Any

import psutil
from redis.asyncio import Redis
from websockets.exceptions import InvalidHandshake

from ..cluster.log import Offset, parse_offset
from ..deploy import Deployment
from ..events import EventClient
from ..events.client import AckError


class Follower:
    """A mini-chat reader that reconnects and resumes from its last offset (module docstring)."""

    def __init__(self, name: str, url: str, *, seed: int = 0) -> None:
        self.name = name
        self.url = url
        self.rng = random.Random(seed)
        self.client: EventClient | None = None
        self.node: str | None = None  # the node that took the current connection (X-Served-By)
        self.nodes: list[str | None] = []  # every connection's node, in order
        self.offset: str | None = None  # the last message shown (wire form) and its epoch
        self.epoch: str | None = None
        self.last: Offset | None = None
        self.texts: list[str] = []  # shown, in order
        self.pushed_twice = 0  # frames that arrived again (live and replayed) and were dropped
        self.resumes: list[dict[str, Any]] = []  # one per reconnection: node, missed, seconds
        self.dropped_at: list[float] = []
        self.holding = False
        self.held: list[dict[str, Any]] = []

    def frame(self, frame: Any) -> bool:
        """The client's ``intercept``: every frame passes; messages are shown (or held) here."""
        if isinstance(frame, dict) and frame.get("event") == "msg-from-server" and "offset" in frame:
            if self.holding:
                self.held.append(frame)
            else:
                self.show(frame)
        elif isinstance(frame, dict) and frame.get("event") == "position" and self.offset is None:
            self.offset, self.epoch = frame["offset"], frame["epoch"]
            self.last = parse_offset(self.offset)
        return True

    def show(self, frame: dict[str, Any]) -> None:
        offset = parse_offset(frame["offset"])
        if offset is None or (self.last is not None and offset <= self.last):
            self.pushed_twice += 1
            return
        self.last, self.offset, self.epoch = offset, frame["offset"], frame["epoch"]
        self.texts.append(frame["data"]["text"])

    async def connect(self) -> None:
        """Open a connection; if this is a reconnection, resume from the last offset shown."""
        resuming = self.offset is not None and bool(self.nodes)
        self.holding, self.held = resuming, []
        started = time.perf_counter()
        try:
            self.client = await EventClient.connect(self.url, name=self.name, intercept=self.frame)
            self.node = self.client.connection.response.headers.get("X-Served-By")
            self.nodes.append(self.node)
            if resuming:
                ack = await self.client.request("resume", {"offset": self.offset, "epoch": self.epoch})
                self.resumes.append({"node": self.node, "missed": ack["missed"],
                                     "seconds": time.perf_counter() - self.dropped_at[-1],
                                     "connect_s": time.perf_counter() - started})
        finally:
            self.holding = False
            held, self.held = self.held, []
            for frame in sorted(held, key=lambda f: parse_offset(f["offset"]) or (0, 0)):
                self.show(frame)

    async def follow(self) -> None:
        """Stay connected for ever: after a drop, wait 0-50 ms (jitter) and reconnect, resuming."""
        while True:
            try:
                await self.connect()
            except (OSError, TimeoutError, InvalidHandshake, AckError):  # no node yet, or a failed resume
                await asyncio.sleep(self.rng.uniform(0, 0.05))
                continue
            assert self.client is not None
            try:
                await self.client.next("never-sent", timeout=3600)
            except ConnectionError:
                self.dropped_at.append(time.perf_counter())
                await asyncio.sleep(self.rng.uniform(0, 0.05))
            finally:
                with contextlib.suppress(Exception):
                    await self.client.aclose()


async def wait_until(predicate: Any, timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


async def all_nodes_up(deployment: Deployment, timeout: float = 10) -> None:
    """Restart any node that is not running and wait until the front door sees every node UP
    (a cell that killed a node can then run again)."""
    for index, node in enumerate(deployment.nodes):
        if not node.alive:
            await deployment.restart_node(index)
    door = deployment.front_door
    if door is not None:
        await wait_until(lambda: all(row["status"] == "UP" for row in door.stats().values()), timeout, step=0.05)


async def kill_mid_conversation(deployment: Deployment, *, readers: int = 20, messages: int = 200,
                                kill_after: int = 100, interval: float = 0.005, victim: int = 1,
                                timeout: float = 10) -> dict[str, Any]:
    """Pedro writes on a node that survives; ``readers`` follow through the front door (round
    robin: some on each node). After ``kill_after`` messages node ``victim`` gets SIGKILL; its
    readers reconnect and resume. Returns what every reader showed and how it got there."""
    await all_nodes_up(deployment)
    survivor = deployment.node_urls[0 if victim != 0 else 1]
    followers = [Follower(f"reader{k}", deployment.url, seed=k) for k in range(readers)]
    tasks = [asyncio.create_task(f.follow()) for f in followers]
    pedro = await EventClient.connect(survivor, name="pedro")
    try:
        await wait_until(lambda: all(f.offset is not None for f in followers), timeout)
        before = Counter(f.node for f in followers)
        victim_name = f"node{victim + 1}"
        killed_at = 0.0
        for k in range(messages):
            if k == kill_after:
                killed_at = time.perf_counter()
                await asyncio.to_thread(deployment.kill, victim)
            await pedro.emit("msg-to-server", {"text": f"message {k}"})
            await asyncio.sleep(interval)
        sent_at = time.perf_counter()
        await wait_until(lambda: all(len(f.texts) >= messages for f in followers), timeout)
        caught_up = time.perf_counter()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pedro.aclose()
    expected = [f"message {k}" for k in range(messages)]
    resumed = [f for f in followers if f.resumes]
    return {
        "readers": readers, "messages": messages, "kill_after": kill_after, "victim": victim_name,
        "before": dict(before),
        "on_victim": sum(f.nodes[0] == victim_name for f in followers),
        "resumed": len(resumed),
        "resumed_on": dict(Counter(f.resumes[-1]["node"] for f in resumed)),
        "complete": sum(f.texts == expected for f in followers),
        "shown": [len(f.texts) for f in followers],
        "missed": [f.resumes[-1]["missed"] for f in resumed],
        "back_s": [f.resumes[-1]["seconds"] for f in resumed],
        "pushed_twice": sum(f.pushed_twice for f in followers),
        "untouched_reconnected": sum(bool(f.resumes) for f in followers if f.nodes[0] != victim_name),
        "sending_s": sent_at - killed_at, "caught_up_after_s": caught_up - killed_at,
    }


async def one_way_latency(sender_url: str, receiver_url: str, *, messages: int = 200) -> list[float]:
    """Milliseconds from Pedro's send to Ana's receipt, one message at a time (no queueing):
    both clients live in this kernel, so one clock times both ends."""
    pedro = await EventClient.connect(sender_url, name="pedro")
    ana = await EventClient.connect(receiver_url, name="ana")
    samples = []
    try:
        for k in range(messages):
            text = f"ping {k} {time.perf_counter()}"
            started = time.perf_counter()
            arrived = asyncio.ensure_future(ana.next("msg-from-server", where=lambda d, t=text: d["text"] == t))
            await pedro.emit("msg-to-server", {"text": text})
            await arrived
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        await pedro.aclose()
        await ana.aclose()
    return samples


def process_cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) of each named process so far."""
    seconds = {}
    for name, pid in pids.items():
        times = psutil.Process(pid).cpu_times()
        seconds[name] = times.user + times.system
    return seconds


async def burst(sender_urls: list[str], listener_urls: list[str], pids: dict[str, int], *,
                per_sender: int = 100, timeout: float = 20) -> dict[str, Any]:
    """One sender per URL of ``sender_urls`` sends ``per_sender`` messages as fast as its socket
    takes them (within the servers' per-client rate limit: its burst of 200 frames); one
    listener per URL of ``listener_urls``. Returns the deliveries per second (messages x
    listeners, until the last listener has the last one) and the CPU seconds each process in
    ``pids`` spent meanwhile."""
    senders = [await EventClient.connect(url, name=f"sender{k}") for k, url in enumerate(sender_urls)]
    listeners = [await EventClient.connect(url, name=f"listener{k}") for k, url in enumerate(listener_urls)]
    messages = per_sender * len(senders)
    counts = [0] * len(listeners)
    for k, listener in enumerate(listeners):
        listener.on("msg-from-server", lambda _data, k=k: counts.__setitem__(k, counts[k] + 1))

    async def send(sender: EventClient) -> None:
        for k in range(per_sender):
            await sender.emit("msg-to-server", {"text": f"{sender.name} {k}"})

    try:
        cpu_before = process_cpu(pids)
        started = time.perf_counter()
        await asyncio.gather(*(send(sender) for sender in senders))
        done = await wait_until(lambda: min(counts) >= messages, timeout, step=0.002)
        seconds = time.perf_counter() - started
        cpu_after = process_cpu(pids)
    finally:
        for client in (*senders, *listeners):
            await client.aclose()
    deliveries = messages * len(listeners)
    cpu = {name: cpu_after[name] - cpu_before[name] for name in pids}
    refused = sum(len(sender.errors) for sender in senders)
    return {"messages": messages, "listeners": len(listeners), "complete": done, "refused": refused,
            "seconds": seconds, "deliveries_per_s": deliveries / seconds, "cpu": cpu,
            "cpu_us_per_delivery": 1e6 * sum(cpu.values()) / deliveries}


async def redis_rate(url: str, *, messages: int = 20_000, pipeline: int = 100, key: str = "lesson11:bench",
                     keep: int = 1000) -> dict[str, float]:
    """Entries per second one client gets through Redis, ``pipeline`` commands per round trip:
    ``XADD`` (trimmed like the apps' logs), ``XREAD`` of what was added (500 per call, as a node
    reads), and ``PUBLISH`` to one subscriber (the ephemeral bus: presence, typing)."""
    redis = Redis.from_url(url)
    subscriber = Redis.from_url(url)
    pubsub = subscriber.pubsub()
    rates: dict[str, float] = {}
    try:
        await redis.delete(key)
        started = time.perf_counter()
        for first in range(0, messages, pipeline):
            batch = redis.pipeline(transaction=False)
            for k in range(first, min(messages, first + pipeline)):
                batch.xadd(key, {"e": f'{{"cmd": {{"reply": {{"text": "message {k}"}}}}}}'},
                           maxlen=keep, approximate=True)
            await batch.execute()
        rates["XADD"] = messages / (time.perf_counter() - started)
        await redis.delete(key)
        for first in range(0, messages, 500):  # a stream to read, not trimmed this time
            batch = redis.pipeline(transaction=False)
            for k in range(first, min(messages, first + 500)):
                batch.xadd(key, {"e": f'{{"cmd": {{"reply": {{"text": "message {k}"}}}}}}'})
            await batch.execute()
        started, last, read = time.perf_counter(), "0-0", 0
        while read < messages:
            response = await redis.xread({key: last}, count=500)
            entries = response[0][1]
            read += len(entries)
            last = entries[-1][0]
        rates["XREAD"] = read / (time.perf_counter() - started)
        await redis.delete(key)
        await pubsub.subscribe("lesson11:bench")
        await pubsub.get_message(timeout=1)  # the subscription's confirmation
        received = 0

        async def drain() -> None:
            nonlocal received
            while received < messages:
                message = await pubsub.get_message(timeout=1)
                if message is not None and message["type"] == "message":
                    received += 1

        reader = asyncio.create_task(drain())
        started = time.perf_counter()
        for first in range(0, messages, pipeline):
            batch = redis.pipeline(transaction=False)
            for k in range(first, min(messages, first + pipeline)):
                batch.publish("lesson11:bench", f'{{"typing": "pedro", "k": {k}}}')
            await batch.execute()
        await asyncio.wait_for(reader, 30)
        rates["PUBLISH"] = messages / (time.perf_counter() - started)
    finally:
        await pubsub.aclose()
        await subscriber.aclose()
        await redis.aclose()
    return rates


def summary_ms(samples: list[float]) -> dict[str, float]:
    """Median and 99th percentile of a list of milliseconds."""
    ordered = sorted(samples)
    return {"p50": statistics.median(ordered), "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]}


async def votes_across_nodes(urls: list[str], *, votes_per_node: int = 30) -> dict[str, Any]:
    """One voter per node votes for the first band ``votes_per_node`` times, all at once; then
    every node's ``get-band-list`` (its own copy of the state) is read back."""
    voters = [await EventClient.connect(url, name=f"voter{k}") for k, url in enumerate(urls)]
    try:
        first = (await voters[0].request("get-band-list"))["bands"][0]
        before = first["votes"]

        async def vote(voter: EventClient) -> None:
            for _ in range(votes_per_node):
                await voter.request("vote-band", first["id"])

        await asyncio.gather(*(vote(voter) for voter in voters))
        copies = [await voter.request("get-band-list") for voter in voters]
    finally:
        for voter in voters:
            await voter.aclose()
    return {"band": first["name"], "votes_cast": votes_per_node * len(urls),
            "gained": [next(b["votes"] for b in c["bands"] if b["id"] == first["id"]) - before for c in copies],
            "same_everywhere": all(c == copies[0] for c in copies)}


async def desks_across_nodes(urls: list[str], *, tickets: int = 40, desks_per_node: int = 2) -> dict[str, Any]:
    """A kiosk on the first node takes ``tickets``; desks on every node call the next ticket
    at the same time until the queue is empty. Which desk got which number."""
    kiosk = await EventClient.connect(urls[0], name="kiosk")
    desks = [(f"node{n + 1}", await EventClient.connect(url, name=f"desk{n}-{d}"))
             for n, url in enumerate(urls) for d in range(desks_per_node)]
    served: dict[str, list[int]] = {}
    try:
        for _ in range(tickets):
            await kiosk.request("request-ticket")

        async def work(k: int, node: str, desk: EventClient) -> None:
            name = f"desk {k + 1} on {node}"
            served[name] = []
            while (ticket := await desk.request("next-desktop-ticket", {"agent": name, "desktop": k + 1})) is not None:
                served[name].append(ticket["number"])

        await asyncio.gather(*(work(k, node, desk) for k, (node, desk) in enumerate(desks)))
    finally:
        for client in (kiosk, *(desk for _node, desk in desks)):
            await client.aclose()
    numbers = sorted(n for got in served.values() for n in got)
    return {"served": served, "tickets": tickets, "given": len(numbers), "distinct": len(set(numbers))}
