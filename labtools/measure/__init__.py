"""Measurement: counters and statistics (``metrics``), bytes counted at the socket (``wire``),
and those bytes attributed to each route of an aiohttp server (``metered_http``)."""
