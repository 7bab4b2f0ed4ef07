"""Band votes (PROTOCOL.md ``bands``): one shared list that every client sees change live.

The original course answers every change with the whole list (``band-list``): simple, and a
client that missed an update is right again after the next one. Lesson 05 measures that choice
against sending only the change, so the server also speaks an opt-in extension:

* ``subscribe-deltas`` (acknowledged with ``{"version", "bands"}``): from then on this client
  gets ``band-delta`` ``{"v": VERSION, "op": "vote"|"rename"|"remove"|"create", ...}`` instead
  of ``band-list``;
* ``get-band-list`` (acknowledged with ``{"version", "bands"}``): the full list on demand, which
  is how a delta client that sees a gap in ``v`` heals itself.

State (``BandBoard``) is kept apart from the transport (``build``) so that the lesson can apply
the same changes to a client-side copy and compare.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from ..events import Client, EventClient, EventServer
from ..events.server import require

INITIAL_BANDS = ("Metallica", "Héroes del Silencio", "Bon Jovi", "Breaking Benjamin")
MAX_NAME = 60
MAX_BANDS = 500
DELTA_ROOM = "deltas"


@dataclass
class Band:
    id: str
    name: str
    votes: int = 0


class BandBoard:
    """The server's list of bands; every method returns the delta it caused."""

    def __init__(self, names: tuple[str, ...] = INITIAL_BANDS) -> None:
        self.bands: dict[str, Band] = {}
        self.version = 0
        for name in names:
            self._add(name)

    def _add(self, name: str) -> Band:
        band_id = secrets.token_hex(4)
        while band_id in self.bands:
            band_id = secrets.token_hex(4)
        band = self.bands[band_id] = Band(band_id, name)
        return band

    def as_list(self) -> list[dict[str, Any]]:
        """The ``band-list`` payload: ``[{"id", "name", "votes"}, ...]`` in creation order."""
        return [asdict(band) for band in self.bands.values()]

    def snapshot(self) -> dict[str, Any]:
        return {"version": self.version, "bands": self.as_list()}

    def _band(self, band_id: Any) -> Band:
        require(isinstance(band_id, str) and band_id in self.bands, "unknown band id")
        return self.bands[band_id]

    def _delta(self, op: str, **fields: Any) -> dict[str, Any]:
        self.version += 1
        return {"v": self.version, "op": op, **fields}

    def vote(self, band_id: Any) -> dict[str, Any]:
        band = self._band(band_id)
        band.votes += 1
        return self._delta("vote", id=band.id)

    def remove(self, band_id: Any) -> dict[str, Any]:
        band = self._band(band_id)
        del self.bands[band.id]
        return self._delta("remove", id=band.id)

    def rename(self, data: Any) -> dict[str, Any]:
        require(isinstance(data, dict), 'rename-band takes {"id": ID, "name": STR}')
        band = self._band(data.get("id"))
        band.name = clean_name(data.get("name"))
        return self._delta("rename", id=band.id, name=band.name)

    def create(self, data: Any) -> dict[str, Any]:
        require(isinstance(data, dict), 'create-band takes {"name": STR}')
        name = clean_name(data.get("name"))
        require(len(self.bands) < MAX_BANDS, f"the list is full ({MAX_BANDS} bands)")
        return self._delta("create", band=asdict(self._add(name)))


def clean_name(name: Any) -> str:
    """A band name: a string, stripped, 1 to ``MAX_NAME`` characters."""
    require(isinstance(name, str) and 0 < len(name.strip()) <= MAX_NAME,
            f"a band name is a non-empty string of at most {MAX_NAME} characters")
    return name.strip()


def apply_delta(bands: list[dict[str, Any]], delta: dict[str, Any]) -> list[dict[str, Any]]:
    """What a delta client does with a ``band-delta``: a new list, the old one untouched."""
    op = delta["op"]
    if op == "create":
        return [*bands, dict(delta["band"])]
    if op == "remove":
        return [b for b in bands if b["id"] != delta["id"]]
    changed = {"vote": lambda b: {**b, "votes": b["votes"] + 1}, "rename": lambda b: {**b, "name": delta["name"]}}[op]
    return [changed(b) if b["id"] == delta["id"] else b for b in bands]


def build() -> EventServer:
    server = EventServer("bands", page="bands")
    board = BandBoard()
    server.state = board  # type: ignore[attr-defined]  # for the lesson to look at

    def publish(delta: dict[str, Any]) -> None:
        full = [c for c in server.clients.values() if DELTA_ROOM not in c.rooms]
        server.broadcast("band-list", board.as_list(), to=full)
        server.broadcast("band-delta", delta, to=DELTA_ROOM)

    @server.connected
    def welcome(client: Client) -> None:
        client.emit("band-list", board.as_list())

    @server.on("vote-band")
    def vote(client: Client, data: Any) -> None:
        publish(board.vote(data))

    @server.on("remove-band")
    def remove(client: Client, data: Any) -> None:
        publish(board.remove(data))

    @server.on("rename-band")
    def rename(client: Client, data: Any) -> None:
        publish(board.rename(data))

    @server.on("create-band")
    def create(client: Client, data: Any) -> None:
        publish(board.create(data))

    @server.on("subscribe-deltas")
    def subscribe(client: Client, data: Any) -> dict[str, Any]:
        client.join(DELTA_ROOM)
        return board.snapshot()

    @server.on("get-band-list")
    def get_list(client: Client, data: Any) -> dict[str, Any]:
        return board.snapshot()

    return server


async def start(host: str = "127.0.0.1", port: int = 0) -> EventServer:
    server = build()
    await server.start(host, port)
    return server


# ----- simulated clients ---------------------------------------------------------------------


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
        server = await start()
        clients: list[EventClient] = []
        try:
            board: BandBoard = server.state  # type: ignore[attr-defined]
            for k in range(size - len(board.bands)):
                board._add(f"Band number {k + 1}")
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
