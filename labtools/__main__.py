"""``python -m labtools serve APP [--host H] [--port N] [--db PATH]`` (PROTOCOL.md)."""

from .cli import main

raise SystemExit(main())
