"""PROTOCOL.md's frames: one UTF-8 JSON object per text frame, encoded and validated here.

| frame | shape |
| emit | {"event": NAME, "data": ANY} (+ "id": INT to ask for an acknowledgement) |
| the acknowledgement | {"ack": INT, "data": ANY} |
| a failed acknowledged request | {"ack": INT, "error": {"code": SLUG, "message": TEXT}} |
| an error about an unacknowledged frame | {"event": "error", "data": {"code", "message"}} |
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

#: The ids a frame may carry: what a signed 64-bit integer holds (and JavaScript's ``BigInt64Array``).
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
#: Longer numbers are refused as ``bad-json`` before ``int()`` converts them (its cost grows with
#: the square of the length); shorter ones are valid JSON, and each app checks its own ranges.
_INT_DIGITS = 64
#: A lone surrogate cannot be encoded as UTF-8; JSON lets one in through an escape (\ud800).
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class EventError(Exception):
    """A request the server refuses: sent back to the sender with a PROTOCOL.md code.

    ``retry_after`` (seconds) goes with ``rate-limited``: when the same frame would be accepted.
    """

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def as_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.retry_after is not None:
            # Rounded up to the millisecond: a client that waits that long is never refused again
            # for the same reason, and a wait of a few microseconds is not told as 0.
            data["retryAfter"] = math.ceil(self.retry_after * 1000) / 1000
        return data


def require(condition: bool, message: str, code: str = "invalid-data") -> None:
    """Refuse the current event with ``code`` unless ``condition`` holds (a handler's guard)."""
    if not condition:
        raise EventError(code, message)


@dataclass(frozen=True, slots=True)
class Emit:
    """An incoming emit: its event name, data, and acknowledgement id (None: none asked)."""

    event: str
    data: Any
    id: int | None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """``1e400`` parses as infinity, which no JSON encoder can send back: refuse it here."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    """Integers of more than ``_INT_DIGITS`` digits are refused before they are converted (a long
    one costs time). Shorter ones are valid JSON: each app checks its own ranges (``invalid-data``)."""
    if len(text) > _INT_DIGITS:
        raise ValueError("integer out of range")
    return int(text)


#: One decoder for every frame: ``json.loads`` with hooks builds a new one (and its scanner) per call.
_DECODER = json.JSONDecoder(parse_constant=_no_constants, parse_float=_finite_float, parse_int=_bounded_int)


def has_lone_surrogate(value: Any) -> bool:
    """Whether any string in ``value`` (keys included, at any depth) has a lone surrogate.

    Such a string parses but can never be encoded as UTF-8 again: stored by an app, it would
    break every later frame that includes it. Iterative, so deep nesting cannot overflow.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


#: One encoder for every frame: ``json.dumps`` with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def dumps(value: Any) -> str:
    """Compact JSON, as it goes on the wire (non-ASCII kept: frames are UTF-8)."""
    return _ENCODER.encode(value)


class Json(str):
    """Text that is JSON already, spliced into a frame as it is instead of encoded again: what a
    handler returns when it has encoded its answer for a push too (the chat's stored message:
    one encoding for the push to both sockets and for the sender's acknowledgement)."""

    __slots__ = ()


def encode_emit(event: str, data: Any = None, id: int | None = None) -> str:
    frame: dict[str, Any] = {"event": event, "data": data}
    if id is not None:
        frame["id"] = id
    return dumps(frame)


def encode_ack(id: int, data: Any = None) -> str:
    if type(data) is Json:
        return f'{{"ack":{id},"data":{data}}}'
    return dumps({"ack": id, "data": data})


def encode_failed_ack(id: int, error: EventError) -> str:
    return dumps({"ack": id, "error": error.as_data()})


def encode_error(error: EventError) -> str:
    return dumps({"event": "error", "data": error.as_data()})


def parse_json(text: str) -> Any:
    """``json.loads`` that refuses with ``bad-json``: NaN/Infinity, numbers that overflow to
    infinity (``1e400``), integers too long to convert cheaply, and nesting too deep to parse."""
    try:
        return _DECODER.decode(text)
    except (ValueError, RecursionError):
        raise EventError("bad-json", "the frame is not valid JSON") from None


def might_hold_surrogate(text: str) -> bool:
    """A cheap scan of the raw text: only frames that pass it need ``has_lone_surrogate``."""
    return bool(_SURROGATE_ESCAPE.search(text) or _SURROGATE.search(text))


#: Frames refused before parsing (rate limits) that are at most this long are parsed for their id.
PEEK_LIMIT = 4096
_TRAILING_ID = re.compile(r'[{,]\s*"id"\s*:\s*([0-9]{1,19})\s*}\s*$')


def peek_id(text: str) -> int | None:
    """The ``id`` of a frame refused before parsing, so that its answer is still a failed ack.

    A short frame is parsed (cheap); a long one is not: its id is read only when it is the
    last top-level key (``{..., "id": 7}``, as ``encode_emit`` and the pages write it), else the
    answer is an ``error`` event.
    """
    if len(text) <= PEEK_LIMIT:
        try:
            frame = parse_json(text)
        except EventError:
            return None
        id = frame.get("id") if isinstance(frame, dict) else None
        return id if type(id) is int and id >= 0 else None
    return trailing_id(text)


def trailing_id(text: str) -> int | None:
    """The ``id`` of a frame that could not be parsed, when it is the last top-level key."""
    match = _TRAILING_ID.search(text[-64:])
    id = int(match.group(1)) if match else None
    return id if id is not None and id <= INT_MAX else None


def decode_emit(text: str) -> tuple[Emit | None, EventError | None]:
    """Parse an incoming frame into an ``Emit``, or say what is wrong with it.

    An error keeps the ``id`` when one could be read, so that the answer can be the failed
    acknowledgement PROTOCOL.md asks for.
    """
    try:
        frame = parse_json(text)
    except EventError as error:
        id = trailing_id(text)
        return (Emit("", None, id) if id is not None else None), error
    if not isinstance(frame, dict):
        return None, EventError("bad-frame", 'a frame is a JSON object {"event": NAME, "data": ...}')
    id = frame.get("id")
    if id is not None and (type(id) is not int or not 0 <= id <= INT_MAX):
        return None, EventError("bad-frame", f"'id' must be an integer from 0 to {INT_MAX}")
    event = frame.get("event")
    if not isinstance(event, str) or not event:
        return Emit("", None, id), EventError("bad-frame", "the frame needs a string 'event'")
    if might_hold_surrogate(text) and has_lone_surrogate(frame):
        return Emit(event, None, id), EventError("invalid-data", "a string holds a lone surrogate (not UTF-8)")
    return Emit(event, frame.get("data"), id), None
