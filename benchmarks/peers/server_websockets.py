"""The mini chat on bare ``websockets``: a handler task per connection and ``broadcast()``,
compression off. The same library as the course's servers, without the event layer."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

from websockets.asyncio.server import ServerConnection, broadcast, serve

CLIENTS: set[ServerConnection] = set()


def reply_to(message: str | bytes) -> str | None:
    """PROTOCOL.md's minichat: ``msg-to-server`` {"text"} -> ``msg-from-server`` to everyone."""
    try:
        frame = json.loads(message)
    except ValueError:
        return None
    data = frame.get("data") if isinstance(frame, dict) and frame.get("event") == "msg-to-server" else None
    if not isinstance(data, dict) or not isinstance(data.get("text"), str) or not data["text"].strip():
        return None
    reply = {"text": data["text"], "at": time.time()}
    if isinstance(data.get("sentAt"), int | float):
        reply["sentAt"] = data["sentAt"]
    return json.dumps({"event": "msg-from-server", "data": reply})


async def handler(websocket: ServerConnection) -> None:
    CLIENTS.add(websocket)
    try:
        async for message in websocket:
            out = reply_to(message)
            if out is not None:
                broadcast(CLIENTS, out)
    finally:
        CLIENTS.discard(websocket)


async def main() -> None:
    port = int(sys.argv[sys.argv.index("--port") + 1])
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(handler, "127.0.0.1", port, compression=None):
        print(f"http://127.0.0.1:{port}/", flush=True)
        await stop


if __name__ == "__main__":
    asyncio.run(main())
