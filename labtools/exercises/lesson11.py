"""Lesson 11 (scaling out): exercises and their solutions."""

from __future__ import annotations

from typing import Any

from .registry import call, exercise, not_a_function, number


def check_traffic(answer: Any) -> None:
    assert callable(answer), not_a_function(answer, "redis_entries(nodes, messages_per_second)")
    for nodes, rate in [(4, 1000), (1, 100), (2, 100), (10, 50), (3, 0)]:
        got = call(answer, nodes, rate)
        assert number(got), f"return a number of entries per second, not {got!r}"
        if rate and got == nodes * rate:
            raise AssertionError(f"redis_entries({nodes}, {rate}) = {got!r} is one short per message: either the "
                                 "write (XADD) is missing, or the read by the node the message came from; that "
                                 "node reads it back too, and answers its sender only once the log has applied it")
        if rate and got == 2 * rate and nodes != 1:
            raise AssertionError(f"redis_entries({nodes}, {rate}) = {got!r}: one write, but one read per node, "
                                 "not one read in all")
        assert abs(got - (nodes + 1) * rate) < 1e-9, (
            f"redis_entries({nodes}, {rate}) should be {(nodes + 1) * rate}, not {got!r}: each message is written "
            "once and read by every node, the one it came from included"
        )


@exercise("11.1", check_traffic)
def redis_entries(nodes: int, messages_per_second: float) -> float:
    # One XADD per message, then every node (its origin included) reads it once with XREAD.
    return messages_per_second * (1 + nodes)


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
