"""Lesson 11's experiments on several nodes: readers that resume on another node after a crash,
bursts across nodes (the mini chat's and lesson 08's chat's), a node that
lags behind Redis (sticky sessions), and what one Redis carries.

The readers are the library's own reconnecting clients (``sim.reconnect.Reconnecting``, as a
learner would write one): each keeps the offset and epoch of the last push it got; when its
socket drops it waits 0-50 ms (jitter) and reconnects through the front door, to whichever node
is up, and emits ``resume`` with them. ``EventClient.resume`` holds back the live pushes the new
connection gets meanwhile and hands everything over in offset order once the node answers; a
push received twice (live and replayed) is dropped by its offset.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from typing import Any

import psutil
from redis.asyncio import Redis

from .. import runtime
from ..deploy import Deployment, FrontDoor, RedisServer
from ..deploy.deployment import node_arguments
from ..events import EventClient
from ..serving import DeploymentHandle
from ..sim.chat_users import ChatUser
from ..sim.faults import FaultyProxy
from ..sim.reconnect import Reconnecting


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


def node_of(client: EventClient) -> str | None:
    """The node that took this connection: the front door's ``X-Served-By`` on the upgrade."""
    return client.connection.response.headers.get("X-Served-By")


def reader(url: str, k: int, texts: list[str]) -> Reconnecting:
    """A mini-chat reader that reconnects (0-50 ms of jitter first) and resumes where it stood."""
    user = Reconnecting(url, name=f"reader{k}", base=0.05, cap=1.0, seed=k)
    user.on("msg-from-server", lambda data: texts.append(data["text"]))
    return user


async def kill_mid_conversation(deployment: Deployment, *, readers: int = 20, messages: int = 200,
                                kill_after: int = 100, interval: float = 0.005, victim: int = 1,
                                timeout: float = 10) -> dict[str, Any]:
    """Pedro writes on a node that survives; ``readers`` follow through the front door (round
    robin: some on each node). After ``kill_after`` messages node ``victim`` gets SIGKILL; its
    readers reconnect and resume. Returns what every reader showed and how it got there."""
    await all_nodes_up(deployment)
    survivor = deployment.node_urls[0 if victim != 0 else 1]
    shown: list[list[str]] = [[] for _ in range(readers)]
    users = [reader(deployment.url, k, shown[k]) for k in range(readers)]
    await asyncio.gather(*(user.start() for user in users))
    first_node = [node_of(user.client) for user in users]
    back_s: dict[int, float] = {}

    async def until_back(k: int, user: Reconnecting) -> None:
        """Seconds from this reader's socket closing to its resume answered (``connected`` again)."""
        await user.client.connection.wait_closed()
        dropped = time.perf_counter()
        await wait_until(lambda: user.connections > 1 and user.connected.is_set(), timeout, step=0.001)
        back_s[k] = time.perf_counter() - dropped

    watchers = [asyncio.create_task(until_back(k, user)) for k, user in enumerate(users)]
    pedro = await EventClient.connect(survivor, name="pedro")
    try:
        victim_name = f"node{victim + 1}"
        killed_at = 0.0
        for k in range(messages):
            if k == kill_after:
                killed_at = time.perf_counter()
                await asyncio.to_thread(deployment.kill, victim)
            await pedro.emit("msg-to-server", {"text": f"message {k}"})
            await asyncio.sleep(interval)
        await wait_until(lambda: all(len(texts) >= messages for texts in shown), timeout)
        caught_up = time.perf_counter()
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await pedro.aclose()
        await asyncio.gather(*(user.aclose() for user in users))
    expected = [f"message {k}" for k in range(messages)]
    resumed = [k for k, user in enumerate(users) if user.connections > 1]
    return {
        "readers": readers, "messages": messages, "kill_after": kill_after, "victim": victim_name,
        "before": dict(Counter(first_node)),
        "on_victim": first_node.count(victim_name),
        "resumed": len(resumed),
        "resumed_on": dict(Counter(node_of(users[k].client) for k in resumed)),
        "complete": sum(texts == expected for texts in shown),
        "shown": [len(texts) for texts in shown],
        "missed": [users[k].recovered for k in resumed],
        "back_s": [back_s[k] for k in resumed if k in back_s],
        "pushed_twice": sum(user.client.duplicates for user in users),
        "gaps": sum(user.gaps for user in users),
        "untouched_reconnected": sum(first_node[k] != victim_name for k in resumed),
        "caught_up_after_s": caught_up - killed_at,
    }


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


