"""Server-Sent Events on the client side, free of I/O: bytes in, ``(id, event, data)`` out."""

from __future__ import annotations


class SseParser:
    """Incremental ``text/event-stream`` parser: feed bytes, get ``(id, event, data)`` events."""

    def __init__(self) -> None:
        self._buf = b""
        self._cr = b""  # a trailing "\r" whose "\n" may come in the next chunk
        self.last_id: str | None = None

    def feed(self, data: bytes) -> list[tuple[str | None, str, str]]:
        data = self._cr + data
        self._cr = b"\r" if data.endswith(b"\r") else b""
        if self._cr:
            data = data[:-1]
        self._buf += data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events = []
        while True:
            end = self._buf.find(b"\n\n")
            if end < 0:
                return events
            block, self._buf = self._buf[:end].decode(), self._buf[end + 2 :]
            event, data_lines, event_id = "message", [], None
            for line in block.split("\n"):
                if not line or line.startswith(":"):
                    continue  # a comment (": connected", ": heartbeat")
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "id":
                    event_id = value
                elif name == "event":
                    event = value
                elif name == "data":
                    data_lines.append(value)
            if event_id is not None:
                self.last_id = event_id
            if data_lines:
                events.append((event_id, event, "\n".join(data_lines)))
