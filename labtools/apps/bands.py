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
the same changes to a client-side copy and compare. Handlers validate a frame and ask the
server for the change (``server.update``); the server applies it in one order on every node that
serves the app (one by default; lesson 11 runs several), so no vote is lost or counted twice.
A new band's id is drawn by the handler, before the change, so that every node gives it the
same one. Clients are in one of two rooms: ``lists`` (the default) or ``deltas``.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from typing import Any

from ..events import Client, EventServer, require

INITIAL_BANDS = ("Metallica", "Héroes del Silencio", "Bon Jovi", "Breaking Benjamin")
MAX_NAME = 60
MAX_BANDS = 500
LIST_ROOM = "lists"
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

    def add(self, name: str, band_id: str | None = None) -> Band:
        """Add a band as given, with no delta: set-up, and ``create`` once its id is drawn."""
        while band_id is None or band_id in self.bands:
            band_id = secrets.token_hex(4)
        band = self.bands[band_id] = Band(band_id, name)
        return band

    def as_list(self) -> list[dict[str, Any]]:
        """The ``band-list`` payload: ``[{"id", "name", "votes"}, ...]`` in creation order."""
        return [asdict(band) for band in self.bands.values()]

    def band(self, band_id: Any) -> Band:
        """The band of ``band_id``; ``invalid-data`` when there is none."""
        require(isinstance(band_id, str) and band_id in self.bands, "unknown band id")
        return self.bands[band_id]

    def _delta(self, op: str, **fields: Any) -> dict[str, Any]:
        self.version += 1
        return {"v": self.version, "op": op, **fields}

    def vote(self, band_id: Any) -> dict[str, Any]:
        band = self.band(band_id)
        band.votes += 1
        return self._delta("vote", id=band.id)

    def remove(self, band_id: Any) -> dict[str, Any]:
        band = self.band(band_id)
        del self.bands[band.id]
        return self._delta("remove", id=band.id)

    def rename(self, data: Any) -> dict[str, Any]:
        require(isinstance(data, dict), 'rename-band takes {"id": ID, "name": STR}')
        band = self.band(data.get("id"))
        band.name = clean_name(data.get("name"))
        return self._delta("rename", id=band.id, name=band.name)

    def create(self, data: Any) -> dict[str, Any]:
        require(isinstance(data, dict), 'create-band takes {"name": STR}')
        name = clean_name(data.get("name"))
        require(len(self.bands) < MAX_BANDS, f"the list is full ({MAX_BANDS} bands)")
        band_id = data.get("id")
        return self._delta("create", band=asdict(self.add(name, band_id if isinstance(band_id, str) else None)))

    def snapshot(self) -> dict[str, Any]:
        """``{"version", "bands"}``: what ``get-band-list`` answers, and what a node restores."""
        return {"version": self.version, "bands": self.as_list()}

    def restore(self, data: dict[str, Any]) -> None:
        self.version = data["version"]
        self.bands = {b["id"]: Band(**b) for b in data["bands"]}


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
    server = EventServer("bands", BandBoard(names), page="bands", recoverable=("band-list", "band-delta"))

    def announce(board: BandBoard, delta: dict[str, Any]) -> None:
        """The new list to list clients, the delta to delta clients."""
        server.broadcast("band-list", board.as_list(), to=LIST_ROOM)
        server.broadcast("band-delta", delta, to=DELTA_ROOM)

    @server.change
    def vote(board: BandBoard, band_id: str) -> None:
        announce(board, board.vote(band_id))

    @server.change
    def remove(board: BandBoard, band_id: str) -> None:
        announce(board, board.remove(band_id))

    @server.change
    def rename(board: BandBoard, change: dict[str, Any]) -> None:
        announce(board, board.rename(change))

    @server.change
    def create(board: BandBoard, band: dict[str, Any]) -> None:
        announce(board, board.create(band))

    @server.connected
    def join_lists(client: Client) -> None:
        client.join(LIST_ROOM)

    @server.welcome
    def send_list(client: Client) -> None:
        client.emit("band-list", server.state.as_list())

    def known(band_id: Any) -> str:
        """Refused at the edge when this node does not know the id (the change decides for the rest)."""
        return server.state.band(band_id).id

    @server.on("vote-band")
    async def vote_band(client: Client, data: Any) -> None:
        await server.update(vote, known(data), sender=client)

    @server.on("remove-band")
    async def remove_band(client: Client, data: Any) -> None:
        await server.update(remove, known(data), sender=client)

    @server.on("rename-band")
    async def rename_band(client: Client, data: Any) -> None:
        require(isinstance(data, dict), 'rename-band takes {"id": ID, "name": STR}')
        change = {"id": known(data.get("id")), "name": clean_name(data.get("name"))}
        await server.update(rename, change, sender=client)

    @server.on("create-band")
    async def create_band(client: Client, data: Any) -> None:
        require(isinstance(data, dict), 'create-band takes {"name": STR}')
        band = {"id": secrets.token_hex(4), "name": clean_name(data.get("name"))}
        await server.update(create, band, sender=client)

    @server.on("subscribe-deltas")
    def subscribe(client: Client, data: Any) -> dict[str, Any]:
        client.leave(LIST_ROOM)
        client.join(DELTA_ROOM)
        return server.state.snapshot()

    @server.on("get-band-list")
    def get_list(client: Client, data: Any) -> dict[str, Any]:
        return server.state.snapshot()

    return server
