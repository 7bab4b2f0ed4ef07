"""Lesson 11 (scaling out): exercises and their solutions."""

from __future__ import annotations

from typing import Any

from .. import runtime
from ..events import EventClient
from ..serving import serve
from .registry import call, exercise, not_a_function, number


def check_traffic(answer: Any) -> None:
    assert callable(answer), not_a_function(answer, "redis_entries(nodes, messages_per_second, shards)")
    for nodes, rate, shards in [(4, 1000, 1), (1, 100, 1), (2, 100, 2), (10, 50, 5), (3, 0, 2)]:
        got = call(answer, nodes, rate, shards)
        assert number(got), f"return a number of entries per second, not {got!r}"
        expected = (nodes + 1) * rate / shards
        call_text = f"redis_entries({nodes}, {rate}, {shards}) = {got!r}"
        if rate and abs(got - nodes * rate / shards) < 1e-9:
            raise AssertionError(f"{call_text} is one short per message: either the write (XADD) is missing, or "
                                 "the read by the node the message came from; that node reads it back too, and "
                                 "answers its sender only once the log has applied it")
        if rate and nodes != 1 and abs(got - 2 * rate / shards) < 1e-9:
            raise AssertionError(f"{call_text}: one write, but one read per node, not one read in all")
        if rate and shards > 1 and abs(got - (nodes + 1) * rate) < 1e-9:
            raise AssertionError(f"{call_text}: that is every shard's traffic together; each of the {shards} "
                                 "Redis takes only the messages of its own rooms, an even share")
        if rate and shards > 1 and abs(got - (nodes + 1) * rate * shards) < 1e-9:
            raise AssertionError(f"{call_text}: shards split the messages between them, they do not copy them")
        assert abs(got - expected) < 1e-9, f"{call_text}: it should be {expected:g}"


@exercise("11.1", check_traffic)
def redis_entries(nodes: int, messages_per_second: float, shards: int) -> float:
    # One XADD per message, then every node (its origin included) reads it once with XREAD;
    # the rooms, and so the messages, spread evenly over the shards.
    return messages_per_second * (1 + nodes) / shards


CONNECTIONS = {"pedro": "node1", "ana": "node2", "luis": "node2", "marta": "node3", "kiosk": "node1"}


def check_resume(answer: Any) -> None:
    assert callable(answer), not_a_function(answer, "must_resume(connections, killed)")
    for killed, expected in [(0, {"pedro", "kiosk"}), (1, {"ana", "luis"}), (2, {"marta"})]:
        got = call(answer, dict(CONNECTIONS), killed)
        assert isinstance(got, (set, frozenset, list, tuple)), f"return a set of client names, not {got!r}"
        got = set(got)
        if got == set(CONNECTIONS):
            raise AssertionError(f"must_resume(..., {killed}) = everyone: the clients of the other nodes keep their "
                                 "sockets and miss nothing; only the killed node's clients lost theirs")
        off_by_one = {c for c, n in CONNECTIONS.items() if n == f"node{killed}"}
        if got == off_by_one and got != expected:
            raise AssertionError(f"kill({killed}) counts nodes from 0: it kills node{killed + 1}, not node{killed}")
        assert got == expected, f"must_resume(..., {killed}) should be {sorted(expected)}, not {sorted(got)}"


@exercise("11.2", check_resume)
def must_resume(connections: dict[str, str], killed: int) -> set[str]:
    # kill(i) counts from 0 and kills the node named node{i + 1}; only its clients lost their sockets.
    return {client for client, node in connections.items() if node == f"node{killed + 1}"}


# --- 11.3: the learner's own app on three nodes ------------------------------------------------

WITHIN = 10.0  # seconds for a note to cross, on a busy 2-core machine
NODES = 3


def node_urls(answer: Any) -> list[str]:
    """The URLs of the nodes a learner's answer names: a deployment's ``node_urls``, or a list of URLs."""
    urls = getattr(answer, "node_urls", answer)
    assert isinstance(urls, (list, tuple)) and all(isinstance(u, str) and u.startswith("http") for u in urls), (
        "answer should be your deployment (what lt.serve('_deploy/my_app.py:build', nodes=...) returned) or the "
        f"list of its nodes' URLs, not {answer!r}"[:300]
    )
    assert len(set(urls)) == len(urls), f"{list(urls)} names one node twice: give each node's own URL"
    assert len(urls) == NODES, f"{list(urls)} are {len(urls)} nodes: the exercise asks for {NODES}"
    return list(urls)


async def pinned_across(sender_url: str, reader_url: str, text: str) -> int:
    """``text`` pinned by a client of ``sender_url``; a client of ``reader_url`` must hear ``pinned``."""
    try:
        sender = await EventClient.connect(sender_url, name="checker-sender")
        reader = await EventClient.connect(reader_url, name="checker-reader")
    except OSError as error:
        raise AssertionError(f"could not open a socket to {sender_url} and {reader_url}: {error}. Are the "
                             "nodes running?") from None
    try:
        answer = await sender.request("pin", {"text": text}, timeout=WITHIN)
        assert isinstance(answer, dict) and isinstance(answer.get("count"), int), (
            f"'pin' should be acknowledged with {{'count': N}}, the notes on the wall, not {answer!r}")
        try:
            await reader.wait_for("pinned", WITHIN, where=lambda data: data.get("text") == text)
        except TimeoutError:
            raise AssertionError(
                f"a note pinned through {sender_url} never reached a client of {reader_url} within {WITHIN:g} s. "
                "Each node pushes only to its own sockets: do the nodes share one broker (nodes= in lt.serve, "
                "or the same --broker with its password in LABTOOLS_BROKER_PASSWORD)?") from None
        return answer["count"]
    finally:
        await sender.aclose()
        await reader.aclose()


async def pin(url: str, text: str) -> int:
    """Pin ``text`` through the node at ``url``; the count it acknowledges."""
    try:
        client = await EventClient.connect(url, name="checker")
    except OSError as error:
        raise AssertionError(f"could not open a socket to {url}: {error}. Is the node running?") from None
    try:
        answer = await client.request("pin", {"text": text}, timeout=WITHIN)
    finally:
        await client.aclose()
    assert isinstance(answer, dict) and isinstance(answer.get("count"), int), (
        f"'pin' should be acknowledged with {{'count': N}}, the notes on the wall, not {answer!r}")
    return answer["count"]


def check_three_nodes(answer: Any) -> None:
    urls = node_urls(answer)
    counts = [runtime.run(pin(url, f"counted by node {k + 1}")) for k, url in enumerate(urls)]
    assert counts == list(range(counts[0], counts[0] + len(urls))), (
        f"notes pinned one after another through each node were counted {counts}: one wall shared by every "
        "node counts one more each time, so these nodes keep walls of their own. Do they share one broker "
        "(nodes= in lt.serve, or the same --broker with its password in LABTOOLS_BROKER_PASSWORD), and does "
        "a note go through server.update (a change every node applies from the log)?")
    for k in range(len(urls)):
        runtime.run(pinned_across(urls[k], urls[(k + 1) % len(urls)], f"from node {k + 1}"))


@exercise("11.3", check_three_nodes, value=True, imports="from labtools.serving import serve")
def my_app_on_three_nodes() -> Any:
    deployment = serve("_deploy/my_app.py:build", nodes=3, name="lesson11-my-app-exercise")
    return deployment
