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

import secrets
from dataclasses import asdict, dataclass
from typing import Any

from ..events import Client, EventServer
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
            self.add(name)

    def add(self, name: str) -> Band:
        """Add a band as given, with no delta: set-up only (clients go through ``create``)."""
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
        return self._delta("create", band=asdict(self.add(name)))


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


def build(names: tuple[str, ...] = INITIAL_BANDS) -> EventServer[BandBoard]:
    """The bands app on a board that starts with ``names`` (lesson 05 measures longer lists)."""
    board = BandBoard(names)
    server = EventServer("bands", board, page="bands")

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
