"""The live map (PROTOCOL.md ``map``): broadcast to everyone but the sender.

The client that drags a marker already shows where it is; echoing its own updates back would
cost bandwidth and make the marker jitter under the pointer. So ``new-marker`` and
``update-marker`` go to every other client (``broadcast(..., exclude=client)``), and a newcomer
gets the whole map once, as ``active-marker``, when it connects.

Every placement is a change of the server (``place``) so that the nodes serving the map (one by
default; several in lesson 11) hold the same markers; each node then pushes it to its own
clients, the sender excepted. The simulated draggers of lesson 07 live in ``sim.markers``.
"""

from __future__ import annotations

from typing import Any

from ..events import Client, EventServer, require

MAX_ID = 64
MAX_MARKERS = 5000


def marker_of(data: Any) -> dict[str, Any]:
    """Validate ``{"id": STR, "lng": NUM, "lat": NUM}``; extra fields are dropped."""
    require(isinstance(data, dict), 'a marker is {"id": STR, "lng": NUM, "lat": NUM}')
    marker_id, lng, lat = data.get("id"), data.get("lng"), data.get("lat")
    require(isinstance(marker_id, str) and 0 < len(marker_id) <= MAX_ID,
            f"'id' is a non-empty string of at most {MAX_ID} characters")

    def number(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    require(number(lng) and -180 <= lng <= 180, "'lng' is a number in [-180, 180]")
    require(number(lat) and -90 <= lat <= 90, "'lat' is a number in [-90, 90]")
    return {"id": marker_id, "lng": lng, "lat": lat}


class MarkerMap:
    """Every marker on the map by id, at most ``MAX_MARKERS`` of them."""

    def __init__(self) -> None:
        self.markers: dict[str, dict[str, Any]] = {}

    def put(self, data: Any) -> dict[str, Any]:
        """Validate ``data`` and place (or move) its marker; returns the marker as stored."""
        marker = marker_of(data)
        require(marker["id"] in self.markers or len(self.markers) < MAX_MARKERS,
                f"the map is full ({MAX_MARKERS} markers)")
        self.markers[marker["id"]] = marker
        return marker

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """The ``active-marker`` payload: ``{id: marker}``."""
        return self.markers

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return dict(self.markers)

    def restore(self, data: dict[str, dict[str, Any]]) -> None:
        self.markers = dict(data)


def build() -> EventServer[MarkerMap]:
    """The live map, not started."""
    server = EventServer("map", MarkerMap(), page="map", recoverable=("new-marker", "update-marker", "active-marker"))

    @server.change
    def place(markers: MarkerMap, change: dict[str, Any], sender: Client | None) -> None:
        """Place the marker; push it, under the event it came with, to all but its sender."""
        server.broadcast(change["event"], markers.put(change["marker"]), exclude=sender)

    @server.welcome
    def send_map(client: Client) -> None:
        client.emit("active-marker", server.state.as_dict())

    @server.on("new-marker")
    async def new_marker(client: Client, data: Any) -> None:
        await server.update(place, {"event": "new-marker", "marker": marker_of(data)}, sender=client)

    @server.on("update-marker")
    async def update_marker(client: Client, data: Any) -> None:
        await server.update(place, {"event": "update-marker", "marker": marker_of(data)}, sender=client)

    return server
