"""The live map over real sockets: everyone but the sender, active-marker on connect, validation."""

from __future__ import annotations

import asyncio
import math
from itertools import pairwise
from typing import Any

import pytest
from deployments import deployment_fixture

import labtools as lt
from labtools.events import AckError, EventClient
from labtools.sim import markers

#: The contract, on one node, on two nodes, and on two nodes behind the front door.
server = deployment_fixture("map", "test-map")


def test_markers_reach_everyone_but_the_sender(server: lt.ServerHandle) -> None:
    async def scenario() -> None:
        ana, pedro, eva = await asyncio.gather(*(EventClient.connect(server.url, name=n) for n in ("a", "p", "e")))
        try:
            assert await ana.wait_for("active-marker") == {}
            marker = {"id": "m1", "lng": -3.7, "lat": 40.4}
            await ana.emit("new-marker", marker)
            assert await pedro.wait_for("new-marker") == marker
            assert await eva.wait_for("new-marker") == marker
            moved = {"id": "m1", "lng": 2.35, "lat": 48.86}
            await pedro.emit("update-marker", moved)
            assert await ana.wait_for("update-marker") == moved
            assert await eva.wait_for("update-marker") == moved
            # A round trip through ana proves she has seen everything sent before it.
            await ana.emit("update-marker", {"id": "probe", "lng": 0, "lat": 0})
            await pedro.wait_for("update-marker", where=lambda m: m["id"] == "probe")
            assert ana.events("new-marker") == [] and pedro.events("update-marker") == [
                {"id": "probe", "lng": 0, "lat": 0}
            ], "the sender never gets its own marker back"
            late = await EventClient.connect(server.url)
            try:
                everything = {"m1": moved, "probe": {"id": "probe", "lng": 0, "lat": 0}}
                assert await late.wait_for("active-marker") == everything
            finally:
                await late.aclose()
        finally:
            await asyncio.gather(ana.aclose(), pedro.aclose(), eva.aclose())

    lt.run(scenario())


BAD = [
    None,
    "m1",
    [1, 2],
    {"lng": 0, "lat": 0},
    {"id": "", "lng": 0, "lat": 0},
    {"id": 7, "lng": 0, "lat": 0},
    {"id": "x" * 65, "lng": 0, "lat": 0},
    {"id": "m", "lng": 180.01, "lat": 0},
    {"id": "m", "lng": -181, "lat": 0},
    {"id": "m", "lng": 0, "lat": 90.5},
    {"id": "m", "lng": 0, "lat": -91},
    {"id": "m", "lng": "0", "lat": 0},
    {"id": "m", "lng": True, "lat": 0},
    {"id": "m", "lng": 0},
]


@pytest.mark.parametrize("event", ["new-marker", "update-marker"])
@pytest.mark.parametrize("data", BAD, ids=[repr(d)[:30] for d in BAD])
def test_bad_marker_is_invalid_data_and_changes_nothing(server: lt.ServerHandle, event: str, data: Any) -> None:
    async def scenario() -> None:
        sender, watcher = await asyncio.gather(EventClient.connect(server.url), EventClient.connect(server.url))
        try:
            await watcher.wait_for("active-marker")
            with pytest.raises(AckError) as failure:
                await sender.request(event, data)
            assert failure.value.code == "invalid-data"
            await sender.emit(event, data)
            assert (await sender.next("error"))["code"] == "invalid-data"
            good = {"id": "ok", "lng": 180, "lat": -90}  # the edges are valid
            await sender.emit(event, good)
            assert await watcher.wait_for(event) == good, "the first thing the watcher sees is the good marker"
            assert not watcher.errors
        finally:
            await asyncio.gather(sender.aclose(), watcher.aclose())

    lt.run(scenario())
    assert server.read(lambda markers: markers.as_dict()) == {"ok": {"id": "ok", "lng": 180, "lat": -90}}


def test_throttled_drag_sends_fewer_updates_and_ends_in_place(server: lt.ServerHandle) -> None:
    path = markers.circle((0, 0), 20, 1.0)

    async def scenario(throttle_s: float) -> tuple[list, list]:
        dragger, watcher = await asyncio.gather(EventClient.connect(server.url), EventClient.connect(server.url))
        try:
            sent = await markers.drag(dragger, "d", path, seconds=0.5, input_hz=120, throttle_s=throttle_s)
            final = {"id": "d", "lng": round(sent[-1][1], 5), "lat": round(sent[-1][2], 5)}
            await watcher.wait_for("update-marker", where=lambda m: m == final)
            return sent, watcher.events("update-marker")
        finally:
            await asyncio.gather(dragger.aclose(), watcher.aclose())

    raw_sent, raw_seen = lt.run(scenario(0.0))
    slow_sent, slow_seen = lt.run(scenario(0.05))
    assert len(raw_seen) == len(raw_sent) and len(slow_seen) == len(slow_sent)
    assert 40 <= len(raw_sent) <= 70 and 9 <= len(slow_sent) <= 13
    gaps = [b[0] - a[0] for a, b in pairwise(slow_sent[:-1])]
    assert min(gaps) >= 0.04  # 50 ms of pointer-event time, give or take the loop's jitter
    assert math.isclose(slow_sent[-1][1], path(0.5)[0]) and math.isclose(slow_sent[-1][2], path(0.5)[1])


def test_lag_error_is_zero_for_a_perfect_watcher() -> None:
    path = markers.circle((10, 10), 5, 2.0)
    seen = [(k / 1000, *path(k / 1000)) for k in range(1001)]
    assert markers.lag_error(path, 0.0, seen, 1.0) < 0.02
    stale = [(0.0, *path(0.0))]
    assert markers.lag_error(path, 0.0, stale, 1.0) > 3
