"""What per-message deflate would cost the event layer: bytes, CPU and memory, measured.

The servers run with compression off. With it on (the websockets and browser default), each
connection keeps its own deflate context, so a broadcast to C clients compresses the same
message C times and holds C compressors in memory; the bytes saved on a short chat message are
few. ``compare`` measures both sides with websockets' own framing code, without a network, so
the numbers are the server's work per delivered message and nothing else.
"""

from __future__ import annotations

import json
import random
import time
import tracemalloc
from typing import Any

from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

WORDS = [
    "hola", "ana", "pedro", "how", "are", "you", "the", "meeting", "moved", "to", "three", "see", "at",
    "station", "bring", "slides", "coffee", "later", "sounds", "good", "thanks", "on", "my", "way", "late",
]


def chat_messages(count: int, seed: int = 4) -> list[bytes]:
    """``msg-from-server`` frames like the mini chat's: short texts, a name, a timestamp."""
    rng = random.Random(seed)
    messages = []
    for i in range(count):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14)))
        data = {"text": text, "at": 1_760_000_000 + i * 0.731, "name": rng.choice(["Pedro", "Ana", "Luis"])}
        messages.append(json.dumps({"event": "msg-from-server", "data": data}, separators=(",", ":")).encode())
    return messages


def _deflate() -> PerMessageDeflate:
    """The context websockets negotiates by default with a browser (server window 12 bits, memLevel 5)."""
    return PerMessageDeflate(False, False, 15, 12, {"memLevel": 5})


def compare(clients: int = 200, messages: int = 100) -> list[dict[str, Any]]:
    """Frame ``messages`` chat messages for ``clients`` connections, deflate off and on.

    Returns one row per setting: bytes per delivered frame, server CPU µs per delivered frame
    (this thread's CPU time, so the labtools loop's other work is not counted) and KB held per
    connection by its compressor (tracemalloc; zlib allocates through Python's allocator).
    """
    payloads = chat_messages(messages)
    rows = []
    for setting in ("off", "on"):
        tracemalloc.start()
        contexts = [_deflate() for _ in range(clients)] if setting == "on" else None
        sizes = 0
        started = time.thread_time()
        for payload in payloads:
            if contexts is None:
                frame = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
                sizes += len(frame) * clients  # encoded once, the same bytes written to everyone
            else:
                for context in contexts:  # one compressor per connection: encoded C times
                    sizes += len(Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[context]))
        cpu = time.thread_time() - started
        held, _peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        deliveries = clients * len(payloads)
        rows.append(
            {
                "compression": setting,
                "bytes/message": sizes / deliveries,
                "µs CPU/message": cpu / deliveries * 1e6,
                "KB/connection": held / clients / 1024 if contexts is not None else 0.0,
            }
        )
        del contexts
    return rows
