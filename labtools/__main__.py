"""``python -m labtools serve APP [--host H] [--port N] [--db PATH] [--broker URL] [--node NAME]`` (PROTOCOL.md)."""

from .cli import main

raise SystemExit(main())
