"""``labtools.sim.faults``: the TCP proxy's faults and the frame faults, on real sockets."""

from __future__ import annotations

import asyncio
import time

import pytest

import labtools as lt
from labtools import runtime
from labtools.events import EventClient
from labtools.sim.faults import FrameFaults, serve_proxy


@pytest.fixture(scope="module")
def chat() -> lt.ServerHandle:
    return lt.serve("minichat", name="faults-chat")


def say(text: str) -> tuple[str, dict]:
    return "msg-to-server", {"text": text}


async def roundtrip(client: EventClient, text: str, timeout: float = 3.0) -> float:
    start = time.monotonic()
    waiting = asyncio.ensure_future(client.next("msg-from-server", timeout, where=lambda d: d["text"] == text))
    await client.emit(*say(text))
    await waiting
    return time.monotonic() - start


def test_the_proxy_passes_and_counts_bytes(chat: lt.ServerHandle) -> None:
    proxy = serve_proxy(chat.url, name="proxy-pass")

    async def go() -> None:
        client = await EventClient.connect(proxy.url)
        await roundtrip(client, "hello")
        await client.aclose()

    runtime.run(go())
    stats = proxy.stats()
    assert stats["connections"] == 1 and stats["bytes up"] > 100 and stats["bytes down"] > 100


def test_delay_adds_its_milliseconds_each_way(chat: lt.ServerHandle) -> None:
    proxy = serve_proxy(chat.url, name="proxy-delay")

    async def go() -> tuple[float, float]:
        client = await EventClient.connect(proxy.url)
        fast = await roundtrip(client, "fast")
        proxy.delay(150)  # the sync API works on the loop thread too
        slow = await roundtrip(client, "slow")
        await client.aclose()
        return fast, slow

    fast, slow = runtime.run(go())
    assert fast < 0.1 and 0.3 <= slow < 1.0, (fast, slow)


def test_blackhole_holds_everything_without_closing_then_heals(chat: lt.ServerHandle) -> None:
    proxy = serve_proxy(chat.url, name="proxy-blackhole")

    async def go() -> None:
        client = await EventClient.connect(proxy.url)
        await roundtrip(client, "before")
        proxy.blackhole()
        with pytest.raises(TimeoutError):
            await roundtrip(client, "during", timeout=0.5)
        assert not client.closed  # no FIN, no RST: the peer just went silent
        proxy.passthrough()
        await client.wait_for("msg-from-server", 3, where=lambda d: d["text"] == "during")
        await client.aclose()

    runtime.run(go())


def test_cut_closes_one_connection_or_all(chat: lt.ServerHandle) -> None:
    proxy = serve_proxy(chat.url, name="proxy-cut")

    async def go() -> None:
        a = await EventClient.connect(proxy.url, name="a")
        b = await EventClient.connect(proxy.url, name="b")
        await roundtrip(a, "a")
        proxy.links[0].cut()
        for _ in range(50):
            if a.closed:
                break
            await asyncio.sleep(0.02)
        assert a.closed and not b.closed
        await roundtrip(b, "b still")
        proxy.cut(reset=True)
        for _ in range(100):
            if b.closed:
                break
            await asyncio.sleep(0.02)
        assert b.closed

    runtime.run(go())
    assert proxy.stats()["open"] == 0


def test_proxy_sync_api_from_a_cell(chat: lt.ServerHandle) -> None:
    proxy = serve_proxy(chat.url, name="proxy-sync")
    proxy.delay(10)
    proxy.blackhole()
    proxy.passthrough()
    proxy.cut()
    assert proxy.stats()["mode"] == "pass"
    runtime.run(proxy.aclose())


async def receive(chat_url: str, faults: FrameFaults, n: int, settle: float = 0.3) -> list[int]:
    """Send ``n`` numbered messages; return the numbers the faulty receiver got, in order."""
    sender = await EventClient.connect(chat_url, name="sender")
    receiver = await EventClient.connect(chat_url, name="receiver")
    await receiver.wait_for("position")  # where the stream stands, sent on connect: not a message
    faults.attach(receiver)
    for k in range(n):
        await sender.emit(*say(str(k)))
        await asyncio.sleep(0.002)
    await sender.wait_for("msg-from-server", 3, where=lambda d: d["text"] == str(n - 1))
    await asyncio.sleep(settle + faults.delay_ms / 1000 + faults.jitter_ms / 1000)
    faults.flush()
    await sender.aclose()
    await receiver.aclose()
    return [int(d["text"]) for d in receiver.events("msg-from-server")]


