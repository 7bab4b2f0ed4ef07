"""The chat's presence between nodes (issue 19): heartbeats carry a version, not the whole
online set; changes go as deltas; a node that lost a delta asks for the whole set again."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from labtools.apps.chat.cluster_presence import ClusterPresence


class FakePresence:
    def __init__(self) -> None:
        self.connections: dict[str, dict] = {}
        self.others: dict[str, frozenset[str]] = {}

    def online_on(self, node: str, online: frozenset[str]) -> None:
        if online:
            self.others[node] = online
        else:
            self.others.pop(node, None)


class Everyone:
    """Every uid is known (the directory has them all)."""

    def __contains__(self, uid: object) -> bool:
        return True


class FakeMailbox:
    cursor = 0

    def wake(self) -> None:
        pass


class Wire:
    """Pub/sub between fake nodes: what each posts reaches every other (unless dropped), as JSON."""

    def __init__(self) -> None:
        self.nodes: dict[str, ClusterPresence] = {}
        self.sizes: list[tuple[str, int]] = []
        self.drop: Callable[[dict[str, Any]], bool] = lambda message: False

    def bus(self, node: str) -> Any:
        wire = self

        class Bus:
            reaches_others = True

            def __init__(self) -> None:
                self.node = node

            def post(self, channel: str, message: dict[str, Any]) -> None:
                text = json.dumps({**message, "node": node})
                wire.sizes.append((node, len(text)))
                if wire.drop(message):
                    return
                for name, other in wire.nodes.items():
                    if name != node:
                        other._heard(json.loads(text))

        return Bus()

    def node(self, name: str) -> ClusterPresence:
        presence = ClusterPresence(FakePresence(), Everyone(), FakeMailbox(), heartbeat=2.0)  # type: ignore[arg-type]
        presence.bus = self.bus(name)
        self.nodes[name] = presence
        return presence


def test_heartbeats_carry_a_version_and_changes_travel_as_deltas() -> None:
    wire = Wire()
    a, b = wire.node("a"), wire.node("b")
    a.presence.connections = {f"user-{n:04}": {} for n in range(1000)}
    a.say(hello=True)
    assert b.presence.others["a"] == frozenset(a.presence.connections)
    wire.sizes.clear()
    a._post({})  # a heartbeat
    a.presence.connections["user-new"] = {}
    del a.presence.connections["user-0000"]
    a.announce_if_changed()
    assert b.presence.others["a"] == frozenset(a.presence.connections) and b.versions["a"] == a.version
    assert max(size for node, size in wire.sizes if node == "a") < 200  # not the 1,000 uids (~14 KB)


def test_a_node_that_lost_a_delta_asks_for_the_whole_set() -> None:
    wire = Wire()
    a, b = wire.node("a"), wire.node("b")
    a.presence.connections = {"ana": {}, "pedro": {}}
    a.say(hello=True)
    wire.drop = lambda message: "added" in message  # pub/sub loses this one
    a.presence.connections["dora"] = {}
    a.announce_if_changed()
    assert "dora" not in b.presence.others["a"]
    wire.drop = lambda message: False
    a._post({})  # the next heartbeat says a newer version: b asks, a answers with its whole set
    assert b.presence.others["a"] == frozenset({"ana", "pedro", "dora"}) and b.versions["a"] == a.version


def test_presence_messages_of_the_wrong_shape_change_nothing() -> None:
    wire = Wire()
    a, b = wire.node("a"), wire.node("b")
    a.presence.connections = {"ana": {}}
    a.say(hello=True)
    for junk in ({"node": "a", "version": "1", "online": []}, {"node": 3, "version": 1},
                 {"node": "a", "version": 9, "online": "ana"},
                 {"node": "a", "version": 9, "added": [1], "removed": []}):
        b._heard(junk)
    assert b.presence.others["a"] == frozenset({"ana"})
