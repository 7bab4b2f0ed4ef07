"""My coat check (lesson 06, build it yourself): every request gets its answer back.

* ``check-coat`` ``{"coat": TEXT}`` (1 to 40 characters) is acknowledged with
  ``{"number": N}``: the number of the coat's hook, counting up from 1, never given twice;
* ``collect`` ``{"number": N}`` is acknowledged with ``{"coat": TEXT}``, the coat on that hook,
  which is then free; a number with no coat on it (never given, or collected already) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from labtools.events import Client, EventServer, require

MAX_COAT = 40


@dataclass
class Cloakroom:
    """The shared state: the last number given, and the coats on their hooks by number."""

    last_number: int = 0
    hooks: dict[int, str] = field(default_factory=dict)


def build() -> EventServer[Cloakroom]:
    server = EventServer("my-coat-check", Cloakroom())

    @server.change
    def hang(room: Cloakroom, coat: str) -> int:
        """Hang a coat on a new hook; its number is the answer."""
        room.last_number += 1  # one change at a time, in one order: no number is given twice
        room.hooks[room.last_number] = coat
        return room.last_number

    @server.change
    def hand_back(room: Cloakroom, number: int) -> str:
        """Take the coat off hook ``number``; refused when there is none."""
        require(number in room.hooks, f"no coat on hook {number}")
        return room.hooks.pop(number)

    @server.on("check-coat")
    async def check_coat(client: Client, data: Any) -> dict[str, int]:
        coat = data.get("coat") if isinstance(data, dict) else None
        require(isinstance(coat, str) and 0 < len(coat) <= MAX_COAT, f"'coat' is 1 to {MAX_COAT} characters")
        return {"number": await server.update(hang, coat, sender=client)}

    @server.on("collect")
    async def collect(client: Client, data: Any) -> dict[str, str]:
        number = data.get("number") if isinstance(data, dict) else None
        require(type(number) is int, "'number' is the int your coat's acknowledgement gave")
        return {"coat": await server.update(hand_back, number, sender=client)}

    return server