def test_drop_is_seeded_and_counted(chat: lt.ServerHandle) -> None:
    got = runtime.run(receive(chat.url, FrameFaults(drop=0.3, seed=1), 100))
    again = FrameFaults(drop=0.3, seed=1)
    runtime.run(receive(chat.url, again, 100))
    assert 15 <= 100 - len(got) <= 45
    assert again.counts["dropped"] == 100 - len(got)  # same seed, same losses
    assert got == sorted(got)


def test_duplicate_delivers_twice_and_the_client_drops_the_copy(chat: lt.ServerHandle) -> None:
    faults = FrameFaults(duplicate=1.0)
    got = runtime.run(receive(chat.url, faults, 20))
    assert faults.counts["duplicated"] == 20 and faults.counts["delivered"] == 40
    assert faults.client is not None and faults.client.duplicates == 20  # same offset: seen already
    assert got == list(range(20))


def test_reorder_swaps_neighbours_and_loses_nothing(chat: lt.ServerHandle) -> None:
    faults = FrameFaults(reorder=0.3, seed=3, only=lambda f: "event" in f)
    got = runtime.run(receive(chat.url, faults, 60))
    assert sorted(got) == list(range(60)) and got != sorted(got)
    assert faults.counts["reordered"] > 5


def test_delay_holds_each_frame(chat: lt.ServerHandle) -> None:
    async def go() -> float:
        sender = await EventClient.connect(chat.url)
        receiver = await EventClient.connect(chat.url)
        await receiver.wait_for("position")
        faults = FrameFaults(delay_ms=200).attach(receiver)
        waiting = asyncio.ensure_future(receiver.next("msg-from-server", 3))
        start = time.monotonic()
        await sender.emit(*say("late"))
        await waiting
        assert faults.counts["delayed"] == 1
        await sender.aclose()
        await receiver.aclose()
        return time.monotonic() - start

    assert 0.19 <= runtime.run(go()) < 0.6


def test_faults_compose_with_an_existing_intercept(chat: lt.ServerHandle) -> None:
    seen: list = []

    def keep_even(frame: dict) -> bool:
        seen.append(frame)
        return frame.get("event") != "msg-from-server" or int(frame["data"]["text"]) % 2 == 0

    async def go() -> list[int]:
        sender = await EventClient.connect(chat.url)
        receiver = await EventClient.connect(chat.url, intercept=keep_even)
        await receiver.wait_for("position")
        faults = FrameFaults(duplicate=1.0).attach(receiver)
        for k in range(6):
            await sender.emit(*say(str(k)))
        await sender.wait_for("msg-from-server", 3, where=lambda d: d["text"] == "5")
        await asyncio.sleep(0.2)
        assert faults.counts["seen"] == 3 and faults.counts["delivered"] == 6
        assert receiver.duplicates == 3  # each copy dropped by the client (same offset)
        await sender.aclose()
        await receiver.aclose()
        return [int(d["text"]) for d in receiver.events("msg-from-server")]

    assert runtime.run(go()) == [0, 2, 4]


def test_a_deaf_client_is_cut_at_the_client_buffer_bound() -> None:
    from labtools.events import EventServer
    from labtools.events.limits import Limits
    from labtools.sim.faults import deaf_client

    feed = lt.serve(lambda: EventServer("deaf-feed", limits=Limits(client_buffer=512 * 1024), keepalive=None),
                    name="deaf-feed")

    async def go() -> int:
        sock = await deaf_client(feed.url)
        try:
            await asyncio.sleep(0.05)
            assert len(feed.server.clients) == 1
            for _ in range(2000):
                feed.server.broadcast("tick", "x" * 4000)
                await asyncio.sleep(0)
                if not feed.server.clients:
                    break
            return feed.server.slow_clients_dropped
        finally:
            sock.close()

    assert runtime.run(go()) == 1
    feed.stop()
