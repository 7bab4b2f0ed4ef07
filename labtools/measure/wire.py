"""Counting bytes as they cross the socket, headers and framing included.

A server's own idea of "the response body" hides what polling really costs: every answer
also carries a status line and headers. So labtools counts at the transport: each server
protocol reports what ``data_received`` got, and writes go through ``CountingTransport``.
The same meters serve the HTTP server (aiohttp) and the WebSocket apps (websockets).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any


class ByteMeter:
    """Running totals of one connection's inbound and outbound bytes."""

    __slots__ = ("bytes_in", "bytes_out", "on_in", "on_out")

    def __init__(
        self,
        on_in: Callable[[int], None] | None = None,
        on_out: Callable[[int], None] | None = None,
    ) -> None:
        self.bytes_in = 0
        self.bytes_out = 0
        self.on_in = on_in
        self.on_out = on_out

    def inbound(self, n: int) -> None:
        self.bytes_in += n
        if self.on_in is not None:
            self.on_in(n)

    def outbound(self, n: int) -> None:
        self.bytes_out += n
        if self.on_out is not None:
            self.on_out(n)


class CountingTransport:
    """A transport proxy that meters every byte written, then hands it to the real transport."""

    __slots__ = ("_transport", "_meter")

    def __init__(self, transport: asyncio.BaseTransport, meter: ByteMeter) -> None:
        self._transport = transport
        self._meter = meter

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._meter.outbound(len(data))
        self._transport.write(data)  # type: ignore[attr-defined]

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        data = b"".join(chunks)
        self._meter.outbound(len(data))
        self._transport.write(data)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
