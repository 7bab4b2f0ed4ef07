"""Simulated voters for lesson 05: crowds that vote, full list vs deltas, what a client misses."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from ..apps.bands import INITIAL_BANDS, build
from ..events import EventClient


async def vote_crowd(
    url: str, *, voters: int = 20, votes_each: int = 10, pace_s: float = 0.0, seed: int = 0
) -> dict[str, int]:
    """``voters`` clients, each on its own socket, vote ``votes_each`` times at random, all at once.

    Returns how many votes each band id was sent, so a caller can check none was lost.
    ``pace_s`` spaces each voter's votes (a crowd the chart can follow) instead of a burst.
    """
    rng = random.Random(seed)
    clients = await asyncio.gather(*(EventClient.connect(url, name=f"voter-{i}") for i in range(voters)))
    try:
        bands = await clients[0].wait_for("band-list")
        before = sum(band["votes"] for band in bands)
        ids = [band["id"] for band in bands]
        weights = [rng.uniform(0.5, 3) for _ in ids]
        plans = [rng.choices(ids, weights, k=votes_each) for _ in clients]
        sent: dict[str, int] = dict.fromkeys(ids, 0)
        for plan in plans:
            for band_id in plan:
                sent[band_id] += 1

        async def run(client: EventClient, plan: list[str]) -> None:
            for band_id in plan:
                await client.emit("vote-band", band_id)
                if pace_s:
                    await asyncio.sleep(pace_s * rng.uniform(0.5, 1.5))

        await asyncio.gather(*(run(c, p) for c, p in zip(clients, plans, strict=True)))
        # The last voter's own broadcast arrives after all its votes were counted.
        total = before + sum(sent.values())
        await clients[0].wait_for("band-list", where=lambda bs: sum(b["votes"] for b in bs) >= total, timeout=10)
        return sent
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


async def bytes_per_vote(sizes: list[int], votes: int = 20) -> list[dict[str, float]]:
    """For each list size, the socket bytes one watcher receives per vote: full list vs delta.

    Each size gets a fresh server (not registered: it only lives for the measurement), one
    ``band-list`` watcher, one ``subscribe-deltas`` watcher and a voter.
    """
    rows = []
    for size in sizes:
        server = build(INITIAL_BANDS + tuple(f"Band number {k + 1}" for k in range(size - len(INITIAL_BANDS))))
        await server.start("127.0.0.1", 0)
        board = server.state
        clients: list[EventClient] = []
        try:
            full, delta, voter = clients[:] = await asyncio.gather(*(EventClient.connect(server.url) for _ in range(3)))
            await delta.request("subscribe-deltas")
            band_ids = [band["id"] for band in await full.wait_for("band-list")]
            full_start, delta_start = full.traffic.total.bytes_in, delta.traffic.total.bytes_in
            version = board.version + votes
            for k in range(votes):
                await voter.emit("vote-band", band_ids[k % len(band_ids)])
            await delta.wait_for("band-delta", where=lambda d, v=version: d["v"] == v)
            await full.wait_for("band-list", where=lambda bl, n=votes: sum(b["votes"] for b in bl) == n)
            rows.append({
                "bands": size,
                "full_bytes": (full.traffic.total.bytes_in - full_start) / votes,
                "delta_bytes": (delta.traffic.total.bytes_in - delta_start) / votes,
            })
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))
            await server.aclose()
    return rows


async def record_streams(url: str, changes: int = 30, seed: int = 1) -> dict[str, Any]:
    """Record what a full-list watcher and a delta watcher receive while a voter makes changes.

    Returns ``{"start", "full", "deltas", "final"}``: the snapshot the delta watcher began from,
    both streams (one entry per change) and the server's final list.
    """
    rng = random.Random(seed)
    full, delta, voter = await asyncio.gather(*(EventClient.connect(url) for _ in range(3)))
    try:
        snapshot = await delta.request("subscribe-deltas")
        await full.wait_for("band-list")
        skip = len(full.events("band-list"))
        ids = [band["id"] for band in snapshot["bands"]]
        for k in range(changes):
            if k % 10 == 5:
                await voter.emit("create-band", {"name": f"New band {k}"})
            else:
                await voter.emit("vote-band", rng.choice(ids))
        last = snapshot["version"] + changes
        await delta.wait_for("band-delta", where=lambda d: d["v"] == last)
        final = (await voter.request("get-band-list"))["bands"]
        await full.wait_for("band-list", where=lambda bl: bl == final)
        return {"start": snapshot["bands"], "full": full.events("band-list")[skip:],
                "deltas": delta.events("band-delta"), "final": final}
    finally:
        await asyncio.gather(full.aclose(), delta.aclose(), voter.aclose())


def votes_off(seen: list[dict[str, Any]], truth: list[dict[str, Any]]) -> int:
    """How wrong a client's list is: votes off per band, plus whole bands missing or extra."""
    mine = {b["id"]: b["votes"] for b in seen}
    real = {b["id"]: b["votes"] for b in truth}
    return sum(abs(mine.get(i, 0) - real.get(i, 0)) for i in mine.keys() | real.keys()) + len(mine.keys() ^ real.keys())
