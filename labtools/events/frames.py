"""PROTOCOL.md's frames: one UTF-8 JSON object per text frame, encoded and validated here.

| frame | shape |
| emit | {"event": NAME, "data": ANY} (+ "id": INT to ask for an acknowledgement) |
| the acknowledgement | {"ack": INT, "data": ANY} |
| a failed acknowledged request | {"ack": INT, "error": {"code": SLUG, "message": TEXT}} |
| an error about an unacknowledged frame | {"event": "error", "data": {"code", "message"}} |
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class EventError(Exception):
    """A request the server refuses: sent back to the sender with a PROTOCOL.md code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def as_data(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class Emit:
    """An incoming emit: its event name, data, and acknowledgement id (None: none asked)."""

    event: str
    data: Any
    id: int | None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def dumps(value: Any) -> str:
    """Compact JSON, as it goes on the wire (non-ASCII kept: frames are UTF-8)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_emit(event: str, data: Any = None, id: int | None = None) -> str:
    frame: dict[str, Any] = {"event": event, "data": data}
    if id is not None:
        frame["id"] = id
    return dumps(frame)


def encode_ack(id: int, data: Any = None) -> str:
    return dumps({"ack": id, "data": data})


def encode_failed_ack(id: int, error: EventError) -> str:
    return dumps({"ack": id, "error": error.as_data()})


def encode_error(error: EventError) -> str:
    return dumps({"event": "error", "data": error.as_data()})


def parse_json(text: str) -> Any:
    """``json.loads`` that refuses NaN/Infinity and too-deep nesting with ``bad-json``."""
    try:
        return json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        raise EventError("bad-json", "the frame is not valid JSON") from None


def decode_emit(text: str) -> tuple[Emit | None, EventError | None]:
    """Parse an incoming frame into an ``Emit``, or say what is wrong with it.

    An error keeps the ``id`` when one could be read, so that the answer can be the failed
    acknowledgement PROTOCOL.md asks for.
    """
    try:
        frame = parse_json(text)
    except EventError as error:
        return None, error
    if not isinstance(frame, dict):
        return None, EventError("bad-frame", 'a frame is a JSON object {"event": NAME, "data": ...}')
    id = frame.get("id")
    if id is not None and (type(id) is not int or id < 0):
        return None, EventError("bad-frame", "'id' must be a non-negative integer")
    event = frame.get("event")
    if not isinstance(event, str) or not event:
        return Emit("", None, id), EventError("bad-frame", "the frame needs a string 'event'")
    return Emit(event, frame.get("data"), id), None
