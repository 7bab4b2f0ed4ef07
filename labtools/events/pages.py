"""The files an event server's ``GET`` serves: the app's page folder, then the shared ``common/``.

``/`` is the folder's ``index.html``; ``/name.ext`` is a file of the folder, else the shared one
(``events.js``, ``status.js``, ``course.css``). One path segment only, known types only, no
dot files: nothing outside the two folders can be named.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}
NOT_FOUND = (404, "text/plain; charset=utf-8", b"not found\n")
#: What the front door asks every node, every half second: answered by the node's own event loop
#: (a paused or wedged node does not answer, and leaves the rotation), never by its broker (a
#: Redis outage must not take every node out at once). Not counted in the server's traffic.
HEALTH_PATH = "/healthz"
HEALTHY = (200, "text/plain; charset=utf-8", b"ok\n")


def static(path: str) -> bytes:
    """A file under ``labtools/static``."""
    return resources.files("labtools").joinpath("static", path).read_bytes()


def page_file(page: str | Path, filename: str) -> bytes:
    """A file of an app's page folder: a learner's own folder (a ``Path``), or one under ``labtools/static``."""
    if isinstance(page, Path):
        return (page / filename).read_bytes()
    return static(f"{page}/{filename}")


def serve_file(page: str | Path, path: str) -> tuple[int, str, bytes]:
    """``(status, content type, body)`` for ``GET path`` of an app whose page folder is ``page``."""
    filename = "index.html" if path == "/" else path[1:]
    suffix = "." + filename.rpartition(".")[2]
    if suffix not in CONTENT_TYPES or filename.startswith(".") or "/" in filename:
        return NOT_FOUND
    for folder in (page, "common"):
        try:
            return 200, CONTENT_TYPES[suffix], page_file(folder, filename)
        except (FileNotFoundError, IsADirectoryError):
            continue
    return NOT_FOUND
