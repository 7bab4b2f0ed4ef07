"""Lesson 03's WebSocket, made by hand: ``codec`` (frames) and ``handshake`` (the HTTP upgrade)
are free of I/O; ``connection`` (the client side, on asyncio streams) and ``server`` add it."""
