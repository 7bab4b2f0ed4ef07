"""Simulated map users for lesson 07: dragging a marker along a path, and how far a watcher lags."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

from ..events import EventClient

Path = Callable[[float], tuple[float, float]]


def circle(center: tuple[float, float], radius: float, period_s: float) -> Path:
    """A path ``t -> (lng, lat)``: a circle around ``center`` every ``period_s`` seconds."""

    def at(t: float) -> tuple[float, float]:
        angle = 2 * math.pi * t / period_s
        return center[0] + radius * math.cos(angle), center[1] + radius * math.sin(angle)

    return at


async def drag(
    client: EventClient, marker_id: str, path: Path, *, seconds: float, input_hz: float = 120,
    throttle_s: float = 0.0,
) -> list[tuple[float, float, float]]:
    """Drag ``marker_id`` along ``path`` for ``seconds``, one pointer event every ``1/input_hz`` s.

    With ``throttle_s`` at most one ``update-marker`` leaves per ``throttle_s`` (the latest
    position wins, and the final position is always sent). Returns what was sent:
    ``(t, lng, lat)`` with ``t`` in ``time.perf_counter`` seconds.
    """
    sent: list[tuple[float, float, float]] = []
    start = time.perf_counter()
    step = 1 / input_hz
    # The throttle reads each pointer event's own timestamp (``tick * step``, like a browser's
    # ``event.timeStamp``), so event-loop jitter cannot make it skip a frame.
    last_sent = -math.inf
    tick = 0
    while (t := time.perf_counter() - start) < seconds:
        if tick * step - last_sent >= throttle_s - 1e-9:
            lng, lat = path(t)
            await client.emit("update-marker", {"id": marker_id, "lng": round(lng, 5), "lat": round(lat, 5)})
            sent.append((start + t, lng, lat))
            last_sent = tick * step
        tick += 1
        await asyncio.sleep(max(0.0, start + tick * step - time.perf_counter()))
    lng, lat = path(seconds)
    await client.emit("update-marker", {"id": marker_id, "lng": round(lng, 5), "lat": round(lat, 5)})
    sent.append((start + seconds, lng, lat))
    return sent


def lag_error(path: Path, start: float, seen: list[tuple[float, float, float]], seconds: float,
              sample_hz: float = 200) -> float:
    """Mean distance (degrees) between the true path and what a watcher shows, sampled in time.

    The watcher shows the last position it received (``seen``: ``(t, lng, lat)``, perf_counter
    times), so both the gaps between updates and their delivery delay count as error.
    """
    if not seen:
        return math.nan
    total, count, index = 0.0, 0, 0
    for k in range(int(seconds * sample_hz)):
        t = start + k / sample_hz
        while index + 1 < len(seen) and seen[index + 1][0] <= t:
            index += 1
        if seen[index][0] > t:
            continue
        lng, lat = path(t - start)
        total += math.hypot(seen[index][1] - lng, seen[index][2] - lat)
        count += 1
    return total / count if count else math.nan


async def drag_session(
    url: str, *, throttle_s: float, users: int = 3, seconds: float = 1.5, input_hz: float = 120
) -> dict[str, Any]:
    """``users`` simulated users each drag a marker around a circle at once; a watcher records.

    Returns, per user, its path, the path's time origin, what it sent and what the watcher
    received (``(t, lng, lat)`` in perf_counter seconds), for ``lag_error`` and plots.
    """
    paths = [circle((-120 + 120 * k, 20 - 20 * k), 25, period_s=seconds) for k in range(users)]
    watcher = await EventClient.connect(url, name="watcher")
    draggers = await asyncio.gather(*(EventClient.connect(url, name=f"user-{k}") for k in range(users)))
    try:
        await watcher.wait_for("active-marker")
        start = time.perf_counter()
        sent = await asyncio.gather(*(
            drag(client, f"user-{k}", path, seconds=seconds, input_hz=input_hz, throttle_s=throttle_s)
            for k, (client, path) in enumerate(zip(draggers, paths, strict=True))
        ))
        for k, moves in enumerate(sent):
            last = {"id": f"user-{k}", "lng": round(moves[-1][1], 5), "lat": round(moves[-1][2], 5)}
            await watcher.wait_for("update-marker", where=lambda m, last=last: m == last)
        seen: list[list[tuple[float, float, float]]] = [[] for _ in range(users)]
        for t, event, data in watcher.received:
            if event == "update-marker" and t >= start:
                seen[int(data["id"].removeprefix("user-"))].append((t, data["lng"], data["lat"]))
        # Each drag's clock starts at its first move: the time origin of its path.
        origins = [moves[0][0] for moves in sent]
        return {"origins": origins, "paths": paths, "sent": sent, "seen": seen, "seconds": seconds}
    finally:
        await asyncio.gather(watcher.aclose(), *(c.aclose() for c in draggers))


def session_summary(session: dict[str, Any]) -> dict[str, float]:
    """Updates per second per dragging user, and the watcher's mean lag error in degrees."""
    seconds = session["seconds"]
    rates = [len(moves) / seconds for moves in session["sent"]]
    errors = [
        lag_error(path, origin, seen, seconds)
        for path, origin, seen in zip(session["paths"], session["origins"], session["seen"], strict=True)
    ]
    return {"updates_per_s": sum(rates) / len(rates), "error_deg": sum(errors) / len(errors)}
