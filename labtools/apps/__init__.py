"""The course's WebSocket apps, each an ``EventServer`` with PROTOCOL.md's events."""
