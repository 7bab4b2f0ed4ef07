"""Simulated kiosks and desks for lesson 06: many desks calling the same queue at once."""

from __future__ import annotations

import asyncio
from typing import Any

from ..events import EventClient


async def desks_race(url: str, *, tickets: int = 200, desks: int = 20) -> dict[str, Any]:
    """A kiosk takes ``tickets`` tickets; ``desks`` desks then call them all at once.

    Returns the numbers issued and, per desk, the numbers it was given: every issued number
    must appear exactly once across the desks.
    """
    # One kiosk per 100 tickets keeps each socket under the server's per-client rate limit.
    kiosks = await asyncio.gather(*(EventClient.connect(url, name=f"kiosk-{k}") for k in range(tickets // 100 + 1)))
    agents = await asyncio.gather(*(EventClient.connect(url, name=f"desk-{d}") for d in range(1, desks + 1)))
    try:
        taken = await asyncio.gather(*(kiosks[i % len(kiosks)].request("request-ticket") for i in range(tickets)))
        issued = [t["number"] for t in taken]

        async def work(desk: int, client: EventClient) -> list[int]:
            got = []
            while (ticket := await client.request("next-desktop-ticket", {"agent": f"agent {desk}", "desktop": desk})):
                got.append(ticket["number"])
            return got

        calls = await asyncio.gather(*(work(d, c) for d, c in enumerate(agents, start=1)))
        return {"issued": issued, "by_desk": {d: got for d, got in enumerate(calls, start=1)}}
    finally:
        await asyncio.gather(*(c.aclose() for c in [*kiosks, *agents]))