# ----- lesson 08's chat on two nodes ------------------------------------------------------------


async def sign_up_on(urls: dict[str, str]) -> dict[str, ChatUser]:
    """One new ``ChatUser`` per name, each signed up on its own node's address, all at once."""
    users = {name: ChatUser(name, seed=k) for k, name in enumerate(urls)}
    await asyncio.gather(*(users[name].sign_up(url) for name, url in urls.items()))
    return users


async def sees_online(user: ChatUser, names: list[str], timeout: float = 5.0) -> dict[str, bool]:
    """Wait until ``user`` sees every one of ``names`` online; who it sees, by name."""
    await user.wait_for_presence(lambda users: all(
        any(u["name"] == name and u["online"] for u in users) for name in names), timeout)
    return dict(sorted(user.online().items()))


async def typing_across(sender: ChatUser, receiver: ChatUser) -> tuple[dict[str, Any], float]:
    """``sender`` types to ``receiver``: what reached the receiver's socket, and after how many ms."""
    arrived = asyncio.ensure_future(receiver.socket.next("typing"))
    started = time.perf_counter()
    await sender.typing(receiver)
    data = await arrived
    return data, (time.perf_counter() - started) * 1000


async def chat_latency(sender: ChatUser, receiver: ChatUser, *, messages: int = 60,
                       interval: float = 0.012) -> list[float]:
    """Milliseconds from ``sender``'s ``personal-message`` to the push on ``receiver``'s socket,
    one message at a time (each waits for the previous one's arrival and acknowledgement), one
    every ``interval`` seconds at most: within the per-connection rate limit (lesson 10), so a
    cell run again at once is not refused."""
    samples = []
    next_at = time.perf_counter()
    for k in range(messages):
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        text = f"ping {k} from {sender.name}"
        arrived = asyncio.ensure_future(
            receiver.socket.next("personal-message", where=lambda m, t=text: m["message"] == t))
        started = time.perf_counter()
        next_at = started + interval
        await sender.send(receiver, text)
        await arrived
        received = next(at for at, message in reversed(receiver.inbox) if message["message"] == text)
        samples.append((received - started) * 1000)
    return samples


# ----- a node a moment behind -------------------------------------------------------------------


class LaggingDeployment(Deployment):
    """A deployment whose last node reaches Redis through a ``FaultyProxy`` that delays every
    byte each way: that node applies every entry a moment after the others (as a node far from
    Redis, or a busy one, would), and its own submissions take the slow link twice."""

    proxy: FaultyProxy

    async def aclose(self) -> None:
        await super().aclose()
        await self.proxy.aclose()


async def alagging(app: str, *, nodes: int = 2, delay_ms: float = 50, name: str) -> LaggingDeployment:
    """Start ``app`` on ``nodes`` nodes behind HAProxy; the last one's broker URL is the proxy's."""
    redis = await RedisServer.start()
    deployment = LaggingDeployment(name, app, "127.0.0.1", redis.url, redis)
    deployment.proxy = await FaultyProxy(redis.address).start()
    try:
        deployment.proxy.delay(delay_ms)
        slow_link = f"redis://{deployment.proxy.host}:{deployment.proxy.port}"
        brokers = [redis.address] * (nodes - 1) + [slow_link]  # the last node's Redis is the proxy
        deployment.node_arguments = [node_arguments(broker, f"node{k + 1}", {}) for k, broker in enumerate(brokers)]
        deployment.nodes = list(await asyncio.gather(*(deployment.start_node(k, 0) for k in range(nodes))))
        names_ports = [(f"node{k + 1}", node.port) for k, node in enumerate(deployment.nodes)]
        deployment.front_door = await FrontDoor.start(names_ports, secret=deployment.front_door_secret)
    except BaseException:
        await deployment.aclose()
        raise
    return deployment


def lagging(app: str, *, nodes: int = 2, delay_ms: float = 50, name: str) -> DeploymentHandle:
    """``alagging`` from a cell, registered as ``name`` (re-running the cell replaces it)."""

    async def make() -> LaggingDeployment:
        return await alagging(app, nodes=nodes, delay_ms=delay_ms, name=name)

    return DeploymentHandle(name, runtime.run(runtime.register(name, make)))
