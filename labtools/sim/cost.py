"""Cost models: what a transport costs the server as the number of users grows."""

from __future__ import annotations


def polling_cost(users: float, interval: float, bytes_per_poll: float) -> dict[str, float]:
    """What short polling costs the server, from three numbers.

    Every user asks once per ``interval`` whether or not anything happened, so the load grows
    with the number of users and not with the number of messages.
    """
    rps = users / interval
    return {
        "users": users,
        "requests/s": rps,
        "bytes/s": rps * bytes_per_poll,
        "requests/day": rps * 86_400,
        "GB/day": rps * bytes_per_poll * 86_400 / 1e9,
        "mean latency s": interval / 2,
    }
